"""rope: Triton launcher vs kernels.naive, and kernels.naive vs the HF apply_rotary_pos_emb formula."""

import pytest
import torch

from dg_lsp.kernels import naive, triton_available

ON_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_CUDA else "cpu")
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
TOL = {torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}  # bf16: interpreter casts truncate

SHAPES = [(1, 1, 1, 32), (2, 3, 15, 64), (1, 4, 63, 32)]  # (B, H, T, D)
if ON_CUDA:
    SHAPES += [(1, 28, 300, 128), (2, 2, 300, 64), (4, 32, 257, 128)]


def _tables(b, t, d, batched, theta=10000.0, seed=0):
    """HF LlamaRotaryEmbedding: cos = cat(freqs, freqs).cos(), positions possibly per batch row."""
    g = torch.Generator().manual_seed(seed)
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    pos = torch.randint(0, 4096, (b if batched else 1, t), generator=g).float()
    freqs = pos[..., None] * inv_freq  # [B, T, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    return (cos, sin) if batched else (cos[0], sin[0])


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("batched", [False, True])
def test_rope_matches_naive(dtype, shape, batched, assert_close):
    from dg_lsp.kernels.rope import rope

    b, h, t, d = shape
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    cos, sin = (z.to(DEVICE, dtype) for z in _tables(b, t, d, batched))
    assert_close("out", rope(x, cos, sin), naive.rope(x, cos, sin), TOL[dtype])


@needs_triton
def test_rope_strided_input_keeps_layout(assert_close):
    """q is usually a [B, T, H, D] projection viewed as [B, H, T, D]: no copy, same layout out."""
    from dg_lsp.kernels.rope import rope

    x = torch.randn(2, 5, 3, 32, device=DEVICE).transpose(1, 2)  # [B, H, T, D], non-contiguous
    cos, sin = (z.to(DEVICE) for z in _tables(2, 5, 32, batched=True))
    out = rope(x, cos, sin)
    assert out.stride() == x.stride()
    assert_close("out", out, naive.rope(x, cos, sin), TOL[torch.float32])


def test_naive_rope_is_hf():
    """fp32: naive equals HF apply_rotary_pos_emb (unsqueeze_dim=1) exactly up to fp32 rounding."""
    x = torch.randn(2, 3, 7, 64)
    cos, sin = _tables(2, 7, 64, batched=True)
    x1, x2 = x[..., :32], x[..., 32:]
    hf = x * cos[:, None] + torch.cat((-x2, x1), dim=-1) * sin[:, None]
    torch.testing.assert_close(naive.rope(x, cos, sin), hf)
    torch.testing.assert_close(naive.rope(x, cos[0], sin[0])[:1], naive.rope(x[:1], cos[:1], sin[:1]))
