"""Batched denoising (engine.batch) against its reference, one isolated Engine.complete after another, on
tiny random checkpoints in float32: the same tokens, steps and confidences, per request."""

import math

import pytest
import torch

from dg_lsp.engine.batch import complete_batch, complete_sequential, denoise
from dg_lsp.engine.batch_forward import Member
from dg_lsp.engine.engine import Engine, load
from dg_lsp.engine.errors import InfillCancelled, RequestError
from dg_lsp.engine.forward import CanvasForward
from dg_lsp.engine.model import KVCache
from dg_lsp.engine.prompt import build_layout
from dg_lsp.engine.request import Hole, InfillRequest, SamplerConfig

PREFIX = "import sys\n\n\ndef main(argv=None):\n    args = sys.argv[1:] if argv is None else argv\n    for name in args:\n"
SUFFIX = "\n    return 0\n"
FAMILIES = ["dg", "dream", "open-dcoder"]  # causal unshifted; bidirectional shifted (two tokenizer layouts)


def mixed_requests():
    """Different prefixes, suffixes, canvas lengths and hole counts; a prompt too long for the tiny
    model's 512 positions in the middle; a rewrite (served by the fallback) near the end."""
    return [
        InfillRequest.at_cursor(PREFIX, SUFFIX, 10),
        InfillRequest.at_cursor(PREFIX[:30], "", 3),
        InfillRequest(segments=("import os\n", "\n\ndef main():\n    ", "\n"), holes=(Hole(4), Hole(7))),
        InfillRequest.at_cursor("x = 1\n" * 400, SUFFIX, 8),
        InfillRequest.rewrite(PREFIX, "print(name)", SUFFIX, 6),
        InfillRequest.at_cursor("def f(a, b):\n    return", "\n\n\nclass Point:\n    x: float\n", 13),
    ]


@pytest.fixture(scope="module")
def engines(tiny_dirs):
    return {family: load(tiny_dirs[family], device="cpu", dtype="float32") for family in FAMILIES}


def assert_same(batched, sequential):
    assert len(batched) == len(sequential)
    for b, s in zip(batched, sequential):
        if isinstance(s, Exception):
            assert type(b) is type(s) and str(b) == str(s)
            continue
        assert (b.texts, b.steps, b.canvas_tokens, b.token_ids) == (s.texts, s.steps, s.canvas_tokens, s.token_ids)
        assert [len(t) for t in b.token_ids] == [len(c) for c in b.confidences]  # one confidence per token
        assert [len(c) for c in b.confidences] == [len(c) for c in s.confidences]
        for cb, cs in zip(b.confidences, s.confidences):
            assert cb == pytest.approx(cs, rel=1e-5, abs=1e-6)
            assert all(0.0 < p <= 1.0 for p in cb)


