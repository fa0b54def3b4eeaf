"""DiffusionGemma's shapes through the kernels: canvas attention at head dims 256 (sliding layers) and 512
(full layers) with scale 1.0 (q and k are RMS-normed), and the LM head with the final logit softcap 30.

Without a GPU the Triton kernels run under the interpreter on tiny shapes (a few rows, ctx 0 / 1 / 17); on
CUDA the same tests take the model's shapes (hidden 2816, vocab 262144, canvas 256, ctx 2048).
"""

import pytest
import torch

from dg_lsp.kernels import cpu, naive, triton_available

ON_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_CUDA else "cpu")
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
# scale 1.0 on unit-variance q, k: scores of std sqrt(D) ~ 22, a near one-hot softmax, so a score's fp32
# rounding moves the output a little more than at D ** -0.5; bf16: the interpreter's casts truncate
TOL = {torch.float32: 5e-5, torch.bfloat16: 1.6e-2}
CPU_TOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2}  # torch's fused attention: fp32 softmax, one rounding
HEADS = [(8, 2), (16, 8)]  # (q heads, kv heads): GQA groups of 4 and 2
# (canvas rows, valid context rows); the cache holds 3 more rows of garbage
SIZES = [(2, 0), (3, 1), (2, 17)] + ([(256, 2048)] if ON_CUDA else [])


def _inputs(hq, hkv, c, n_ctx, d, dtype, device=DEVICE, seed=0):
    """q/k/v with unit variance (as RMS-normed ones); spare cache rows hold large garbage to be ignored."""
    g = torch.Generator(device).manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, device=device)  # noqa: E731
    cap = n_ctx + 3
    q = randn(1, hq, c, d)
    k_ctx, v_ctx = randn(2, 1, hkv, cap, d)
    k_ctx[:, :, n_ctx:] *= 30
    v_ctx[:, :, n_ctx:] *= 1e3
    k_can, v_can = randn(2, 1, hkv, c, d)
    return [t.to(dtype) for t in (q, k_ctx, v_ctx, k_can, v_can)]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"C{s[0]}-ctx{s[1]}")
@pytest.mark.parametrize("heads", HEADS, ids=lambda h: f"{h[0]}q{h[1]}kv")
@pytest.mark.parametrize("head_dim", [256, 512])
def test_triton_attention_at_gemma_head_dims(head_dim, heads, size, dtype, assert_close):
    from dg_lsp.kernels.attention import canvas_attention

    (hq, hkv), (c, n) = heads, size
    q, k_ctx, v_ctx, k_can, v_can = _inputs(hq, hkv, c, n, head_dim, dtype)
    out = canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 1.0, n)
    assert_close("out", out, naive.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 1.0, n), TOL[dtype])


@needs_triton
@pytest.mark.parametrize("num_splits", [2, 9])
def test_triton_attention_512_key_splits(num_splits, assert_close):
    """Flash-decoding splits at head dim 512: 9 splits merge in two 256-wide head-dim slices, most of them
    empty at this context length; ctx_len from a device tensor (CUDA-graph replay) and K = V (full layers
    have no v_proj) on the way."""
    from dg_lsp.kernels.attention import _canvas_attention

    q, k_ctx, _, k_can, _ = _inputs(8, 2, 3, 17, 512, torch.float32, seed=1)
    n = torch.tensor(17, device=DEVICE)
    out = _canvas_attention(q, k_ctx, k_ctx, k_can, k_can, 1.0, n, num_splits=num_splits, block_n=16)
    assert_close("out", out, naive.canvas_attention(q, k_ctx, k_ctx, k_can, k_can, 1.0, 17), TOL[torch.float32])


@needs_triton
@pytest.mark.parametrize("head_dim", [96, 1024])
def test_triton_attention_refuses_other_head_dims(head_dim):
    from dg_lsp.kernels.attention import canvas_attention

    q, k_ctx, v_ctx, k_can, v_can = _inputs(2, 1, 2, 1, head_dim, torch.float32)
    with pytest.raises(ValueError, match=f"head dims .*got {head_dim}.*naive"):
        canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 1.0, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("size", [(2, 0), (3, 1), (17, 17), (64, 300)], ids=lambda s: f"C{s[0]}-ctx{s[1]}")
