"""Per-token confidences of a finished canvas: what `InfillResult.confidences` holds.

The denoising loop keeps, per canvas position, the probability its token had under the step that
committed it (NaN until then). Here that vector becomes one tuple per hole, cut where the hole's text is
cut (the first pad/EOS, as Engine.decode_holes), so there is one value per token of the returned text.
Both the sequential path (Engine.infill_layout) and the batched one (engine.batch_forward) call this, so the
two cannot disagree on the alignment.
"""

from __future__ import annotations

from typing import Iterable

from torch import Tensor


def cut_holes(canvas: Tensor, lengths: Iterable[int], end_ids: frozenset[int]) -> tuple[tuple[int, ...], ...]:
    """The token ids of each hole's text: its `lengths[h]` canvas positions up to the first pad/EOS (what
    follows it is filler). The one place a hole's text is cut: decoding, token ids and confidences."""
    ids, out, offset = canvas.tolist(), [], 0
    for n in lengths:
        part = ids[offset: offset + n]
        cut = next((i for i, t in enumerate(part) if t in end_ids), n)
        out.append(tuple(part[:cut]))
        offset += n
    return tuple(out)


def hole_confidences(canvas: Tensor, probs: Tensor | None, lengths: Iterable[int],
                     end_ids: frozenset[int]) -> tuple[tuple[float, ...], ...]:
    """canvas, probs: [N] over every hole's positions in order; lengths: positions per hole. () when the
    loop did not track probabilities (variable-length canvases)."""
    if probs is None:
        return ()
    lengths = list(lengths)
    values, out, offset = probs.tolist(), [], 0
    for n, ids in zip(lengths, cut_holes(canvas, lengths, end_ids)):
        out.append(tuple(float(p) for p in values[offset: offset + len(ids)]))
        offset += n
    return tuple(out)


def hole_tokens(canvas: Tensor, probs: Tensor | None, lengths: Iterable[int],
                end_ids: frozenset[int]) -> tuple[tuple[int, ...], ...]:
    """The token ids of each hole's text, one per confidence; () where `hole_confidences` gives none."""
    return () if probs is None else cut_holes(canvas, lengths, end_ids)
