"""Held-out infill evaluation: single-line and multi-line exact match, a frequency baseline, and samplers.

Tasks come from the held-out files only (training/corpus.py names them), drawn deterministically:
- single-line: the cursor sits after a line's indentation; the middle is the rest of that line. The
  completion counts as exact when its first line, right-stripped, equals the middle, right-stripped (the
  server's line mode stops at the end of the line the same way).
- multi-line: the cursor sits after the indentation of a line; the middle is that line and the next one to
  three lines. Exact when the completion, right-stripped, equals the middle, right-stripped.
Canvas policy: fixed, 24 tokens for single-line and 64 for multi-line, unless the caller passes others or a
probing sampler (`canvas_length="probe"`, engine.length), where those are the longest canvases. The prefix and suffix windows are
cut exactly as the server cuts them (dg_lsp.context.fit_request: whole lines, 3/4 of the budget before
the cursor, within the model's positions minus the canvas).
Edit similarity (difflib ratio of the same two strings, averaged) gives partial credit beside it; the
whole-line share counts answers the model ended itself with no bracket or string left open (`whole`).
Frequency baseline: always answer the most frequent stripped line of the training files (for
multi-line, that line repeated to the task's line count).

Beside exact match, so that progress shows while it stays low:
- next-identifier accuracy on "ident" tasks (training/identifiers.py: the cursor inside or right after an
  identifier; the answer counts when the next identifier written is the true one), with its frequency
  baseline (the commonest identifier with the typed start, or after the same previous word);
- whole-line edit similarity (`line_similarity`): the cursor's line(s) as they read after the completion
  is inserted, against the true line(s), from the first non-blank character, so a mid-line cursor is
  judged on the line the user sees, not only on the inserted piece.
"""

from __future__ import annotations

import difflib
import statistics
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

SINGLE_CANVAS = 24
MULTI_CANVAS = 64
CONTEXT_BUDGET = 1024  # the server's default; fit_request lowers it to what the model's positions allow


@dataclass(frozen=True)
class Task:
    source: str  # held-out file, relative path
    prefix: str
    middle: str
    suffix: str
    kind: str  # "single", "multi" or "ident" (a single-line task whose cursor is at an identifier)
    answer: str = ""  # ident tasks: the identifier to write
    mode: str = ""  # ident tasks: "inside" or "after" (training/identifiers.py)


def make_tasks(files: list[tuple[str, str]], n_single: int, n_multi: int, seed: int = 0) -> list[Task]:
    """files: (relative path, text). Lines with at least 3 non-space characters make candidates."""
    rng = np.random.default_rng(seed)
    single, multi = [], []
    for rel, text in files:
        lines = text.splitlines(keepends=True)
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in lines])]).tolist()
        for i, line in enumerate(lines):
            body = line.strip()
            if len(body) < 3 or body.startswith("#"):
                continue
            start = offsets[i] + len(line) - len(line.lstrip())
            end = offsets[i] + len(line.rstrip("\r\n"))
            single.append(Task(rel, text[:start], text[start:end], text[end:], "single"))
            n = int(rng.integers(2, 5))
            if i + n <= len(lines) and all(x.strip() for x in lines[i: i + n]):
                last = i + n - 1
                end = offsets[last] + len(lines[last].rstrip("\r\n"))
                multi.append(Task(rel, text[:start], text[start:end], text[end:], "multi"))
    pick = lambda pool, n: [pool[j] for j in sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]
    return pick(single, n_single) + pick(multi, n_multi)


def compared(task: Task, completion: str) -> tuple[str, str]:
    """What a task compares, right-stripped: the completion (its first line for single-line tasks) and
    the middle."""
    got = completion.split("\n", 1)[0] if task.kind != "multi" else completion
    return got.rstrip(), task.middle.rstrip()


def exact(task: Task, completion: str) -> bool:
    got, want = compared(task, completion)
    return got == want