SAMPLERS = [
    SamplerConfig(steps=4, halt_when_stable=False),
    SamplerConfig(steps=6, confidence="margin", schedule="dream"),
    SamplerConfig(steps=5, commit="threshold", threshold=0.3, confidence="entropy", ends_in_order=False),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sampler", SAMPLERS, ids=["schedule", "margin-dream", "threshold-entropy"])
def test_batched_equals_sequential_token_for_token(engines, family, sampler):
    eng = engines[family]
    requests = mixed_requests()
    sequential = complete_sequential(eng, requests, sampler)
    batched = complete_batch(eng, requests, sampler)
    assert isinstance(batched[3], RequestError) and "longer than the model's context" in str(batched[3])
    assert all(not isinstance(o, Exception) for i, o in enumerate(batched) if i != 3)
    assert_same(batched, sequential)
    assert [len(o.confidences) for o in batched if not isinstance(o, Exception)] == [1, 1, 2, 1, 1]


@pytest.mark.parametrize("family", ["dg", "dream"])
def test_sampling_with_a_generator_per_request_matches(engines, family):
    eng = engines[family]
    requests = [r for r in mixed_requests() if not any(h.init for h in r.holes)][:3]
    sampler = SamplerConfig(steps=4, temperature=5.0, confidence="random")  # flatten the peaked random model

    def generators():
        return [torch.Generator().manual_seed(s) for s in (1, 2, 3)]

    assert_same(complete_batch(eng, requests, sampler, generators=generators()),
                complete_sequential(eng, requests, sampler, generators=generators()))


@pytest.mark.parametrize("family", ["dg", "open-dcoder"])
def test_a_cancelled_request_gets_its_exception_and_the_others_go_on(engines, family):
    eng = engines[family]
    requests = [InfillRequest.at_cursor(PREFIX, SUFFIX, 10), InfillRequest.at_cursor(PREFIX[:40], SUFFIX, 12),
                InfillRequest.at_cursor("def f(a, b):\n    return", "\n", 9)]
    sampler = SamplerConfig(steps=5, halt_when_stable=False)

    def run(path):
        polls = {0: 0, 1: 0, 2: 0}

        def check(i):
            def cancel():
                polls[i] += 1
                return i == 1 and polls[i] > 2  # the middle request stops before its third step
            return cancel

        return path(eng, requests, sampler, cancels=[check(i) for i in range(3)]), polls

    (batched, polls_b), (sequential, polls_s) = run(complete_batch), run(complete_sequential)
    assert isinstance(batched[1], InfillCancelled) and batched[0].steps == batched[2].steps == 5
    assert polls_b == polls_s == {0: 5, 1: 3, 2: 5}  # polled before every step, as Engine polls
    assert_same(batched, sequential)


@pytest.mark.parametrize("family", ["dg", "dream"])
def test_finished_requests_leaving_the_batch_or_staying_as_padding_agree(engines, family):
    eng = engines[family]
    requests = [InfillRequest.at_cursor(PREFIX, SUFFIX, 10), InfillRequest.at_cursor(PREFIX[:40], SUFFIX, 3),
                InfillRequest.at_cursor("def f(a, b):\n    return", "\n", 7)]
    sampler = SamplerConfig(steps=6, commit="threshold", threshold=0.5)

    def members():
        return [Member(eng, build_layout(r, eng.tokenizer, eng.cfg), sampler, None, None) for r in requests]

    compact, padded = denoise(eng, members(), compact=True), denoise(eng, members(), compact=False)
    assert_same(compact, padded)
    assert_same(compact, complete_sequential(eng, requests, sampler))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_engine_context_cache_is_neither_read_nor_written(tiny_dirs, engines, family):
    eng = engines[family]
    sampler = SamplerConfig(steps=3)
    primed = InfillRequest.at_cursor(PREFIX, SUFFIX, 6)
    eng.context.clear()
    before = eng.complete(primed, sampler)
    cache = eng.context
    tokens, kv = cache.tokens, cache.kv
    for path in (complete_batch, complete_sequential):
        path(eng, mixed_requests(), sampler)
        assert eng.context is cache and cache.tokens == tokens and cache.kv is kv
    assert eng.complete(primed, sampler).texts == before.texts  # the whole context reused, as before
    eng.context.clear()
    other = InfillRequest.at_cursor("def f(a, b):\n    return", "\n", 5)
    complete_batch(eng, mixed_requests(), sampler)
    assert eng.context.kv is None
    fresh = load(tiny_dirs[family], device="cpu", dtype="float32")
    assert eng.complete(other, sampler).texts == fresh.complete(other, sampler).texts


def test_outcomes_keep_request_order_and_mismatched_lists_are_refused(engines):
    eng = engines["dg"]
    with pytest.raises(ValueError, match="3 requests, 2 cancel checks"):
        complete_batch(eng, mixed_requests()[:3], SamplerConfig(), cancels=[None, None])
    assert complete_batch(eng, [], SamplerConfig()) == []


@pytest.mark.parametrize("family", ["dg", "dream"])
def test_padded_denoise_matches_denoise_per_request(engines, family):
    """Transformer.denoise_padded against its reference, Transformer.denoise one request at a time:
    requests of 5, 17 and 9 context rows and 3, 8 and 1 canvas rows; whatever the padding holds is
    never read (it is filled with large values here), whether padding rows run or are skipped."""
    eng = engines[family]
    model, cfg = eng.model, eng.cfg
    gen = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (17, 8), (9, 1)]
    width = max(n + c for n, c in shapes) + 1
    cache = KVCache([torch.randn(3, cfg.num_key_value_heads, width, cfg.head_dim, generator=gen) * 50
                     for _ in range(cfg.num_hidden_layers)],
                    [torch.randn(3, cfg.num_key_value_heads, width, cfg.head_dim, generator=gen) * 50
                     for _ in range(cfg.num_hidden_layers)])
    key_mask = torch.zeros(3, width, dtype=torch.bool)
    rows = max(c for _, c in shapes)
    tokens = torch.zeros(3, rows, dtype=torch.long)
    positions = torch.zeros(3, rows, dtype=torch.long)
    slots = torch.full((3, rows), width - 1)
    expected = []
    with torch.inference_mode():
        for b, (n, c) in enumerate(shapes):
            ctx_tokens = torch.randint(5, cfg.vocab_size, (1, n), generator=gen)
            ctx = model.encode(ctx_tokens, torch.arange(n)[None])
            for layer in range(cfg.num_hidden_layers):
                cache.k[layer][b, :, :n] = ctx.k[layer][0]
                cache.v[layer][b, :, :n] = ctx.v[layer][0]
            key_mask[b, : n + c] = True
            row_tokens = torch.randint(0, cfg.vocab_size, (c,), generator=gen)
            tokens[b, :c], positions[b, :c], slots[b, :c] = row_tokens, torch.arange(n, n + c), torch.arange(n, n + c)
            expected.append(model.denoise(row_tokens[None], torch.arange(n, n + c)[None], ctx)[0])
        real = torch.arange(rows)[None] < torch.tensor([c for _, c in shapes])[:, None]
        cache_before = KVCache([k.clone() for k in cache.k], [v.clone() for v in cache.v])
        packed = model.denoise_padded(tokens, positions, cache, slots, key_mask, real)  # padding rows skipped
        assert all(torch.equal(a[:, :, -1], b[:, :, -1]) for a, b in zip(cache.k, cache_before.k))  # scratch unwritten
        hidden = model.denoise_padded(tokens, positions, cache, slots, key_mask)  # padding rows run too
    for b, (n, c) in enumerate(shapes):
        assert torch.allclose(hidden[b, :c], expected[b], rtol=1e-4, atol=1e-5), f"request {b}"
        assert torch.allclose(packed[b, :c], expected[b], rtol=1e-4, atol=1e-5), f"request {b}, packed"
        assert not packed[b, c:].any()