@pytest.mark.parametrize("heads", HEADS, ids=lambda h: f"{h[0]}q{h[1]}kv")
@pytest.mark.parametrize("head_dim", [256, 512])
def test_cpu_attention_at_gemma_head_dims(head_dim, heads, size, dtype, assert_close):
    (hq, hkv), (c, n) = heads, size
    q, k_ctx, v_ctx, k_can, v_can = _inputs(hq, hkv, c, n, head_dim, dtype, device=torch.device("cpu"))
    for ctx_len in (n, torch.tensor(n)):
        out = cpu.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 1.0, ctx_len)
        ref = naive.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 1.0, ctx_len)
        assert_close("out", out, ref, CPU_TOL[dtype])


# ---- LM head: final logit softcap 30 -------------------------------------------------------------------

EPI_TOL = {"max_prob": 5e-5, "margin": 2e-4, "entropy": 5e-5, "sample_prob": 5e-5}  # as test_epilogue.py
# (R, V, D): odd vocabularies leave a masked tail tile; D = 2816 / 32 and / 64 keeps a partial K tile
EPI_SHAPES = [(1, 1001, 88), (7, 3001, 44)]
if ON_CUDA:
    EPI_SHAPES += [(1, 262_144, 2816), (256, 262_144, 2816), (64, 262_147, 2816)]


def _head(r, v, d, dtype, logit_std, seed=0):
    g = torch.Generator(DEVICE).manual_seed(seed)
    hidden = torch.randn(r, d, generator=g, device=DEVICE)
    weight = torch.randn(v, d, generator=g, device=DEVICE) * (logit_std / d**0.5)
    return hidden.to(dtype), weight.to(dtype)


def _check_stats(stats, ref, assert_close):
    for name in ("max_prob", "margin", "entropy"):
        assert_close(name, getattr(stats, name), getattr(ref, name), EPI_TOL[name])
    assert (stats.argmax == ref.argmax).float().mean() > 0.95, "argmax: disagrees on many rows"


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("logit_std", [3.0, 20.0])  # 20: the top logits sit well into the cap's bend
@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("shape", EPI_SHAPES, ids=str)
def test_epilogue_softcap_30(shape, temperature, logit_std, dtype, assert_close):
    from dg_lsp.kernels.epilogue import lm_head_epilogue

    hidden, weight = _head(*shape, dtype, logit_std)
    stats = lm_head_epilogue(hidden, weight, temperature=temperature, softcap=30.0, seed=7, banned=0)
    ref = naive.lm_head_epilogue(hidden, weight, temperature=temperature, softcap=30.0, seed=7, banned=0)
    _check_stats(stats, ref, assert_close)
    logits = 30.0 * torch.tanh(hidden.float() @ weight.float().T / 30.0)
    logits[:, 0] = float("-inf")
    probs = (logits / (temperature or 1.0)).softmax(-1)
    assert_close("sample_prob", stats.sample_prob, probs.gather(1, stats.sample[:, None])[:, 0], EPI_TOL["sample_prob"])
    assert not (stats.sample == 0).any(), "sample: the banned token was proposed"


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the interpreter's numpy: on purpose
def test_epilogue_softcap_saturates_like_tanh(assert_close):
    """Logits far past the cap (exp(2 * logit / 30) overflows fp32 above ~1330) land on +-30, as tanh does."""
    from dg_lsp.kernels.epilogue import _lm_head_epilogue

    raw = torch.tensor([-5000.0, -40.0, 0.0, 10.0, 29.0, 40.0, 1e4, 3e4, 31.0], device=DEVICE)
    weight = torch.zeros(raw.numel(), 16, device=DEVICE)
    weight[:, 0] = raw
    hidden = torch.zeros(2, 16, device=DEVICE)
    hidden[0, 0], hidden[1, 0] = 1.0, 0.01  # row 1: every logit well inside the cap
    for temperature in (0.0, 1.5):
        stats = _lm_head_epilogue(hidden, weight, temperature=temperature, softcap=30.0, block_v=16)
        ref = naive.lm_head_epilogue(hidden, weight, temperature=temperature, softcap=30.0)
        _check_stats(stats, ref, assert_close)
        assert stats.argmax.tolist() == ref.argmax.tolist() == [6, 7]
