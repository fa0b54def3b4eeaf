"""lm_head_epilogue: Triton launcher vs kernels.naive; Gumbel sampling checked in distribution."""

import pytest
import torch

from dg_lsp.kernels import naive, triton_available

ON_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_CUDA else "cpu")
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
# the statistics are fp32 in both paths, from the same (rounded) inputs: only summation order differs,
# which moves a logit by ~1e-5 at D = 3584 (the CUDA shapes); a wrong statistic is off by O(1)
TOL = {"max_prob": 5e-5, "margin": 2e-4, "entropy": 5e-5, "sample_prob": 5e-5}

# (R, V, D): odd vocabularies leave a masked tail tile
SHAPES = [(1, 500, 32), (15, 257, 64), (63, 130, 32)]
if ON_CUDA:
    SHAPES += [(300, 4099, 96), (1, 151_936, 896), (64, 152_064, 3584), (300, 32_000, 4096)]


def _inputs(r, v, d, dtype, seed=0, scale=3.0):
    """hidden @ weight.T has logits of std ~scale: peaked enough for a real top-1, spread enough for entropy."""
    g = torch.Generator(DEVICE).manual_seed(seed)  # on the device: CUDA shapes reach 152k x 3584
    hidden = torch.randn(r, d, generator=g, device=DEVICE)
    weight = torch.randn(v, d, generator=g, device=DEVICE) * (scale / d**0.5)
    return hidden.to(dtype), weight.to(dtype)


def _ref_probs(hidden, weight, temperature, softcap):
    logits = hidden.float() @ weight.float().T
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return (logits / (temperature or 1.0)).softmax(-1), logits


def _check(stats, hidden, weight, temperature, softcap, assert_close):
    ref = naive.lm_head_epilogue(hidden, weight, temperature=temperature, softcap=softcap)
    probs, logits = _ref_probs(hidden, weight, temperature, softcap)
    for name in ("max_prob", "margin", "entropy"):
        assert_close(name, getattr(stats, name), getattr(ref, name), TOL[name])
    # argmax: exact unless two logits tie within fp32 accumulation noise
    at_argmax = logits.gather(1, stats.argmax[:, None])[:, 0]
    assert (at_argmax >= logits.max(1).values - 1e-4 * logits.abs().max()).all(), "argmax: not a top logit"
    assert (stats.argmax == ref.argmax).float().mean() > 0.95, "argmax: disagrees on many rows"
    assert ((stats.sample >= 0) & (stats.sample < weight.shape[0])).all(), "sample: out of range"
    assert_close("sample_prob", stats.sample_prob, probs.gather(1, stats.sample[:, None])[:, 0], TOL["sample_prob"])
    if temperature == 0:
        assert torch.equal(stats.sample, stats.argmax), "sample: must be the argmax at temperature 0"


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("temperature,softcap", [(0.0, None), (0.0, 30.0), (0.7, 5.0)])
def test_epilogue_matches_naive(dtype, shape, temperature, softcap, assert_close):
    from dg_lsp.kernels.epilogue import lm_head_epilogue

    hidden, weight = _inputs(*shape, dtype)
    stats = lm_head_epilogue(hidden, weight, temperature=temperature, softcap=softcap, seed=11)
    _check(stats, hidden, weight, temperature, softcap, assert_close)


@needs_triton
@pytest.mark.parametrize("block_v,tiles_per_chunk", [(32, 1), (16, 5), (64, 100)])
def test_epilogue_vocab_chunking(block_v, tiles_per_chunk, assert_close):
    """Many chunks, multi-tile chunks and a single chunk all merge to the same statistics (70 rows:
    two row blocks, the second one mostly padding)."""
    from dg_lsp.kernels.epilogue import _lm_head_epilogue

    hidden, weight = _inputs(70, 200, 32, torch.float32, seed=2)
    stats = _lm_head_epilogue(hidden, weight, temperature=0.9, seed=4, block_v=block_v,
                              tiles_per_chunk=tiles_per_chunk)
    _check(stats, hidden, weight, 0.9, None, assert_close)