def similarity(task: Task, completion: str) -> float:
    """Character-level similarity (difflib ratio, 0..1) of what `exact` compares: partial credit."""
    got, want = compared(task, completion)
    return difflib.SequenceMatcher(None, got, want, autojunk=False).ratio()


def line_similarity(task: Task, completion: str) -> float:
    """Edit similarity of the whole line(s) at the cursor: the line's start before the cursor, then the
    completion (as `exact` compares it), then the line's rest after the middle, against the true line(s);
    leading whitespace aside, so indentation gives no free credit."""
    got, want = compared(task, completion)
    head = task.prefix[task.prefix.rfind("\n") + 1:].lstrip()
    tail = task.suffix.split("\n", 1)[0].rstrip()
    return difflib.SequenceMatcher(None, head + got + tail, head + want + tail, autojunk=False).ratio()


def frequency_baseline(train_texts: list[str]) -> str:
    counts = Counter(line.strip() for text in train_texts for line in text.splitlines() if line.strip())
    return counts.most_common(1)[0][0]


def baseline_answer(task: Task, line: str) -> str:
    if task.kind != "multi":
        return line
    indent = task.prefix[len(task.prefix.rstrip(" \t")):]
    return ("\n" + indent).join([line] * len(task.middle.splitlines()))


def whole(task: Task, text: str, ended: bool) -> bool:
    """A whole-line (single) or whole-block (multi) answer: non-empty, ended by the model itself (an end
    token or, for a line, a line break inside the canvas: not cut off by the canvas running out), and
    leaving no bracket or string it opened still open."""
    from dg_lsp.postprocess import scan  # the server's bracket scanner (Python rules)

    got, _ = compared(task, text)
    if not got.strip() or not ended:
        return False
    walk = scan(got)
    return walk.first_open < 0 and not walk.lines[-1].in_own_string()


def run_tasks(eng, tasks: list[Task], sampler, progress=None,
              canvas: tuple[int, int] = (SINGLE_CANVAS, MULTI_CANVAS), canvases: int = 1) -> dict:
    """Exact match, edit similarity, whole-line share and latency (ms) of one sampler setting over the tasks,
    split by kind. `canvas`: the canvas length (single, multi), or the longest one when the sampler probes
    (`canvas_length="probe"`); with `canvases` > 1 a middle the canvas cut off continues canvas after canvas
    (Engine.continue_infill) until an end token, or for a single line a line break. `canvas_mean` reports
    the canvas positions used."""
    from dg_lsp.context import fit_request  # the server's own windowing, so the numbers are the server's
    from dg_lsp.engine.request import InfillRequest

    from dg_lsp.training.identifiers import score_ident

    ends = eng.cfg.end_ids
    results: dict[str, dict] = {}
    for kind in ("single", "multi", "ident"):
        subset = [t for t in tasks if t.kind == kind]
        if not subset:
            continue
        size = canvas[1] if kind == "multi" else canvas[0]
        line_mode = kind != "multi"
        hits, sims, line_sims, texts, wholes, sizes, latencies = 0, [], [], [], 0, [], []
        for i, task in enumerate(subset):
            request = fit_request(InfillRequest.at_cursor(task.prefix, task.suffix, size), eng.count_tokens,
                                  CONTEXT_BUDGET, context_limit=eng.cfg.max_position_embeddings)
            t0 = time.perf_counter()
            if canvases > 1:
                stop = (lambda text: "\n" in text) if line_mode else None
                *_, last = eng.continue_infill(request, sampler, max_canvases=canvases, stop=stop)
                ids, text = last.state.canvas.tolist(), last.text
                used = len(ids) * (last.canvas + 1)
            else:
                *_, last = eng.infill(request, sampler)
                ids = last.canvas.tolist()
                used = len(ids)
            cut = next((j for j, t in enumerate(ids) if t in ends), None)
            if canvases <= 1:
                text = eng.tokenizer.decode(ids[:cut])
            latencies.append((time.perf_counter() - t0) * 1e3)
            hits += exact(task, text)
            sims.append(similarity(task, text))
            line_sims.append(line_similarity(task, text))
            texts.append(text)
            wholes += whole(task, text, cut is not None or (line_mode and "\n" in text))
            sizes.append(used)
            if progress:
                progress(kind, i + 1, len(subset))
        results[kind] = {"n": len(subset), "exact": hits / len(subset), "similarity": statistics.fmean(sims),
                         "line_similarity": statistics.fmean(line_sims),
                         "whole": wholes / len(subset), "canvas_mean": statistics.fmean(sizes),
                         "p50_ms": statistics.median(latencies),
                         "p95_ms": float(np.percentile(latencies, 95))}
        if kind == "ident":
            scored = score_ident(subset, texts)
            results[kind]["next_ident"] = scored.accuracy
            results[kind].update({f"next_ident_{m}": v for m, v in scored.by_mode.items()})
    return results


