"""Next-identifier accuracy: does the model write the right name where the cursor needs one?

Exact match of whole lines stays near zero for a small model long after it has learned which names go
where; this metric shows that progress. Identifiers are the words ``[A-Za-z_][A-Za-z0-9_]*`` of a line
(regex, so names inside strings count too: cheap, and the same rule for tasks and baseline); Python
keywords are never answers.

Two task modes, both drawn from held-out files (``make_ident_tasks``):

- ``inside``: the cursor sits inside an identifier (at least one character typed, at least one left);
  the identifier written is the typed part plus the word characters the completion starts with.
- ``after``: the cursor sits right after an identifier (or keyword) that another identifier follows on
  the same line (``self|.value``, ``import| os``); the identifier written is the first word of the
  completion's first line.

In both the middle is the rest of the line (line mode, as the server asks mid-line), so the same tasks
also give exact match and edit similarity.

Frequency baseline (``IdentifierStats``), fitted on the training files: for ``inside`` the most frequent
training identifier that starts with the typed part; for ``after`` the identifier that most often follows
the one before the cursor on a line; either falls back to the most frequent identifier overall.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dg_lsp.training.evaluate import Task

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_TAIL = re.compile(r"[A-Za-z0-9_]*$")
_WORD_HEAD = re.compile(r"[A-Za-z0-9_]*")
MODES = ("inside", "after")


def is_answer(word: str) -> bool:
    return not keyword.iskeyword(word)


def make_ident_tasks(files: list[tuple[str, str]], n: int, seed: int = 0) -> list[Task]:
    """files: (relative path, text). ``n`` tasks, half per mode where there are enough, deterministic."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[tuple[str, str, int, int, str]]] = {m: [] for m in MODES}  # (rel, text, cursor, eol, answer)
    for rel, text in files:
        offset = 0
        for line in text.splitlines(keepends=True):
            body = line.rstrip("\r\n")
            if not body.lstrip().startswith("#"):
                words = list(IDENT.finditer(body))
                for j, m in enumerate(words):
                    if not is_answer(m.group()):
                        continue
                    if len(m.group()) >= 2:
                        pools["inside"].append((rel, text, offset + m.start(), offset + len(body), m.group()))
                    if j > 0:
                        pools["after"].append((rel, text, offset + words[j - 1].end(), offset + len(body), m.group()))
            offset += len(line)
    tasks = []
    for k, mode in enumerate(MODES):
        pool = pools[mode]
        want = min(len(pool), n // 2 + (n % 2 if k == 0 else 0))
        for idx in sorted(rng.choice(len(pool), size=want, replace=False)) if want else []:
            rel, text, cursor, eol, answer = pool[idx]
            if mode == "inside":
                cursor += int(rng.integers(1, len(answer)))
            tasks.append(Task(rel, text[:cursor], text[cursor:eol], text[eol:], "ident", answer=answer, mode=mode))
    return tasks


def typed_part(task: Task) -> str:
    """The identifier characters just before the cursor that the answer continues ('' in after mode)."""
    return _WORD_TAIL.search(task.prefix).group() if task.mode == "inside" else ""


def written_identifier(task: Task, completion: str) -> str:
    """The identifier the completion writes at the cursor ('' when it writes none)."""
    line = completion.split("\n", 1)[0]
    if task.mode == "inside":
        return typed_part(task) + _WORD_HEAD.match(line).group()
    m = IDENT.search(line)
    return m.group() if m else ""


def ident_correct(task: Task, completion: str) -> bool:
    return written_identifier(task, completion) == task.answer


class IdentifierStats:
    """Identifier and (previous word, identifier) counts over the training files, for the baseline."""

    def __init__(self, texts: Iterable[str]):
        self.unigram: Counter[str] = Counter()
        self.bigram: dict[str, Counter[str]] = {}
        for text in texts:
            for line in text.splitlines():
                words = IDENT.findall(line)
                self.unigram.update(w for w in words if is_answer(w))
                for prev, word in zip(words, words[1:]):
                    if is_answer(word):
                        self.bigram.setdefault(prev, Counter())[word] += 1
        self.ranked = [w for w, _ in self.unigram.most_common()]  # most frequent first
        self.top = self.ranked[0] if self.ranked else ""

    def predict(self, task: Task) -> str:
        """The baseline's identifier for a task."""
        if task.mode == "inside":
            typed = typed_part(task)
            return next((w for w in self.ranked if w.startswith(typed) and w != typed), self.top)
        prev = _WORD_TAIL.search(task.prefix).group()
        follow = self.bigram.get(prev)
        return follow.most_common(1)[0][0] if follow else self.top

    def answer(self, task: Task) -> str:
        """The baseline's identifier as a completion at the cursor."""
        word = self.predict(task)
        return word[len(typed_part(task)):] if task.mode == "inside" else word


@dataclass(frozen=True)
class IdentScore:
    n: int
    accuracy: float
    by_mode: dict[str, float]


def score_ident(tasks: list[Task], completions: list[str]) -> IdentScore:
    """Next-identifier accuracy over ident tasks, overall and per mode."""
    pairs = [(t, c) for t, c in zip(tasks, completions, strict=True) if t.kind == "ident"]
    by_mode = {}
    for mode in MODES:
        hits = [ident_correct(t, c) for t, c in pairs if t.mode == mode]
        if hits:
            by_mode[mode] = sum(hits) / len(hits)
    overall = sum(ident_correct(t, c) for t, c in pairs) / max(1, len(pairs))
    return IdentScore(len(pairs), overall, by_mode)
