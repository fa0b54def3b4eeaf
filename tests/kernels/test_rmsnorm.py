"""rms_norm: Triton launcher vs kernels.naive, and kernels.naive vs the HF Qwen2/Llama formula."""

import pytest
import torch

from dg_lsp.kernels import naive, triton_available

ON_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_CUDA else "cpu")
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
TOL = {torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}  # bf16: interpreter casts truncate

ROWS = [1, 15, 63, 300]
DIMS = [32, 96] + ([896, 3584, 4096] if ON_CUDA else [])  # 96: not a power of two (masked tail)


def _inputs(rows, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, d, generator=g).to(DEVICE, dtype)
    r = torch.randn(rows, d, generator=g).to(DEVICE, dtype)
    w = (1 + 0.1 * torch.randn(d, generator=g)).to(DEVICE, dtype)
    return x, r, w


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm_matches_naive(dtype, rows, d, with_residual, assert_close):
    from dg_lsp.kernels.rmsnorm import rms_norm

    x, r, w = _inputs(rows, d, dtype)
    res = r if with_residual else None
    out, h = rms_norm(x, w, 1e-6, res)
    ref_out, ref_h = naive.rms_norm(x, w, 1e-6, res)
    assert_close("out", out, ref_out, TOL[dtype])
    assert_close("h", h, ref_h, TOL[dtype])


@needs_triton
def test_rms_norm_leading_dims_and_strided_rows(assert_close):
    """[B, T, D] input and a row-strided view (a slice of a wider buffer) take the same path."""
    from dg_lsp.kernels.rmsnorm import rms_norm

    buf = torch.randn(2, 7, 80, device=DEVICE)
    x = buf[..., :64]  # last dim contiguous, rows strided by 80
    r = torch.randn(2, 7, 64, device=DEVICE)
    w = torch.rand(64, device=DEVICE)
    out, h = rms_norm(x, w, 1e-5, r)
    ref_out, ref_h = naive.rms_norm(x, w, 1e-5, r)
    assert out.shape == h.shape == (2, 7, 64)
    assert_close("out", out, ref_out, TOL[torch.float32])
    assert_close("h", h, ref_h, TOL[torch.float32])


@needs_triton
def test_rms_norm_without_residual_returns_x_as_h():
    from dg_lsp.kernels.rmsnorm import rms_norm

    x, _, w = _inputs(5, 32, torch.float32)
    _, h = rms_norm(x, w, 1e-6)
    assert h is x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_naive_rms_norm_is_hf_qwen2(dtype):
    """The reference is the HF decoder-layer sequence: residual add in dtype, Qwen2RMSNorm.forward."""
    x, r, w = (t.cpu() for t in _inputs(9, 48, dtype))
    h = r + x
    h32 = h.to(torch.float32)
    variance = h32.pow(2).mean(-1, keepdim=True)
    hf = w * (h32 * torch.rsqrt(variance + 1e-6)).to(dtype)  # Qwen2RMSNorm.forward, verbatim
    out, ref_h = naive.rms_norm(x, w, 1e-6, r)
    assert torch.equal(ref_h, h)
    assert torch.equal(out, hf.to(dtype))