def test_confidences_are_the_commit_steps_max_prob(engines):
    """One step commits the whole canvas: each token's confidence is its max-prob under that forward."""
    eng = Engine(engines["dg"].model, engines["dg"].tokenizer, engines["dg"].cfg)
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 9)
    result = eng.complete(request, SamplerConfig(steps=1))
    layout = build_layout(request, eng.tokenizer, eng.cfg)
    with torch.inference_mode():
        probs = CanvasForward(Engine(eng.model, eng.tokenizer, eng.cfg), layout).logits().softmax(-1).max(-1).values
    (conf,) = result.confidences
    assert len(conf) <= 9 and conf == pytest.approx(probs[: len(conf)].tolist(), rel=1e-6)
    (batched,) = complete_batch(eng, [request], SamplerConfig(steps=1))[0].confidences
    assert batched == pytest.approx(conf, rel=1e-5)


def test_a_kept_rewrite_token_has_the_model_probability_of_it(engines):
    eng = engines["dg"]
    sel = "print(name)"
    n = len(eng.tokenizer.encode(sel))
    text = PREFIX + "        " + sel + SUFFIX
    start = len(PREFIX) + 8
    result = eng.complete(InfillRequest.rewrite(text[:start], sel, text[start + len(sel):], n),
                          SamplerConfig(steps=2, strength=0.0))
    scored = [p for _, _, p in eng.score(text, start, start + len(sel))]
    assert result.text == sel and result.confidences[0] == pytest.approx(scored, rel=1e-6)
    assert not any(math.isnan(p) for p in result.confidences[0])


