"""Context K/V reuse across requests (engine.context_cache): what is reused, what stays exact, how far the
approximation goes, and that it cannot pile up."""

import pytest
import torch

from dg_lsp.engine.context_cache import ContextCache, shift_keys
from dg_lsp.engine.engine import load
from dg_lsp.engine.model import KVCache, rope_cos_sin
from dg_lsp.engine.request import InfillRequest, SamplerConfig
from dg_lsp.kernels import naive

PREFIX = "import sys\n\n\ndef main(argv=None):\n    args = sys.argv[1:] if argv is None else argv\n    for name in args:\n"
SUFFIX = "\n        print(name)\n    return 0\n\n\nif __name__ == '__main__':\n    main()\n"
SAMPLER = SamplerConfig(steps=4, halt_when_stable=False)


def _cache_with(tokens, positions):
    kv = KVCache([torch.arange(len(tokens), dtype=torch.float32).reshape(1, 1, -1, 1).expand(1, 1, -1, 2).clone()],
                 [torch.zeros(1, 1, len(tokens), 2)])
    cache = ContextCache()
    cache.store(tuple(tokens), tuple(positions), kv, age=0)
    return cache


def test_plan_finds_the_common_lead_and_the_moved_tail():
    cache = _cache_with([1, 5, 6, 7, 8, 9], [0, 1, 2, 13, 14, 15])
    # one token typed after the first three: the last three moved by one position
    plan = cache.plan((1, 5, 6, 4, 7, 8, 9), (0, 1, 2, 3, 14, 15, 16), allow_tail=True)
    assert (plan.lead, plan.tail, plan.shift, list(plan.middle)) == (3, 3, 1, [3])
    # exact reuse (causal family): only the lead
    plan = cache.plan((1, 5, 6, 4, 7, 8, 9), (0, 1, 2, 3, 14, 15, 16), allow_tail=False)
    assert (plan.lead, plan.tail, list(plan.middle)) == (3, 0, [3, 4, 5, 6])
    # a tail whose rows did not all move by the same amount stops where the shift changes
    plan = cache.plan((1, 5, 6, 4, 7, 8, 9), (0, 1, 2, 3, 13, 15, 16), allow_tail=True)
    assert (plan.lead, plan.tail) == (3, 2)


def test_plan_recomputes_when_little_is_shared_or_the_reuse_is_old():
    cache = _cache_with([1, 2, 3, 4, 5, 6], list(range(6)))
    assert cache.plan((1, 9, 9, 9, 9, 6), tuple(range(6)), allow_tail=True).lead == 0  # 2 of 6 rows < half
    cache.age = cache.max_reuse
    plan = cache.plan((1, 2, 3, 9, 5, 6), tuple(range(6)), allow_tail=True)
    assert (plan.lead, plan.tail) == (3, 0)  # too many approximations in a row: the tail is not reused


def test_shifted_keys_equal_keys_rotated_at_the_new_position():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(1, 2, 5, 16, generator=g)
    pos = torch.arange(40, 45)[None]
    at = lambda p: naive.rope(k, *rope_cos_sin(p, 16, 10000.0, torch.float32))  # noqa: E731
    for shift in (1, -3, 250):
        assert torch.allclose(shift_keys(at(pos), shift, 10000.0), at(pos + shift), atol=1e-5)
    assert shift_keys(at(pos), 0, 10000.0) is not None


@pytest.mark.parametrize("family", ["dg", "open-dcoder"])
def test_approximate_reuse_moves_the_tail_exactly_and_encodes_only_the_edit(tiny_dirs, family, monkeypatch):
    """Layer 0's K/V depend on the token and its position only: after an edit, every reused row (lead and
    moved tail) must hold exactly what a full recompute writes there; deeper layers differ only by the
    approximation."""
    warm = load(tiny_dirs[family], device="cpu", context_reuse="approximate")
    cold = load(tiny_dirs[family], device="cpu", context_reuse="exact")
    warm.complete(InfillRequest.at_cursor(PREFIX, SUFFIX, 8), SAMPLER)
    encoded = []
    original = warm.model.encode
    monkeypatch.setattr(warm.model, "encode", lambda t, p, past=None: encoded.append(t.shape[1]) or original(t, p, past))
    edited = PREFIX + "        if not name:\n            continue\n"
    warm.complete(InfillRequest.at_cursor(edited, SUFFIX, 8), SAMPLER)
    cold.complete(InfillRequest.at_cursor(edited, SUFFIX, 8), SAMPLER)
    a, b = warm.context, cold.context
    assert a.tokens == b.tokens and a.positions == b.positions and a.age == 1 and b.age == 0
    assert torch.allclose(a.kv.k[0], b.kv.k[0], atol=1e-5) and torch.allclose(a.kv.v[0], b.kv.v[0], atol=1e-6)
    n_suffix = len(warm.tokenizer.encode(SUFFIX))
    if family == "dg":  # causal: the lead is exact at every layer; only the typed tokens were encoded
        lead = len(warm.tokenizer.encode(PREFIX)) - 2
        assert torch.allclose(a.kv.k[-1][:, :, :lead], b.kv.k[-1][:, :, :lead], atol=1e-5)
        assert encoded and sum(encoded) < len(warm.tokenizer.encode(edited)) - len(warm.tokenizer.encode(PREFIX)) + 3
        assert not torch.allclose(a.kv.k[-1][:, :, -n_suffix:], b.kv.k[-1][:, :, -n_suffix:], atol=1e-5)
    else:  # bidirectional: the edit ran beside the canvas in the first forward, nothing was encoded apart
        assert encoded == []


