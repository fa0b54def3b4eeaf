"""Engine.score: the probability of each existing token of a span, in one forward (confidence hints)."""

from __future__ import annotations

import pytest
import torch

from dg_lsp.engine import load
from dg_lsp.engine.engine import token_probs
from dg_lsp.engine.forward import CanvasForward
from dg_lsp.engine.prompt import build_layout
from dg_lsp.engine.request import InfillRequest

TEXT = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"


@pytest.mark.parametrize("family", ["dg", "dream", "llada", "open-dcoder"])
def test_score_covers_the_span_with_the_probabilities_rewrite_ranks_by(tiny_dirs, family):
    eng = load(tiny_dirs[family], device="cpu", dtype="float32")
    start = TEXT.index("return")
    end = TEXT.index("\n", start)
    scores = eng.score(TEXT, start, end)
    ids = eng.tokenizer.encode(TEXT[start:end])
    assert len(scores) == len(ids)
    assert scores[0][0] == start and scores[-1][1] == end
    assert all(a <= b for a, b, _ in scores)
    assert all(b == a2 for (_, b, _), (a2, _, _) in zip(scores, scores[1:]))  # contiguous, in order
    probs = torch.tensor([p for _, _, p in scores])
    assert bool(((probs > 0) & (probs <= 1)).all()), probs

    # the rewrite's first step sees the same canvas: its re-noising drops exactly the least likely tokens
    request = InfillRequest.rewrite(TEXT[:start], TEXT[start:end], TEXT[end:], len(ids))
    run = CanvasForward(eng, build_layout(request, eng.tokenizer, eng.cfg))
    with torch.inference_mode():
        canvas = run.tokens[0, run.canvas_idx].clone()
        logits = run.logits()
        torch.testing.assert_close(token_probs(canvas, logits), probs, rtol=1e-5, atol=1e-7)
        renoised, masked = eng._renoise_init(canvas, canvas == eng.cfg.mask_id, logits, 0.25)
    k = round(0.25 * len(ids))
    assert set(masked.nonzero()[:, 0].tolist()) == set(probs.topk(k, largest=False).indices.tolist())


def test_score_of_an_empty_span_is_empty(tiny_dirs):
    eng = load(tiny_dirs["dg"], device="cpu")
    assert eng.score(TEXT, 3, 3) == []
