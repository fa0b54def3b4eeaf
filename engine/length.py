"""Choosing a hole's canvas length from the model's own first guess (`SamplerConfig.canvas_length="probe"`).

A hole's `canvas` is then the longest canvas allowed. One forward over that layout, every canvas position
still a mask, tells where the model expects the middle to end: models trained with pad/EOS after the
middle (ours, Dream, LLaDA) put the end token's probability mass past the end of the text they have in
mind. The first position whose end probability reaches `END_PROB` is the length estimate; the canvas
becomes the smallest bucket that holds it. No end anywhere keeps the longest canvas (and a block may go on
canvas after canvas). A tight canvas is what our model saw in training (engine/../training/examples.py:
the smallest bucket that holds the middle, or the next one) and spares a short middle a tail of pads;
a ceiling above the fixed lengths lets a long line finish instead of being cut.

Cost: one extra canvas forward at the ceiling length per request (the context is encoded once and kept
by the context cache for the chosen layout). Rewrite holes (their text fixes the length), checkpoints
with expand/delete tokens (they size themselves) and DiffusionGemma (it writes canvas by canvas until its
own stop) are left as they are.
"""

from __future__ import annotations

from torch import Tensor

# lengths a probed canvas may take (capped by the ceiling, which is always allowed); the training
# buckets of our model up to 64, then steps of about 1.5x
BUCKETS = (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
END_PROB = 0.5  # P(pad or EOS) at which a position counts as past the middle's end


def end_probability(logits: Tensor, end_ids: Tensor) -> Tensor:
    """[N, V] logits -> [N]: the probability that each position holds an end token (pad, EOS)."""
    return logits.float().softmax(-1)[:, end_ids].sum(-1)


def estimated_length(end_prob: Tensor, threshold: float = END_PROB) -> int:
    """Positions before the first one whose end probability reaches `threshold` (all of them: none does)."""
    past = (end_prob >= threshold).nonzero()
    return int(past[0, 0]) if len(past) else len(end_prob)


def bucket(length: int, ceiling: int) -> int:
    """The smallest allowed canvas length that holds `length` tokens, at most `ceiling`."""
    fits = [b for b in BUCKETS if b >= max(length, 1) and b < ceiling]
    return fits[0] if fits else ceiling


def chosen_lengths(end_prob: Tensor, hole_sizes: list[int], fill: list[bool],
                   threshold: float = END_PROB) -> list[int]:
    """Canvas length per hole from the probe's end probabilities over all canvas positions (holes in
    order, `hole_sizes` positions each); holes not to be resized (`fill` False) keep their size."""
    out, offset = [], 0
    for size, resize in zip(hole_sizes, fill):
        probs = end_prob[offset: offset + size]
        offset += size
        out.append(bucket(estimated_length(probs, threshold), size) if resize else size)
    return out