@pytest.mark.parametrize("sampler", [
    SamplerConfig(steps=4, commit="renoise"),
    SamplerConfig(steps=4, temperature=1.0, top_p=0.5),
    SamplerConfig(steps=4, block_length=4),
], ids=["renoise", "top-p", "blocks"])
def test_what_does_not_batch_is_served_one_by_one_all_the_same(engines, sampler):
    eng = engines["dg"]
    requests = mixed_requests()

    def generators():
        return [torch.Generator().manual_seed(s) for s in range(len(requests))]

    batched = complete_batch(eng, requests, sampler, generators=generators())
    assert_same(batched, complete_sequential(eng, requests, sampler, generators=generators()))
    assert all(len(o.confidences) == len(o.texts) for o in batched if not isinstance(o, Exception))


def test_variable_length_checkpoints_are_served_one_by_one(tmp_path):
    from dg_lsp.engine.testing import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path / "dreamon", "dream", seed=1, extra_specials=("<|expand|>", "<|delete|>"))
    eng = load(path, device="cpu", dtype="float32")
    assert eng.cfg.variable_length
    requests = [InfillRequest.at_cursor(PREFIX, SUFFIX, 4),
                InfillRequest.at_cursor("def f(a, b):\n    return", "\n", 3)]
    sampler = SamplerConfig(steps=3, max_canvas=8)
    batched = complete_batch(eng, requests, sampler)
    assert_same(batched, complete_sequential(eng, requests, sampler))
    assert all(o.confidences == () for o in batched)  # not tracked through expand/delete


def test_frozen_canvas_rows_of_a_causal_family_with_approximate_reuse(engines):
    """context_reuse="approximate" freezes committed canvas rows in a causal family too (engine.forward)."""
    base = engines["dg"]
    eng = Engine(base.model, base.tokenizer, base.cfg, context_reuse="approximate")
    sampler = SamplerConfig(steps=5, halt_when_stable=False)
    assert_same(complete_batch(eng, mixed_requests(), sampler), complete_sequential(eng, mixed_requests(), sampler))


@pytest.mark.parametrize("family", ["dg", "dream"])  # batched after the probe; the fallback's whole way
def test_a_canvas_length_probe_gives_the_same_layouts_and_fills(engines, family):
    eng = engines[family]
    requests = [r for r in mixed_requests() if not any(h.init for h in r.holes)]
    sampler = SamplerConfig(steps=4, canvas_length="probe")
    polls = []

    def cancels():
        return [lambda: polls.append(1) and False for _ in requests]

    batched = complete_batch(eng, requests, sampler, cancels=cancels())
    batched_polls, polls[:] = len(polls), []
    assert_same(batched, complete_sequential(eng, requests, sampler, cancels=cancels()))
    assert batched_polls == len(polls)


def test_an_engine_that_refreshes_its_context_serves_one_by_one(engines):
    base = engines["dream"]
    eng = Engine(base.model, base.tokenizer, base.cfg, refresh_context_every=2)
    sampler = SamplerConfig(steps=4, halt_when_stable=False)
    assert_same(complete_batch(eng, mixed_requests(), sampler), complete_sequential(eng, mixed_requests(), sampler))