def test_bidirectional_warm_logits_track_the_edit(tiny_dirs):
    """The approximation is close: the first step's logits after an edit are much nearer to a full recompute
    than to the logits before the edit."""
    def first_logits(eng, prefix):
        from dg_lsp.engine.forward import CanvasForward
        from dg_lsp.engine.prompt import build_layout

        return CanvasForward(eng, build_layout(InfillRequest.at_cursor(prefix, SUFFIX, 8), eng.tokenizer, eng.cfg)).logits()

    edited = PREFIX + "        total = 0\n"
    warm = load(tiny_dirs["open-dcoder"], device="cpu", dtype="float64")
    cold = load(tiny_dirs["open-dcoder"], device="cpu", dtype="float64", context_reuse="exact")
    before = first_logits(warm, PREFIX)
    approx, exact = first_logits(warm, edited), first_logits(cold, edited)
    assert warm.context.age == 1
    finite = torch.isfinite(exact)  # the mask token's column is -inf in all three

    def err(x):
        return ((x - exact)[finite].norm() / exact[finite].norm()).item()

    assert err(approx) < 0.5 * err(before)


def test_same_request_twice_gives_the_cold_answer_for_every_family(tiny_dirs):
    for family in ("dg", "dream", "llada", "open-dcoder"):
        eng = load(tiny_dirs[family], device="cpu", dtype="float64")
        request = InfillRequest.at_cursor(PREFIX, SUFFIX, 8)
        first = eng.complete(request, SAMPLER).texts
        assert eng.complete(request, SAMPLER).texts == first, family


def test_approximations_in_a_row_end_in_an_exact_recompute(tiny_dirs):
    eng = load(tiny_dirs["dream"], device="cpu")
    eng.context.max_reuse = 3
    ages = []
    for n in range(6):
        eng.complete(InfillRequest.at_cursor(PREFIX + "        x = 1\n" * n, SUFFIX, 6), SAMPLER)
        ages.append(eng.context.age)
    assert ages == [0, 1, 2, 3, 0, 1]


def test_context_reuse_setting_is_checked(tiny_dirs):
    with pytest.raises(Exception, match="context_reuse='sometimes'"):
        load(tiny_dirs["dg"], device="cpu", context_reuse="sometimes")


def _rows_per_step(eng, monkeypatch, request, sampler):
    rows = []
    original = eng.model.denoise

    def spy(tokens, positions, ctx, ctx_len=None, keep=None):
        rows.append(tokens.shape[1])
        return original(tokens, positions, ctx, ctx_len, keep)

    monkeypatch.setattr(eng.model, "denoise", spy)
    states = list(eng.infill(request, sampler))
    return rows, states


@pytest.mark.parametrize("family", ["open-dcoder", "llada"])
def test_committed_canvas_rows_stop_running_under_approximate_reuse(tiny_dirs, family, monkeypatch):
    """A position committed at one step runs once more with its token, then its K/V join the cache: the rows
    run per step shrink; the first two steps are the same as without freezing, and the canvas completes."""
    request = InfillRequest.at_cursor(PREFIX, SUFFIX, 12)
    sampler = SamplerConfig(steps=4, halt_when_stable=False)
    frozen = load(tiny_dirs[family], device="cpu", dtype="float64", context_reuse="approximate")
    rows, states = _rows_per_step(frozen, monkeypatch, request, sampler)
    plain = load(tiny_dirs[family], device="cpu", dtype="float64", context_reuse="exact")
    reference = list(plain.infill(request, sampler))
    shift = 1 if frozen.cfg.family.shift_logits else 0
    assert rows[0] == 12 + shift  # first step after the full forward: every canvas row (+ the row before)
    assert rows == sorted(rows, reverse=True) and rows[-1] < rows[0]
    for a, b in zip(states[:2], reference[:2]):
        assert torch.equal(a.canvas, b.canvas)
    assert not states[-1].masked.any() and frozen.cfg.mask_id not in states[-1].canvas.tolist()
    agree = (states[-1].canvas == reference[-1].canvas).float().mean().item()
    assert agree >= 0.5  # approximate: most positions still agree on a random model


def test_exact_reuse_never_freezes(tiny_dirs, monkeypatch):
    eng = load(tiny_dirs["dg"], device="cpu")
    rows, _ = _rows_per_step(eng, monkeypatch, InfillRequest.at_cursor(PREFIX, SUFFIX, 12),
                             SamplerConfig(steps=4, halt_when_stable=False))
    assert rows == [12] * 4
