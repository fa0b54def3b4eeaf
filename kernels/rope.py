"""Rotary position embedding, HF rotate_half convention. Reference: kernels.naive.rope."""

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
def _rope_kernel(
    x_ptr, cos_ptr, sin_ptr, out_ptr,
    H, T,
    sxb, sxh, sxt, sob, soh, sot, scb, sct,  # scb == 0 broadcasts a [T, D] table over the batch
    HALF: tl.constexpr,  # D // 2: x1 = x[:HALF], x2 = x[HALF:]
    BLOCK_T: tl.constexpr,  # positions per program: a few KV heads alone would leave most lanes idle
    BLOCK_H: tl.constexpr,  # heads per program (power of 2 >= H, capped)
    BLOCK_HALF: tl.constexpr,  # next power of 2 >= HALF (tl.arange needs a power of 2)
):
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK_T * BLOCK_H)  # tile row j = (position t, head h), heads fastest
    t = tl.program_id(1) * BLOCK_T + j // BLOCK_H
    h = tl.program_id(2) * BLOCK_H + j % BLOCK_H
    d = tl.arange(0, BLOCK_HALF)[None, :]
    dmask = d < HALF
    mask = ((t < T) & (h < H))[:, None] & dmask

    # cos/sin rows repeat across the heads of a position: those loads hit L1
    cs_off = (b.to(tl.int64) * scb + t.to(tl.int64) * sct)[:, None] + d
    cos1 = tl.load(cos_ptr + cs_off, mask=mask, other=0.0).to(tl.float32)
    cos2 = tl.load(cos_ptr + cs_off + HALF, mask=mask, other=0.0).to(tl.float32)
    sin1 = tl.load(sin_ptr + cs_off, mask=mask, other=0.0).to(tl.float32)
    sin2 = tl.load(sin_ptr + cs_off + HALF, mask=mask, other=0.0).to(tl.float32)

    x_off = (b.to(tl.int64) * sxb + t.to(tl.int64) * sxt + h.to(tl.int64) * sxh)[:, None] + d
    x1 = tl.load(x_ptr + x_off, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + x_off + HALF, mask=mask, other=0.0).to(tl.float32)
    # x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1); fp32, one rounding
    o_off = (b.to(tl.int64) * sob + t.to(tl.int64) * sot + h.to(tl.int64) * soh)[:, None] + d
    tl.store(out_ptr + o_off, (x1 * cos1 - x2 * sin1).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(out_ptr + o_off + HALF, (x2 * cos2 + x1 * sin2).to(out_ptr.dtype.element_ty), mask=mask)


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [B, H, T, D]; cos, sin: [B, T, D] or [T, D] in the HF rotate_half convention
    (cos = cat(freqs, freqs).cos()). Returns x*cos + rotate_half(x)*sin in x.dtype (math in fp32)."""
    require_triton("rope", x)
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"rope needs an even head dim, got {D}")
    if cos.shape != sin.shape or cos.shape[-2:] != (T, D) or cos.dim() not in (2, 3):
        raise ValueError(f"cos/sin must be [B, {T}, {D}] or [{T}, {D}], got {tuple(cos.shape)}, {tuple(sin.shape)}")
    if cos.dim() == 3 and cos.shape[0] not in (1, B):
        raise ValueError(f"cos/sin batch must be 1 or {B}, got {cos.shape[0]}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():  # the kernel walks both with one set of strides
        cos, sin = cos.contiguous(), sin.contiguous()
    out = torch.empty_like(x)  # keeps x's layout (e.g. a [B, T, H, D] buffer viewed as [B, H, T, D])
    scb = cos.stride(0) if cos.dim() == 3 and cos.shape[0] == B and B > 1 else 0
    sct = cos.stride(-2)

    BLOCK_HALF = triton.next_power_of_2(D // 2)
    BLOCK_H = min(triton.next_power_of_2(H), max(1, 2048 // BLOCK_HALF))
    BLOCK_T = min(triton.next_power_of_2(T), max(1, 2048 // (BLOCK_H * BLOCK_HALF)))  # ~2k elements per tile
    grid = (B, triton.cdiv(T, BLOCK_T), triton.cdiv(H, BLOCK_H))
    if x.numel():
        _rope_kernel[grid](
            x, cos, sin, out, H, T,
            x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1), out.stride(2), scb, sct,
            HALF=D // 2, BLOCK_T=BLOCK_T, BLOCK_H=BLOCK_H, BLOCK_HALF=BLOCK_HALF, num_warps=4,
        )
    return out
