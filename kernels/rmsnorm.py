"""Fused residual add + RMSNorm (HF Qwen2/Llama semantics). Reference: kernels.naive.rms_norm."""

from __future__ import annotations

import torch
from torch import Tensor

from dg_lsp.kernels import require_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # macOS / CPU-only installs: the module imports, the launcher raises
    from dg_lsp.kernels import _NoTriton as triton, _NoTriton as tl


@triton.jit
def _rms_norm_kernel(
    x_ptr, res_ptr, w_ptr, out_ptr, h_ptr,
    n_rows, D, stride_x, stride_r, stride_o, stride_h,
    eps,
    HAS_RESIDUAL: tl.constexpr,  # specialise away the residual loads and the h store
    BLOCK_R: tl.constexpr,  # rows per program: several short rows share one program when D is small
    BLOCK_D: tl.constexpr,  # next power of 2 >= D: the whole row stays in registers (one pass)
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    rmask = rows < n_rows
    mask = rmask[:, None] & (cols[None, :] < D)
    rows64 = rows.to(tl.int64)[:, None]

    x = tl.load(x_ptr + rows64 * stride_x + cols[None, :], mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + rows64 * stride_r + cols[None, :], mask=mask, other=0.0)
        # the add is rounded to x.dtype before the norm reads it, as in the HF decoder layer
        h = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(h_ptr + rows64 * stride_h + cols[None, :], h, mask=mask)
    else:
        h = x
    h32 = h.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(h32 * h32, axis=1) / D + eps)  # [BLOCK_R]
    y = (h32 * inv_rms[:, None]).to(x.dtype).to(tl.float32)  # HF rounds before the weight multiply
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows64 * stride_o + cols[None, :], (y * w[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: Tensor, weight: Tensor, eps: float, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h = x + residual (or x alone); returns (rmsnorm(h) * weight, h). x: [..., D].
    Math in fp32; outputs in x.dtype. See kernels.naive.rms_norm for the rounding points."""
    require_triton("rms_norm", x)
    D = x.shape[-1]
    if weight.shape != (D,):
        raise ValueError(f"weight must be [{D}], got {tuple(weight.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual must match x {tuple(x.shape)}, got {tuple(residual.shape)}")
    x2 = x.reshape(-1, D)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    r2 = x2
    if residual is not None:
        r2 = residual.reshape(-1, D)
        r2 = r2 if r2.stride(-1) == 1 else r2.contiguous()
    n_rows = x2.shape[0]
    out = torch.empty((n_rows, D), dtype=x.dtype, device=x.device)
    h = torch.empty_like(out) if residual is not None else out  # h_ptr unused without residual

    BLOCK_D = triton.next_power_of_2(D)
    BLOCK_R = max(1, min(16, 2048 // BLOCK_D))
    num_warps = 4 if BLOCK_D <= 2048 else 8 if BLOCK_D <= 8192 else 16
    grid = (triton.cdiv(n_rows, BLOCK_R),)
    if n_rows:
        _rms_norm_kernel[grid](
            x2, r2, weight, out, h,
            n_rows, D, x2.stride(0), r2.stride(0), out.stride(0), h.stride(0),
            float(eps),
            HAS_RESIDUAL=residual is not None, BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D, num_warps=num_warps,
        )
    return out.view(x.shape), (h.view(x.shape) if residual is not None else x)
