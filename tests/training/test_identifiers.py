"""Next-identifier accuracy, whole-line similarity and their baselines, through run_tasks with a fake engine."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dg_lsp.training.evaluate import Task, baselines, line_similarity, run_tasks
from dg_lsp.training.identifiers import (
    IdentifierStats,
    ident_correct,
    make_ident_tasks,
    score_ident,
    written_identifier,
)

FILE = ("import os\n\n\ndef f(path):\n    if path:\n        return os.path.join(path, 'a')\n    return None\n\n\n"
        "class A:\n    def g(self):\n        self.value = 1\n        return self.value\n")
END = 0


class CharTokenizer:
    """One id per character (ord + 1), 0 ends the canvas."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) + 1 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i - 1) for i in ids)


class FakeEngine:
    """Answers every request with `answer(prefix)`, deterministically, as an engine's last step would."""

    def __init__(self, answer):
        self.answer = answer
        self.tokenizer = CharTokenizer()
        self.cfg = SimpleNamespace(end_ids=frozenset({END}), max_position_embeddings=4096)
        self.prefixes: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text)

    def infill(self, request, sampler):
        prefix = request.segments[0]
        self.prefixes.append(prefix)
        ids = self.tokenizer.encode(self.answer(prefix)) + [END]
        yield SimpleNamespace(canvas=torch.tensor(ids))


def task(prefix: str, middle: str, suffix: str, answer: str, mode: str) -> Task:
    return Task("m.py", prefix, middle, suffix, "ident", answer=answer, mode=mode)


def test_written_identifier_per_mode():
    inside = task("x = os.pa", "th.join(a)", "\n", "path", "inside")
    assert written_identifier(inside, "th.join(a)") == "path" and ident_correct(inside, "th")
    assert written_identifier(inside, "ckage") == "package" and not ident_correct(inside, "ckage")
    assert written_identifier(inside, "\npath") == "pa"  # only the first line counts
    after = task("self", ".value = 1", "\n", "value", "after")
    assert written_identifier(after, ".value = 2") == "value" and ident_correct(after, ".value = 2")
    assert written_identifier(after, "(1)") == "" and not ident_correct(after, "(1)")
    assert not ident_correct(after, ".val")


def test_tasks_rejoin_to_the_file_and_name_their_answer():
    tasks = make_ident_tasks([("m.py", FILE)], n=10, seed=3)
    assert len(tasks) == 10 and {t.mode for t in tasks} == {"inside", "after"}
    assert make_ident_tasks([("m.py", FILE)], n=10, seed=3) == tasks  # deterministic
    for t in tasks:
        assert t.prefix + t.middle + t.suffix == FILE and "\n" not in t.middle
        assert t.answer not in ("import", "def", "return", "if", "class", "None")  # keywords never answer
        assert ident_correct(t, t.middle), t  # the true rest of the line writes the answer
        if t.mode == "inside":
            assert t.middle and t.prefix[-1].isidentifier() and t.answer.startswith(written_identifier(t, ""))


def test_baseline_uses_typed_start_then_previous_word():
    stats = IdentifierStats(["import os\nos.path.join(a)\nos.path.exists(a)\nos.path.join(b)\nprint(path, path)\n"])
    assert stats.top == "path" and stats.unigram["os"] == 4 and "import" not in stats.unigram  # 5 x path
    assert stats.predict(task("x = os.pa", "th", "\n", "path", "inside")) == "path"
    assert stats.answer(task("x = os.pa", "th", "\n", "path", "inside")) == "th"
    assert stats.predict(task("y = path", ".join", "\n", "join", "after")) == "join"  # join follows path twice
    assert stats.predict(task("y = zzz", ".q", "\n", "q", "after")) == stats.top  # unseen word: global top


def test_score_ident_counts_per_mode():
    tasks = [task("a.pa", "th", "\n", "path", "inside"), task("self", ".x", "\n", "x", "after"),
             task("self", ".y", "\n", "y", "after")]
    score = score_ident(tasks, ["th", ".x", ".z"])
    assert score.n == 3 and score.accuracy == pytest.approx(2 / 3)
    assert score.by_mode == {"inside": 1.0, "after": 0.5}


def test_line_similarity_judges_the_whole_line():
    t = task("    x = os.pa", "th.join(a)", "\n", "path", "inside")
    assert line_similarity(t, "th.join(a)") == 1.0
    # the typed part of the line is shared, so a wrong ending scores higher than on the middle alone
    from dg_lsp.training.evaluate import similarity

    assert line_similarity(t, "ckage") > similarity(t, "ckage")
    single = Task("m.py", "    ", "return x", "\n", "single")
    assert line_similarity(single, "return x") == 1.0 and line_similarity(single, "") == 0.0


def test_run_tasks_reports_identifier_accuracy_and_line_similarity():
    tasks = make_ident_tasks([("m.py", FILE)], n=8, seed=0)
    truth = {t.prefix: t.middle for t in tasks}
    # right on the inside tasks, a wrong identifier on the after tasks
    eng = FakeEngine(lambda prefix: truth[prefix] if prefix[-1].isalnum() and _mode(tasks, prefix) == "inside"
                     else " wrong_name")
    res = run_tasks(eng, tasks, sampler=None)["ident"]
    n_inside = sum(t.mode == "inside" for t in tasks)
    assert res["n"] == len(tasks) == len(eng.prefixes)
    assert res["next_ident_inside"] == 1.0 and res["next_ident_after"] == 0.0
    assert res["next_ident"] == pytest.approx(n_inside / len(tasks))
    assert res["exact"] == pytest.approx(n_inside / len(tasks))
    assert 0.0 < res["line_similarity"] < 1.0


def test_baselines_cover_every_kind():
    tasks = make_ident_tasks([("m.py", FILE)], n=6, seed=1) + [Task("m.py", "    ", "return x", "\n", "single")]
    base = baselines(tasks, ["return x\nreturn x\nself.value = os.path\n"])
    assert base["line"] == "return x"
    assert base["single"]["exact"] == 1.0 and base["single"]["line_similarity"] == 1.0
    assert set(base["ident"]) >= {"exact", "line_similarity", "next_ident"}
    stats = IdentifierStats(["return x\nreturn x\nself.value = os.path\n"])
    want = sum(ident_correct(t, stats.answer(t)) for t in tasks if t.kind == "ident") / 6
    assert base["ident"]["next_ident"] == pytest.approx(want)


def _mode(tasks: list[Task], prefix: str) -> str:
    return next(t.mode for t in tasks if t.prefix == prefix)