@needs_triton
def test_epilogue_ties_go_to_lowest_token_id():
    """Duplicate LM-head rows tie exactly: argmax is the first, margin is 0 (as torch.argmax/topk)."""
    from dg_lsp.kernels.epilogue import _lm_head_epilogue

    hidden, weight = _inputs(4, 200, 32, torch.float32, seed=9)
    weight[150:154] = 0  # logit 0: never the argmax, so `best` lies outside the rows overwritten next
    best = (hidden @ weight.T).argmax(1).tolist()
    weight[150:154] = weight[best]  # token 150 + i duplicates row i's argmax, across a chunk boundary
    stats = _lm_head_epilogue(hidden, weight, block_v=16, tiles_per_chunk=2)
    ref = naive.lm_head_epilogue(hidden, weight)
    # row i's top tokens: its argmax and every 150 + j that copies the same weight row
    lowest = [min([b] + [150 + j for j, bj in enumerate(best) if bj == b]) for b in best]
    lowest = torch.tensor(lowest, device=DEVICE)
    assert torch.equal(stats.argmax, lowest) and torch.equal(ref.argmax, lowest)
    assert torch.all(stats.margin == 0) and torch.all(ref.margin == 0)


def _chi_square(samples: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson statistic over tokens with >= 5 expected draws (the rest lumped into one bin)."""
    n = samples.numel()
    counts = torch.bincount(samples.cpu(), minlength=probs.numel()).double()
    expected = n * probs.cpu().double()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    return (((obs - exp) ** 2)[keep] / exp[keep]).sum().item()


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=needs_triton), "naive"])
def test_epilogue_sample_distribution(impl):
    """2048 identical rows: sample frequencies follow softmax(logits / T). Fixed seeds make this
    deterministic; the bound (chi-square 60 on ~10 bins, p < 1e-8) leaves a wide margin."""
    if impl == "triton":
        from functools import partial

        from dg_lsp.kernels.epilogue import _lm_head_epilogue

        fn = partial(_lm_head_epilogue, block_v=16)  # V = 12: a 16-wide tile, 4x less interpreter work
    else:
        fn = naive.lm_head_epilogue
    hidden = torch.zeros(2048, 32, device=DEVICE)
    hidden[:, 0] = 1.0
    weight = torch.zeros(12, 32, device=DEVICE)
    weight[:, 0] = torch.tensor([0.5, -1.0, 1.2, 0.0, -2.5, 0.9, 0.3, -0.4, 1.1, -1.6, 0.6, 0.1])  # the logits
    stats = fn(hidden, weight, temperature=0.8, softcap=4.0, seed=1234)
    probs, _ = _ref_probs(hidden[:1], weight, 0.8, 4.0)
    chi2 = _chi_square(stats.sample, probs[0])
    assert chi2 < 60, f"sample: chi-square {chi2:.1f} against the reference probabilities"
    torch.testing.assert_close(stats.sample_prob, probs[0][stats.sample], rtol=1e-5, atol=1e-7)
    other = fn(hidden[:64], weight, temperature=0.8, softcap=4.0, seed=1235)
    assert not torch.equal(other.sample, stats.sample[:64]), "sample: the seed must change the draw"


def test_naive_epilogue_is_softmax_stats():
    """The reference matches the textbook definitions on a tiny example."""
    hidden, weight = (t.cpu() for t in _inputs(3, 7, 8, torch.float32, seed=1))
    stats = naive.lm_head_epilogue(hidden, weight, temperature=0.5)
    p = (hidden @ weight.T / 0.5).softmax(-1)
    top = p.sort(-1, descending=True).values
    torch.testing.assert_close(stats.max_prob, top[:, 0])
    torch.testing.assert_close(stats.margin, top[:, 0] - top[:, 1])
    torch.testing.assert_close(stats.entropy, -(p * p.log()).sum(-1))
    assert torch.equal(stats.argmax, p.argmax(-1))


@needs_triton
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_banned_token_is_never_proposed_and_takes_no_mass(temperature, assert_close):
    """The mask token leaves the distribution: ban each row's own argmax and the stats renormalise."""
    from dg_lsp.kernels.epilogue import _lm_head_epilogue

    hidden, weight = _inputs(1, 300, 32, torch.float32, seed=5)
    banned = int((hidden @ weight.T).argmax())
    fast = _lm_head_epilogue(hidden, weight, temperature=temperature, seed=3, banned=banned, block_v=32,
                             tiles_per_chunk=2)
    ref = naive.lm_head_epilogue(hidden, weight, temperature=temperature, seed=3, banned=banned)
    kept = torch.cat([weight[:banned], weight[banned + 1:]])
    without = naive.lm_head_epilogue(hidden, kept, temperature=temperature)
    for name in ("max_prob", "margin", "entropy"):
        assert_close(name, getattr(fast, name), getattr(without, name), TOL[name])
        assert_close(name, getattr(ref, name), getattr(without, name), TOL[name])
    assert int(fast.argmax) != banned and int(ref.argmax) != banned
    assert int(fast.sample) != banned and int(ref.sample) != banned