def baselines(tasks: list[Task], train_texts: list[str]) -> dict:
    """The frequency baselines of every metric, per kind: the commonest line (exact, similarity, line
    similarity) and, for ident tasks, the identifier baseline (training/identifiers.py)."""
    from dg_lsp.training.identifiers import IdentifierStats, score_ident

    line = frequency_baseline(train_texts)
    stats = IdentifierStats(train_texts) if any(t.kind == "ident" for t in tasks) else None
    out: dict = {"line": line}
    for kind in ("single", "multi", "ident"):
        subset = [t for t in tasks if t.kind == kind]
        if not subset:
            continue
        answers = [stats.answer(t) if kind == "ident" else baseline_answer(t, line) for t in subset]
        out[kind] = {"exact": statistics.fmean(exact(t, a) for t, a in zip(subset, answers)),
                     "similarity": statistics.fmean(similarity(t, a) for t, a in zip(subset, answers)),
                     "line_similarity": statistics.fmean(line_similarity(t, a) for t, a in zip(subset, answers))}
        if kind == "ident":
            scored = score_ident(subset, answers)
            out[kind]["next_ident"] = scored.accuracy
            out[kind].update({f"next_ident_{m}": v for m, v in scored.by_mode.items()})
    return out


def evaluate_model(model_dir, corpus, train_texts: list[str], single: int, multi: int, ident: int,
                   steps: int = 8, device: str = "cpu", seed: int = 0, progress=None) -> dict:
    """One sampler setting (confidence, `steps`) of an exported model on held-out tasks, beside the
    baselines: what a training run reports when it has exported (`train --export`)."""
    from dg_lsp import engine
    from dg_lsp.engine.request import SamplerConfig
    from dg_lsp.training.identifiers import make_ident_tasks

    say = progress or (lambda _m: None)
    held = [(f.relpath, f.read_text()) for f in corpus.held_out]
    tasks = make_tasks(held, single, multi, seed=seed) + make_ident_tasks(held, ident, seed=seed)
    eng = engine.load(model_dir, device=device)
    say(f"evaluating {model_dir} on {len(tasks)} held-out tasks ({steps} steps, confidence sampler)")
    last = [0.0]

    def tick(kind, done, total):
        if time.perf_counter() - last[0] > 10 or done == total:
            last[0] = time.perf_counter()
            say(f"  {kind}: {done}/{total}")

    model = run_tasks(eng, tasks, SamplerConfig(steps=steps, commit="schedule", confidence="max_prob"), tick)
    base = baselines(tasks, train_texts)
    summary = {kind: {"exact": m["exact"], "line_similarity": m["line_similarity"],
                      "baseline_exact": base[kind]["exact"], "baseline_line_similarity": base[kind]["line_similarity"]}
               for kind, m in model.items()}
    if "ident" in model:
        summary["ident"].update(next_ident=model["ident"]["next_ident"],
                                baseline_next_ident=base["ident"]["next_ident"])
    return {"model": str(model_dir), "steps": steps, "seed": seed, "results": model, "baselines": base,
            "summary": summary}
