"""DiffusionGemma's entropy-bound sampler: pure rules on hand-made tensors, then token-for-token parity with
transformers' `DiffusionGemmaForBlockDiffusion.generate` through an adapter that implements GemmaLike with
transformers' own encoder and decoder calls (so these tests do not depend on our model)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch

from dg_lsp.engine.errors import InfillCancelled, RequestError
from dg_lsp.engine.gemma_sampler import (EntropyBoundConfig, accept_mask, finalize_block, generate, pin_logits,
                                         stop_rule, temperature, token_entropy)

# ---- (a) pure rules --------------------------------------------------------------------------------


def test_entropy_matches_categorical_bit_for_bit():
    logits = torch.randn(2, 5, 37, generator=torch.Generator().manual_seed(0)) * 4
    assert torch.equal(token_entropy(logits), torch.distributions.Categorical(logits=logits).entropy())
    assert token_entropy(torch.zeros(1, 1, 37)).item() == pytest.approx(math.log(37), rel=1e-6)


def test_accept_lowest_entropies_while_their_sum_stays_under_the_bound():
    h = torch.tensor([[0.3, 0.02, 0.5, 0.05, 0.01]])
    # ascending 0.01, 0.02, 0.05, 0.3, 0.5: sums below each = 0, 0.01, 0.03, 0.08, 0.38
    assert accept_mask(h, 0.1).tolist() == [[True, True, False, True, True]]
    assert accept_mask(h, 0.02).tolist() == [[False, True, False, False, True]]
    assert accept_mask(torch.tensor([[2.0, 3.0], [5.0, 4.0]]), 0.1).tolist() == [[True, False], [False, True]]


def test_stop_needs_a_repeated_argmax_and_low_mean_entropy():
    cfg = EntropyBoundConfig(stability_threshold=1, confidence_threshold=0.005, canvas_length=3)
    a, low, high = torch.tensor([[4, 5, 6]]), torch.full((1, 3), 0.001), torch.full((1, 3), 0.01)
    history = torch.full((1, 1, 3), -1)
    stop, history, _ = stop_rule(a, history, low, None, cfg)
    assert not stop.item()  # first step: nothing to compare with
    stop, history, mean = stop_rule(a, history, low, None, cfg)
    assert stop.item() and mean.item() == pytest.approx(0.001)
    assert not stop_rule(a, history, high, None, cfg)[0].item()  # stable, not confident
    assert not stop_rule(torch.tensor([[4, 5, 7]]), history, low, None, cfg)[0].item()  # confident, moved
    no_stability = EntropyBoundConfig(stability_threshold=0, canvas_length=3)
    assert stop_rule(a, torch.empty(0, 1, 3, dtype=torch.long), low, None, no_stability)[0].item()


def test_stop_rule_leaves_pinned_positions_out():
    cfg = EntropyBoundConfig(stability_threshold=1, confidence_threshold=0.005, canvas_length=3)
    history, entropy = torch.tensor([[[4, 5, 6]]]), torch.tensor([[0.009, 0.0, 0.0]])
    free = torch.tensor([[True, False, False]])
    assert stop_rule(torch.tensor([[4, 5, 6]]), history, entropy, None, cfg)[0].item()  # mean 0.003 overall
    stop, _, mean = stop_rule(torch.tensor([[4, 9, 9]]), history, entropy, free, cfg)
    assert not stop.item() and mean.item() == pytest.approx(0.009)  # pinned changes ignored, mean over free
    entropy = torch.tensor([[0.001, 0.0, 0.0]])
    assert stop_rule(torch.tensor([[4, 9, 9]]), history, entropy, free, cfg)[0].item()


def test_temperature_schedule_is_linear_in_remaining_steps():
    cfg = EntropyBoundConfig(steps=4, t_min=0.4, t_max=0.8)
    t = [temperature(s, cfg).item() for s in (4, 3, 2, 1)]
    assert t == pytest.approx([0.8, 0.7, 0.6, 0.5]) and temperature(4, cfg).dtype == torch.float32


def test_pinned_logits_are_one_hot_with_zero_entropy():
    logits = torch.randn(1, 3, 11, generator=torch.Generator().manual_seed(1))
    out = pin_logits(logits, torch.tensor([[-1, 7, 0]]))
    assert torch.equal(out[0, 0], logits[0, 0])
    assert out[0, 1:].argmax(-1).tolist() == [7, 0] and out[0, 1:].softmax(-1).max(-1).values.tolist() == [1.0, 1.0]
    assert token_entropy(out)[0, 1:].tolist() == [0.0, 0.0]


def test_finalize_pads_after_the_first_eos():
    eos = torch.tensor([1, 3])
    block, ended = finalize_block(torch.tensor([[5, 3, 7, 1], [5, 6, 7, 8]]), torch.tensor([False, False]), eos, 0)
    assert block.tolist() == [[5, 3, 0, 0], [5, 6, 7, 8]] and ended.tolist() == [True, False]
    block, ended = finalize_block(torch.tensor([[5, 6], [5, 1]]), torch.tensor([True, False]), eos, 0)
    assert block.tolist() == [[0, 0], [5, 1]] and ended.tolist() == [True, True]
    block, ended = finalize_block(torch.tensor([[1, 7]]), torch.tensor([False]), eos, None)
    assert block.tolist() == [[1, 7]] and ended.tolist() == [True]  # no pad id: tokens after EOS stay


# ---- (e) config ------------------------------------------------------------------------------------


def test_defaults_are_the_references():
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import DiffusionGemmaGenerationConfig

    ref = DiffusionGemmaGenerationConfig._get_default_generation_params()
    cfg = EntropyBoundConfig()
    assert (cfg.steps, cfg.entropy_bound, cfg.t_min, cfg.t_max, cfg.stability_threshold, cfg.confidence_threshold) == (
        ref["max_denoising_steps"], ref["sampler_config"].entropy_bound, ref["t_min"], ref["t_max"],
        ref["stability_threshold"], ref["confidence_threshold"])
    assert cfg.canvas_length == 256


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps=0 is invalid: expected an integer 1..1024"),
    ({"steps": 2.0}, "steps=2.0"),
    ({"entropy_bound": 0.0}, "entropy_bound=0.0 is invalid: expected a number > 0"),
    ({"t_min": -0.1}, "t_min=-0.1 is invalid"),
    ({"t_min": 0.8, "t_max": 0.4}, "t_max=0.4 is invalid: expected a number in (t_min=0.8, 10]"),
    ({"stability_threshold": -1}, "stability_threshold=-1"),
    ({"confidence_threshold": float("nan")}, "confidence_threshold=nan"),
    ({"canvas_length": 0}, "canvas_length=0 is invalid: expected an integer 1..4096"),
])
def test_bad_config_names_the_setting_and_the_expected_range(kwargs, message):
    with pytest.raises(RequestError) as err:
        EntropyBoundConfig(**kwargs)
    assert message in str(err.value)


# ---- the transformers adapter ----------------------------------------------------------------------

VOCAB, CANVAS = 64, 8


@dataclass
class HFCache:
    kv: Any  # transformers' DynamicCache, as generate builds it
    length: int = 0


class HFAdapter:
    """GemmaLike over DiffusionGemmaForBlockDiffusion, calling its encoder and decoder with the masks and
    int32 positions that `generate` builds (a 2D all-ones attention mask over everything cached so far)."""

    def __init__(self, hf):
        self.hf, self.vocab_size = hf, hf.config.text_config.vocab_size
        self.decoded: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (canvas, self_cond) per decode

    def encode(self, tokens, cache=None):
        from transformers.cache_utils import DynamicCache

        if cache is None:
            cache = HFCache(DynamicCache(config=self.hf.config.get_text_config(decoder=True)))
        (B, T), L = tokens.shape, cache.length
        pos = torch.arange(L, L + T, dtype=torch.int32)[None]
        encoder = self.hf.model.encoder
        mask = encoder.create_masks_for_generate(
            config=self.hf.config, inputs_embeds=torch.empty((B, T, 0), dtype=self.hf.dtype),
            attention_mask=torch.ones((B, L + T), dtype=torch.bool), cache=cache.kv, position_ids=pos)
        encoder(input_ids=tokens.contiguous(), attention_mask=mask, cache=cache.kv, position_ids=pos)
        cache.length += T
        return cache

    def decode(self, canvas, cache, self_cond=None):
        (B, C), L = canvas.shape, cache.length
        self.decoded.append((canvas.clone(), None if self_cond is None else self_cond.clone()))
        mask = self.hf.model.decoder.create_diffusion_decoder_attention_mask(
            config=self.hf.config, inputs_embeds=canvas.unsqueeze(-1), cache=cache.kv,
            decoder_attention_mask=torch.ones((B, L + C), dtype=torch.bool))
        return self.hf(decoder_input_ids=canvas, self_conditioning_logits=self_cond, decoder_attention_mask=mask,
                       cache=cache.kv, decoder_position_ids=torch.arange(L, L + C, dtype=torch.int32)[None]).logits


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("transformers")
    from transformers.models.diffusion_gemma import (DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion,
                                                     DiffusionGemmaTextConfig)
    from transformers.models.gemma4.configuration_gemma4 import Gemma4VisionConfig

    text = DiffusionGemmaTextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, global_head_dim=32, num_global_key_value_heads=1, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], num_experts=4, top_k_experts=2,
        moe_intermediate_size=16, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    vision = Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=8, position_embedding_size=64)
    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(DiffusionGemmaConfig(text_config=text, vision_config=vision,
                                                                 canvas_length=CANVAS))
    return model.eval()


def reference(hf, prompt, cfg, seed, *, max_new_tokens, eos_id, pad_id=None):
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    torch.manual_seed(seed)
    out = hf.generate(prompt, max_new_tokens=max_new_tokens, max_denoising_steps=cfg.steps,
                      sampler_config=EntropyBoundSamplerConfig(entropy_bound=float(cfg.entropy_bound)),
                      t_min=cfg.t_min, t_max=cfg.t_max, stability_threshold=cfg.stability_threshold,
                      confidence_threshold=float(cfg.confidence_threshold), eos_token_id=eos_id, pad_token_id=pad_id)
    return out.sequences[:, prompt.shape[1]:]


def ours(hf, prompt, cfg, seed, **kwargs):
    states = list(generate(HFAdapter(hf), prompt, cfg, torch.Generator().manual_seed(seed), **kwargs))
    assert states[-1].done and not any(s.done for s in states[:-1])
    steps_per_block = [sum(1 for s in states if s.block == b) for b in range(states[-1].block + 1)]
    return states[-1].tokens, steps_per_block


PROMPT = torch.tensor([[2, 17, 33, 5, 41, 9]])
SLOW = EntropyBoundConfig(steps=6, entropy_bound=0.5, canvas_length=CANVAS)  # never confident: N steps a canvas
# low temperatures make the random model sure of itself, so canvases stop early
EARLY = EntropyBoundConfig(steps=12, entropy_bound=2.0, t_min=0.01, t_max=0.02, confidence_threshold=0.5,
                           canvas_length=CANVAS)


# ---- (b) parity with transformers' generate --------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_blocks_match_transformers(hf, seed):
    kw = dict(max_new_tokens=2 * CANVAS - 3, eos_id=VOCAB)  # ceil -> 2 canvases; an EOS that never appears
    ref = reference(hf, PROMPT, SLOW, seed, **kw)
    tokens, steps = ours(hf, PROMPT, SLOW, seed, **kw)
    assert torch.equal(tokens, ref) and tokens.shape == (1, 2 * CANVAS) and steps == [6, 6]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("stability", [0, 1, 2])
def test_early_stop_matches_transformers(hf, seed, stability):
    cfg = replace(EARLY, stability_threshold=stability)
    kw = dict(max_new_tokens=3 * CANVAS, eos_id=VOCAB)
    ref = reference(hf, PROMPT, cfg, seed, **kw)
    tokens, steps = ours(hf, PROMPT, cfg, seed, **kw)
    assert torch.equal(tokens, ref) and len(steps) == 3 and min(steps) < cfg.steps  # some canvas stopped early


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eos_and_pad_match_transformers(hf, seed):
    blocks = ours(hf, PROMPT, SLOW, seed, max_new_tokens=3 * CANVAS, eos_id=VOCAB)[0][0].tolist()
    first, second = blocks[:CANVAS], blocks[CANVAS: 2 * CANVAS]
    for eos, n_blocks in [(first[3], 1), (next(t for t in second if t not in first), 2)]:
        kw = dict(max_new_tokens=3 * CANVAS, eos_id=eos, pad_id=0)
        ref = reference(hf, PROMPT, SLOW, seed, **kw)
        tokens, steps = ours(hf, PROMPT, SLOW, seed, **kw)
        assert torch.equal(tokens, ref) and len(steps) == n_blocks
        row = tokens[0].tolist()
        cut = row.index(eos)
        assert row[:cut] == blocks[:cut] and set(row[cut + 1:]) <= {0}


def test_batch_of_two_matches_transformers(hf):
    prompt = torch.cat([PROMPT, PROMPT.flip(-1)])
    kw = dict(max_new_tokens=2 * CANVAS, eos_id=VOCAB)
    states = list(generate(HFAdapter(hf), prompt, EARLY, torch.Generator().manual_seed(5), **kw))
    assert any(s.step.finished.tolist() == [True, False] for s in states)  # a stopped row waits for the other
    assert torch.equal(states[-1].tokens, reference(hf, prompt, EARLY, 5, **kw))


def test_stop_predicate_ends_after_a_committed_block(hf):
    seen = []
    tokens, steps = ours(hf, PROMPT, SLOW, 0, max_new_tokens=4 * CANVAS, eos_id=VOCAB,
                         stop=lambda ids: seen.append(len(ids)) or len(ids) >= 2 * CANVAS)
    assert seen == [CANVAS, 2 * CANVAS] and tokens.shape == (1, 2 * CANVAS) and steps == [6, 6]


# ---- (c) infill with a pinned suffix ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_pinned_suffix_stays_exactly(hf, seed):
    suffix = torch.tensor([[11, 12, 13]])
    model = HFAdapter(hf)
    states = list(generate(model, PROMPT, SLOW, torch.Generator().manual_seed(seed), max_new_tokens=64,
                           eos_id=VOCAB, suffix_ids=suffix))
    assert states[-1].done and {s.block for s in states} == {0} and len(states) == SLOW.steps
    assert states[-1].tokens.shape == (1, CANVAS - 3)  # the middle only
    for state in states:
        assert state.step.argmax[0, -3:].tolist() == [11, 12, 13] and state.step.accepted[0, -3:].all()
    for i, (canvas, sc) in enumerate(model.decoded):
        assert canvas[0, -3:].tolist() == [11, 12, 13]
        if i == 0:
            assert sc is None
        else:  # fed back one-hot on the suffix token
            probs = sc[0, -3:].softmax(-1)
            assert probs.argmax(-1).tolist() == [11, 12, 13] and torch.equal(probs.max(-1).values, torch.ones(3))


def test_suffix_must_leave_room_for_the_middle(hf):
    with pytest.raises(RequestError, match="0 < S < canvas_length=8"):
        next(generate(HFAdapter(hf), PROMPT, SLOW, torch.Generator(), max_new_tokens=8, eos_id=1,
                      suffix_ids=torch.arange(CANVAS)[None]))


# ---- (d) cancellation ------------------------------------------------------------------------------


def test_cancel_between_steps(hf):
    model, checks = HFAdapter(hf), []

    def cancel():
        checks.append(1)
        return len(checks) > 4  # 1 before the prompt encode, then one per step: fire before step 4

    gen = generate(model, PROMPT, SLOW, torch.Generator().manual_seed(0), max_new_tokens=16, eos_id=VOCAB,
                   cancel=cancel)
    got = []
    with pytest.raises(InfillCancelled):
        for state in gen:
            got.append(state.step.step)
    assert got == [0, 1, 2] and len(model.decoded) == 3
