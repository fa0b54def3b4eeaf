"""Infill-shaped training examples: text windows with one or more holes, laid out exactly as the engine
lays out a request ([bos] segment | canvas | segment | canvas | ... | segment).

Every piece (each segment and each middle) is tokenized on its own, as at inference, where the prefix ends
at the cursor mid-token; the model must learn those boundary tokens. Each canvas holds the middle's tokens
followed by pad up to a bucketed length, so the model learns how long the middle is.

Middles come in three shapes, as an editor asks for them:
- line: from a cursor inside a line (after its indentation) to the end of the line, sometimes leaving a
  short tail (auto-closed brackets, quotes) in the suffix;
- block: one to several whole lines starting after the indentation of the first;
- span: a short piece inside a line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dg_lsp.engine.tokenizer import Tokenizer

CANVAS_BUCKETS = (4, 8, 16, 24, 32, 48, 64)
HOLE_COUNTS = ((1, 0.2), (2, 0.2), (3, 0.2), (4, 0.2), (6, 0.2))  # holes per window, probability
SHAPES = (("line", 0.5), ("block", 0.3), ("span", 0.2))


@dataclass(frozen=True)
class ExampleSpec:
    seq_len: int = 256  # tokens per example, bos and canvases included
    max_middle: int = 64  # tokens; longer middles are redrawn
    window_chars: int = 3000  # text drawn around the holes before tokenizing
    empty_middle: float = 0.03  # share of holes whose middle is empty (the model learns "nothing here")


@dataclass
class Example:
    tokens: list[int]  # canvas positions hold their target (middle then pad); noise is applied later
    is_canvas: list[bool]


def canvas_length(middle: int, rng: np.random.Generator, max_middle: int) -> int:
    """Smallest bucket that holds the middle, or (40%) the next one: the model sees spare pad too."""
    fits = [b for b in CANVAS_BUCKETS if b >= middle and b <= max_middle] or [max_middle]
    if len(fits) > 1 and rng.random() < 0.4:
        return fits[1]
    return fits[0]


def _pick(rng: np.random.Generator, table) -> object:
    values, probs = zip(*table)
    return values[rng.choice(len(values), p=np.array(probs) / sum(probs))]


def hole_span(lines: list[str], starts: list[int], rng: np.random.Generator) -> tuple[int, int] | None:
    """A (start, end) character span of `text` to cut out, or None when the drawn line does not fit."""
    i = int(rng.integers(len(lines)))
    line = lines[i].rstrip("\r\n")
    indent = len(line) - len(line.lstrip())
    if not line.strip():
        return None
    shape = _pick(rng, SHAPES)
    base = starts[i]
    if shape == "line":
        start = indent if rng.random() < 0.5 else int(rng.integers(indent, len(line)))
        end = len(line)
        tail = len(line) - len(line.rstrip(")]}'\":,"))  # closing characters an editor auto-inserts
        if tail and rng.random() < 0.5:
            end -= int(rng.integers(1, tail + 1))
        return base + start, base + max(start, end)
    if shape == "block":
        n = int(rng.integers(1, 7))
        last = min(len(lines), i + n) - 1
        end = starts[last] + len(lines[last].rstrip("\r\n"))
        return base + indent, end
    length = int(rng.integers(1, 41))
    start = int(rng.integers(indent, len(line)))
    return base + start, base + min(len(line), start + length)


def make_example(text: str, tok: Tokenizer, rng: np.random.Generator, spec: ExampleSpec,
                 bos: int, pad: int) -> Example | None:
    """One example from a file's text, or None when the draw does not fit (the caller draws again)."""
    if len(text) > spec.window_chars:
        start = int(rng.integers(0, len(text) - spec.window_chars))
        text = text[start: start + spec.window_chars]
    lines = text.splitlines(keepends=True)
    if len(lines) < 3:
        return None
    starts = np.concatenate([[0], np.cumsum([len(x) for x in lines])[:-1]]).tolist()
    # Draw holes inside the middle region only: the first and last lines are window edges.
    inner_lines, inner_starts = lines[1:-1], starts[1:-1]
    n_holes = int(_pick(rng, HOLE_COUNTS))
    spans: list[tuple[int, int]] = []
    for _ in range(n_holes * 3):
        if len(spans) == n_holes:
            break
        span = hole_span(inner_lines, inner_starts, rng)
        if span is None or any(span[0] < e + 1 and s < span[1] + 1 for s, e in spans):
            continue  # holes never touch: at least one character of context between them
        spans.append(span)
    if not spans:
        return None
    spans.sort()
    if rng.random() < spec.empty_middle:
        s, _ = spans[0]
        spans[0] = (s, s)
    segments, middles, cursor = [], [], 0
    for s, e in spans:
        segments.append(text[cursor:s])
        middles.append(text[s:e])
        cursor = e
    segments.append(text[cursor:])
    mids = [tok.encode(m) for m in middles]
    if any(len(m) > spec.max_middle for m in mids):
        return None
    canvases = [canvas_length(len(m), rng, spec.max_middle) for m in mids]
    segs = [tok.encode(s) for s in segments]
    budget = spec.seq_len - 1 - sum(canvases) - sum(len(s) for s in segs[1:-1])
    if budget < 8:
        return None
    # Trim the outer segments to fit: the prefix keeps its end, the suffix its start (as the server does).
    keep_suffix = min(len(segs[-1]), max(budget // 4, budget - len(segs[0])))
    keep_prefix = min(len(segs[0]), budget - keep_suffix)
    segs[0] = segs[0][len(segs[0]) - keep_prefix:]
    segs[-1] = segs[-1][:keep_suffix]
    tokens, is_canvas = [bos], [False]
    for seg, mid, size in zip(segs, mids, canvases):
        tokens += seg + mid + [pad] * (size - len(mid))
        is_canvas += [False] * len(seg) + [True] * size
    tokens += segs[-1]
    is_canvas += [False] * len(segs[-1])
    return Example(tokens=tokens, is_canvas=is_canvas)
