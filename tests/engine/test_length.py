"""The canvas-length probe (engine.length): the rule on planted end probabilities, and the engine's probe
against a full forward of the reference kind on tiny checkpoints."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dg_lsp.engine import InfillRequest, SamplerConfig, load
from dg_lsp.engine.length import bucket, chosen_lengths, end_probability, estimated_length
from dg_lsp.engine.prompt import attention_mask, build_layout

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"


def probs(*values: float) -> torch.Tensor:
    return torch.tensor(values)


def test_length_is_the_first_position_past_the_end():
    assert estimated_length(probs(0.1, 0.2, 0.6, 0.1, 0.9)) == 2  # the first at or above 0.5, not the last
    assert estimated_length(probs(0.5, 0.0)) == 0
    assert estimated_length(probs(0.1, 0.4, 0.49)) == 3  # no end: all of it
    assert estimated_length(probs(0.1, 0.7), threshold=0.8) == 2


@pytest.mark.parametrize("length,ceiling,want", [
    (0, 32, 4), (1, 32, 4), (4, 32, 4), (5, 32, 8), (17, 32, 24), (31, 32, 32), (32, 32, 32),
    (9, 12, 12),  # a ceiling between buckets is itself allowed
    (40, 32, 32),  # never above the ceiling
    (3, 3, 3),
])
def test_bucket_is_the_smallest_that_holds_the_length(length, ceiling, want):
    assert bucket(length, ceiling) == want


def test_each_fill_hole_gets_its_own_length_and_rewrite_holes_keep_theirs():
    end = torch.cat([probs(*([0.0] * 6 + [0.9] * 10)),  # hole 0 (16): ends after 6 -> 8
                     probs(*([0.9] * 16)),  # hole 1 (16), a rewrite: kept
                     probs(*([0.1] * 32))])  # hole 2 (32): no end -> 32
    assert chosen_lengths(end, [16, 16, 32], [True, False, True]) == [8, 16, 32]


def test_end_probability_sums_every_end_token():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    assert torch.allclose(end_probability(logits, torch.tensor([0, 2])), torch.tensor([0.4, 0.8]))


def expected_lengths(eng, request):
    """What the probe must choose, computed independently: a full forward over the whole layout under the
    family's attention mask (as the reference sampler runs), the mask token never proposed."""
    layout = build_layout(request, eng.tokenizer, eng.cfg)
    tokens = torch.tensor([layout.tokens])
    mask = attention_mask(layout, eng.cfg)
    with torch.inference_mode():
        logits = eng.model(tokens, torch.arange(tokens.shape[1])[None], None if mask is None else mask[None])[0]
    rows = layout.canvas_index
    if eng.cfg.family.shift_logits:
        rows = (rows - 1).clamp_min(0)
    logits = logits[rows]
    logits[:, eng.cfg.mask_id] = float("-inf")
    end_ids = torch.tensor(sorted(eng.cfg.end_ids))
    fill = [not h.init for h in request.holes]
    return chosen_lengths(end_probability(logits, end_ids), [h.canvas for h in request.holes], fill)


@pytest.mark.parametrize("family", ["dg", "dream"])
def test_the_probe_matches_a_full_forward_and_the_fill_equals_a_fixed_canvas_of_that_length(tiny_dirs, family):
    eng = load(tiny_dirs[family], device="cpu", dtype="float32")
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 32)
    want = expected_lengths(eng, request)
    probe = SamplerConfig(steps=4, canvas_length="probe")
    layout = eng.layout_for(request, probe)
    assert [e - s for s, e in layout.holes] == want
    got = eng.complete(request, probe)
    assert got.canvas_tokens == want[0]
    fixed = load(tiny_dirs[family], device="cpu", dtype="float32").complete(
        InfillRequest.at_cursor(PREFIX, SUFFIX, want[0]), SamplerConfig(steps=4))
    if family == "dg":  # causal context: the probe's cached prefix is exact, so the fill is the same
        assert got.text == fixed.text


def biased(eng, end_bias: float):
    """The model with `end_bias` added to every end token's logit: a model sure of an early end (large
    positive) or sure there is none (large negative)."""
    head = eng.model.logits
    bias = torch.zeros(eng.cfg.vocab_size)
    bias[sorted(eng.cfg.end_ids)] = end_bias
    eng.model.logits = lambda hidden: head(hidden) + bias
    return eng


@pytest.mark.parametrize("end_bias,want", [(50.0, 4), (-50.0, 48)])
def test_a_model_sure_of_an_early_end_gets_the_smallest_canvas_and_one_sure_of_none_the_ceiling(
        tiny_dirs, end_bias, want):
    eng = biased(load(tiny_dirs["dg"], device="cpu", dtype="float32"), end_bias)
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 48)
    probe = SamplerConfig(steps=2, canvas_length="probe")
    (start, end), = eng.layout_for(request, probe).holes
    assert end - start == want
    assert eng.complete(request, probe).canvas_tokens == want


def test_fixed_and_rewrite_requests_are_not_probed(tiny_dirs, monkeypatch):
    eng = load(tiny_dirs["dg"], device="cpu", dtype="float32")
    calls = []
    monkeypatch.setattr(type(eng), "probe_lengths", lambda self, layout, fill: calls.append(1) or [])
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 16)
    assert eng.layout_for(request, SamplerConfig()).holes == build_layout(request, eng.tokenizer, eng.cfg).holes
    rewrite = InfillRequest.rewrite(PREFIX, "a + b", SUFFIX, 8)
    eng.layout_for(rewrite, SamplerConfig(canvas_length="probe"))
    assert calls == []


def test_probe_setting_is_checked():
    with pytest.raises(Exception, match="canvas_length"):
        SamplerConfig(canvas_length="guess")
    assert replace(SamplerConfig(), canvas_length="probe").canvas_length == "probe"
