"""canvas_attention: Triton launcher vs kernels.naive, and kernels.naive vs torch SDPA."""

import pytest
import torch
import torch.nn.functional as F

from dg_lsp.kernels import naive, triton_available

ON_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_CUDA else "cpu")
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
TOL = {torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}  # bf16: interpreter casts truncate

# (B, Hq, Hkv, C, L, D): GQA ratios 1 and 7 (Open-dCoder: 14 Q / 2 KV heads)
CASES = [(1, 2, 2, 1, 40, 32), (1, 14, 2, 15, 33, 32), (2, 2, 2, 15, 24, 64), (1, 7, 1, 3, 17, 64)]
if ON_CUDA:
    CASES += [(1, 14, 2, 63, 600, 64), (1, 28, 4, 300, 2000, 128), (2, 32, 8, 64, 4096, 128),
              (1, 12, 12, 256, 1500, 64)]


def _inputs(b, hq, hkv, c, cap, d, dtype, n_valid, seed=0):
    """Random q/k/v; the spare cache rows [n_valid:] hold large, finite garbage that must be ignored."""
    g = torch.Generator(DEVICE).manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=g, device=DEVICE)  # noqa: E731
    q = randn(b, hq, c, d)
    k_ctx, v_ctx = randn(2, b, hkv, cap, d)
    k_ctx[:, :, n_valid:] = 30 * randn(b, hkv, cap - n_valid, d)
    v_ctx[:, :, n_valid:] = 1e3 * randn(b, hkv, cap - n_valid, d)
    k_can, v_can = randn(2, b, hkv, c, d)
    return [t.to(dtype) for t in (q, k_ctx, v_ctx, k_can, v_can)]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("ctx", ["full", "partial", "empty", "tensor"])
def test_canvas_attention_matches_naive(dtype, case, ctx, assert_close):
    from dg_lsp.kernels.attention import canvas_attention

    b, hq, hkv, c, cap, d = case
    n = {"full": cap, "partial": cap // 3 + 1, "empty": 0, "tensor": cap - 5}[ctx]
    q, k_ctx, v_ctx, k_can, v_can = _inputs(b, hq, hkv, c, cap, d, dtype, n)
    ctx_len = {"full": None, "tensor": torch.tensor(n, device=DEVICE)}.get(ctx, n)
    out = canvas_attention(q, k_ctx, v_ctx, k_can, v_can, d**-0.5, ctx_len)
    ref = naive.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, d**-0.5, n)
    assert_close("out", out, ref, TOL[dtype])


@needs_triton
@pytest.mark.parametrize("num_splits", [1, 2, 5])
@pytest.mark.parametrize("n_valid", [0, 7, 29])
def test_canvas_attention_key_splits(num_splits, n_valid, assert_close):
    """Flash-decoding splits with small tiles: splits that straddle the context/canvas boundary, and
    splits left empty by a short context, must merge to the same result."""
    from dg_lsp.kernels.attention import _canvas_attention

    q, k_ctx, v_ctx, k_can, v_can = _inputs(1, 14, 2, 9, 29, 32, torch.float32, n_valid, seed=3)
    out = _canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.2, n_valid, num_splits=num_splits, block_n=16)
    ref = naive.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.2, n_valid)
    assert_close("out", out, ref, TOL[torch.float32])


@needs_triton
def test_canvas_attention_empty_cache(assert_close):
    """L == 0 (no prefix or suffix yet): the canvas attends to itself."""
    from dg_lsp.kernels.attention import canvas_attention

    q, k_ctx, v_ctx, k_can, v_can = _inputs(1, 14, 2, 5, 0, 32, torch.float32, 0)
    out = canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.2)
    assert_close("out", out, naive.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.2), TOL[torch.float32])


@needs_triton
def test_canvas_attention_strided_views(assert_close):
    """q/k/v as [B, T, H, D] projections viewed as [B, H, T, D] (last dim contiguous): no copies needed."""
    from dg_lsp.kernels.attention import canvas_attention

    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 6, 4, 32, generator=g).to(DEVICE).transpose(1, 2)
    k_ctx, v_ctx = (torch.randn(1, 20, 2, 32, generator=g).to(DEVICE).transpose(1, 2) for _ in range(2))
    k_can, v_can = (torch.randn(1, 6, 2, 32, generator=g).to(DEVICE).transpose(1, 2) for _ in range(2))
    out = canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.3, 11)
    assert_close("out", out, naive.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.3, 11), TOL[torch.float32])


@needs_triton
def test_canvas_attention_rejects_bad_ctx_len():
    from dg_lsp.kernels.attention import canvas_attention

    q, k_ctx, v_ctx, k_can, v_can = _inputs(1, 2, 2, 3, 8, 32, torch.float32, 8)
    with pytest.raises(ValueError, match="ctx_len"):
        canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.1, 9)


@pytest.mark.parametrize("n_valid", [0, 5, 12])
def test_naive_canvas_attention_is_sdpa(n_valid):
    """The reference equals SDPA over concat(valid context, canvas) with K/V repeated per group."""
    q, k_ctx, v_ctx, k_can, v_can = (t.cpu() for t in _inputs(2, 6, 2, 5, 12, 32, torch.float32, n_valid))
    k = torch.cat([k_ctx[:, :, :n_valid], k_can], 2).repeat_interleave(3, dim=1)
    v = torch.cat([v_ctx[:, :, :n_valid], v_can], 2).repeat_interleave(3, dim=1)
    sdpa = F.scaled_dot_product_attention(q, k, v, scale=0.125)
    torch.testing.assert_close(naive.canvas_attention(q, k_ctx, v_ctx, k_can, v_can, 0.125, n_valid), sdpa)
