"""Canvas attention: the canvas rows attend (non-causally, GQA) to [context cache | canvas].

Shape of the work: few query rows (a canvas of 16..256 tokens), many keys (prefix + suffix cache), few
KV heads (Open-dCoder: 2). Two choices follow from that:
- the GROUP query heads that share a KV head are packed into one M tile (row r = g * C + c), so each
  K/V tile is read once per KV head, not once per query head;
- the key range is split across NUM_SPLITS programs (flash-decoding) when B * Hkv * M-tiles alone
  would leave most SMs idle; a small second kernel merges the fp32 partials by their log-sum-exp.
Splits are sized from the cache capacity L (host-known), and the key range is divided in-kernel from
ctx_len, so a CUDA graph captured once replays with any ctx_len held in a device tensor.
Head dims 16..512 (powers of 2; DiffusionGemma: 256 sliding, 512 full layers): the tiles shrink as D grows
(`_TILES`), so the fp32 accumulator [BLOCK_M, D] stays in registers and the K/V tiles in shared memory.
`scale` is taken as given (1.0 for models that RMS-normalise q and k); nothing assumes D ** -0.5.
Reference: kernels.naive.canvas_attention.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from dg_lsp.kernels import require_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # macOS / CPU-only installs: the module imports, the launcher raises
    from dg_lsp.kernels import _NoTriton as triton, _NoTriton as tl


@triton.jit
def _attend_range(q, acc, m, l, k_base, v_base, skt, svt, start, end, qk_scale,
                  BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
                  DOT_PRECISION: tl.constexpr):
    """Online-softmax update of (acc, m, l) with keys [start, end) of one K/V buffer (log2 domain)."""
    offs_n = tl.arange(0, BLOCK_N)
    d = tl.arange(0, HEAD_DIM)
    for s0 in range(start, end, BLOCK_N):
        kn = s0 + offs_n
        kmask = kn < end
        kt = tl.load(k_base + kn[None, :] * skt + d[:, None], mask=kmask[None, :], other=0.0)
        v = tl.load(v_base + kn[:, None] * svt + d[None, :], mask=kmask[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N]
        s = tl.where(kmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))  # finite: every block holds >= 1 valid key
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m = m_new
    return acc, m, l


@triton.jit(do_not_specialize=["ctx_len"])  # a new context length must not trigger a recompile
def _canvas_attention_kernel(
    q_ptr, kx_ptr, vx_ptr, kc_ptr, vc_ptr, o_ptr, lse_ptr, ctx_len_ptr,
    ctx_len, L, C, Hq, Hkv, qk_scale,
    sqb, sqh, sqt, skxb, skxh, skxt, svxb, svxh, svxt, skcb, skch, skct, svcb, svch, svct,
    GROUP: tl.constexpr,  # Hq // Hkv query heads packed into the M tile
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr,  # 1: write the normalised output; >1: write fp32 partials + log2-sum-exp
    CTX_FROM_PTR: tl.constexpr,  # ctx_len is read from device memory (CUDA-graph replay)
    UPCAST: tl.constexpr,  # interpreter only: its tl.dot on bf16/fp16 is wrong, so dot in fp32
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs (tf32 loses ~3 digits); no effect on 16-bit
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1) // Hkv
    kvh = tl.program_id(1) % Hkv
    split = tl.program_id(2)

    r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # packed row: r = g * C + c
    rmask = r < GROUP * C
    head = kvh * GROUP + r // C
    c = r % C
    d = tl.arange(0, HEAD_DIM)
    q_rows = b.to(tl.int64) * sqb + head.to(tl.int64) * sqh + c.to(tl.int64) * sqt
    q = tl.load(q_ptr + q_rows[:, None] + d[None, :], mask=rmask[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    if CTX_FROM_PTR:
        n_ctx = tl.load(ctx_len_ptr).to(tl.int32)
    else:
        n_ctx = ctx_len
    n_ctx = tl.minimum(tl.maximum(n_ctx, 0), L)
    # this program's share of the virtual key range [0, n_ctx + C): context rows first, then canvas
    n_keys = n_ctx + C
    chunk = tl.cdiv(tl.cdiv(n_keys, NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(lo + chunk, n_keys)

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l = tl.zeros([BLOCK_M], dtype=tl.float32)
    kx_base = kx_ptr + b.to(tl.int64) * skxb + kvh.to(tl.int64) * skxh
    vx_base = vx_ptr + b.to(tl.int64) * svxb + kvh.to(tl.int64) * svxh
    acc, m, l = _attend_range(q, acc, m, l, kx_base, vx_base, skxt, svxt, lo, tl.minimum(hi, n_ctx), qk_scale,
                              BLOCK_N, HEAD_DIM, UPCAST, DOT_PRECISION)
    kc_base = kc_ptr + b.to(tl.int64) * skcb + kvh.to(tl.int64) * skch
    vc_base = vc_ptr + b.to(tl.int64) * svcb + kvh.to(tl.int64) * svch
    acc, m, l = _attend_range(q, acc, m, l, kc_base, vc_base, skct, svct,
                              tl.maximum(lo, n_ctx) - n_ctx, hi - n_ctx, qk_scale,
                              BLOCK_N, HEAD_DIM, UPCAST, DOT_PRECISION)

    # output (or partial) row of (b, head, c) in a contiguous [B, Hq, C, D] tensor; partials: [S, B, Hq, C, D]
    row = (b * Hq + head).to(tl.int64) * C + c
    if NUM_SPLITS == 1:
        o = acc / l[:, None]
        tl.store(o_ptr + row[:, None] * HEAD_DIM + d[None, :], o.to(o_ptr.dtype.element_ty), mask=rmask[:, None])
    else:
        nonempty = l > 0  # a split past the end of a short context sees no keys
        o = acc / tl.where(nonempty, l, 1.0)[:, None]
        row = split.to(tl.int64) * (tl.num_programs(1) * GROUP * C) + row
        tl.store(o_ptr + row[:, None] * HEAD_DIM + d[None, :], o, mask=rmask[:, None])
        tl.store(lse_ptr + row, tl.where(nonempty, m + tl.log2(tl.where(nonempty, l, 1.0)), float("-inf")), mask=rmask)


@triton.jit
def _attention_combine_kernel(
    part_ptr, lse_ptr, o_ptr, n_rows,
    NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr,  # next power of 2 >= NUM_SPLITS
    BLOCK_ROWS: tl.constexpr,  # rows per program, sized so the [S, rows, BLOCK_D] tile stays <= 4k elements
    BLOCK_D: tl.constexpr,  # head-dim slice per program (grid axis 1): a 64-split, 512-wide tile would spill
    HEAD_DIM: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    s = tl.arange(0, BLOCK_S)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = rows < n_rows
    mask = (s < NUM_SPLITS)[:, None] & rmask[None, :]  # [S, ROWS]
    off = s[:, None].to(tl.int64) * n_rows + rows[None, :]
    lse = tl.load(lse_ptr + off, mask=mask, other=float("-inf"))  # every row has >= 1 non-empty split
    w = tl.exp2(lse - tl.where(rmask, tl.max(lse, 0), 0.0)[None, :])  # padding rows: no -inf - -inf
    part = tl.load(part_ptr + off[:, :, None] * HEAD_DIM + d[None, None, :], mask=mask[:, :, None], other=0.0)
    o = tl.sum(w[:, :, None] * part, 0) / tl.where(rmask, tl.sum(w, 0), 1.0)[:, None]  # [ROWS, D]
    o_off = rows[:, None].to(tl.int64) * HEAD_DIM + d[None, :]
    tl.store(o_ptr + o_off, o.to(o_ptr.dtype.element_ty), mask=rmask[:, None])


@functools.cache
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


# head dim -> (BLOCK_M cap, BLOCK_N, num_warps, num_stages) for 16-bit inputs. Budget per program: the fp32
# accumulator [BLOCK_M, D] at <= 64 registers per thread; K and V tiles <= 16 KB each per pipeline stage;
# from D = 256 on, the stages plus q within ~100 KB of shared memory (L40S / RTX 4090 allow 99 KB per block,
# A100 164 KB, H100 227 KB). A head dim is supported exactly when it has a row here.
_TILES = {
    16: (64, 64, 4, 3),
    32: (64, 64, 4, 3),
    64: (64, 64, 4, 3),
    128: (64, 64, 4, 3),  # acc 64x128 fp32 = 64 regs/thread at 4 warps; K, V tiles 16 KB each
    256: (64, 32, 8, 2),  # acc 64x256 fp32 needs 8 warps for 64 regs/thread; 2 stages of 2 x 16 KB + q 32 KB
    512: (32, 16, 8, 2),  # acc 32x512 fp32 = 64 regs/thread at 8 warps; 2 stages of 2 x 16 KB + q 32 KB
}
# fp32 inputs (tests, debugging): ieee dots run on the FMA units and every tile is twice the bytes
_TILES_FP32 = {
    16: (64, 32, 8, 3),
    32: (64, 32, 8, 3),
    64: (64, 32, 8, 3),
    128: (64, 32, 8, 3),
    256: (32, 16, 8, 2),  # K, V tiles 16 KB each per stage, q 32 KB
    512: (16, 16, 8, 1),  # q 32 KB + K, V tiles 32 KB each: a second stage would pass 100 KB
}
HEAD_DIMS = tuple(_TILES)


def unsupported(head_dim: int | None, dtype: torch.dtype | None) -> str | None:
    """Why the kernel cannot take a call ("head_dim 96", "dtype float64"; None: any), or None when it can.
    The launcher raises on it; kernels.supports and the ops_for kernel set fall back to the reference."""
    if head_dim is not None and head_dim not in _TILES:
        return f"head_dim {head_dim}"
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"dtype {str(dtype).removeprefix('torch.')}"
    return None


def canvas_attention(q: Tensor, k_ctx: Tensor, v_ctx: Tensor, k_canvas: Tensor, v_canvas: Tensor,
                     scale: float, ctx_len: int | Tensor | None = None) -> Tensor:
    """Non-causal GQA of the canvas rows over [context cache | canvas]; see kernels.naive.canvas_attention.
    q: [B, Hq, C, D]; k_ctx, v_ctx: [B, Hkv, L, D] (first ctx_len rows valid; ctx_len may be a 0-dim
    device tensor); k_canvas, v_canvas: [B, Hkv, C, D]. Returns [B, Hq, C, D] in q.dtype."""
    return _canvas_attention(q, k_ctx, v_ctx, k_canvas, v_canvas, scale, ctx_len)


def _canvas_attention(q, k_ctx, v_ctx, k_canvas, v_canvas, scale, ctx_len=None, *,
                      num_splits: int | None = None, block_m: int | None = None, block_n: int | None = None):
    """The launcher; the keyword-only knobs let tests force splits and tile sizes on tiny shapes."""
    require_triton("canvas_attention", q)
    B, Hq, C, D = q.shape
    Hkv, L = k_ctx.shape[1], k_ctx.shape[2]
    if k_ctx.shape != (B, Hkv, L, D) or v_ctx.shape != k_ctx.shape:
        raise ValueError(f"k_ctx/v_ctx must be [{B}, Hkv, L, {D}], got {tuple(k_ctx.shape)}, {tuple(v_ctx.shape)}")
    if k_canvas.shape != (B, Hkv, C, D) or v_canvas.shape != k_canvas.shape:
        raise ValueError(f"k_canvas/v_canvas must be [{B}, {Hkv}, {C}, {D}], got {tuple(k_canvas.shape)}")
    if Hq % Hkv:
        raise ValueError(f"Hq must be a multiple of Hkv, got Hq={Hq}, Hkv={Hkv}")
    if any(t.dtype != q.dtype for t in (k_ctx, v_ctx, k_canvas, v_canvas)):
        raise ValueError(f"q, k and v must share one dtype, got {q.dtype}, {k_ctx.dtype}, {v_ctx.dtype}, "
                         f"{k_canvas.dtype}, {v_canvas.dtype}")
    if D not in _TILES:
        raise ValueError(f"kernels: canvas_attention supports head dims {HEAD_DIMS}, got {D}; "
                         "use kernels.naive.canvas_attention (the kernel set of kernels.ops_for falls back by itself)")
    q, k_ctx, v_ctx, k_canvas, v_canvas = (t if t.stride(-1) == 1 else t.contiguous()
                                           for t in (q, k_ctx, v_ctx, k_canvas, v_canvas))
    ctx_from_ptr = isinstance(ctx_len, Tensor)
    if ctx_from_ptr:
        if ctx_len.numel() != 1 or ctx_len.device != q.device or ctx_len.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"ctx_len tensor must hold one int32/int64 on {q.device}, "
                             f"got {ctx_len.dtype} {tuple(ctx_len.shape)} on {ctx_len.device}")
        n_ctx, ctx_ptr = 0, ctx_len  # clamped to [0, L] in-kernel: no host sync
    else:
        n_ctx = L if ctx_len is None else int(ctx_len)
        if not 0 <= n_ctx <= L:
            raise ValueError(f"ctx_len must be in [0, {L}] (the cache capacity), got {n_ctx}")
        ctx_ptr = q  # unused
    out = torch.empty((B, Hq, C, D), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    if L == 0:  # no cache yet: hand the kernel real (never read) memory rather than an empty buffer
        k_ctx, v_ctx = k_canvas, v_canvas

    group = Hq // Hkv
    rows = group * C
    fp32 = q.dtype == torch.float32  # test / debug path: FMA dots, so smaller key tiles and more warps
    max_m, BLOCK_N, num_warps, num_stages = (_TILES_FP32 if fp32 else _TILES)[D]
    BLOCK_M = block_m or min(max_m, max(16, triton.next_power_of_2(rows)))  # tl.dot needs M >= 16
    BLOCK_N = block_n or BLOCK_N
    m_tiles = triton.cdiv(rows, BLOCK_M)
    if num_splits is None:  # enough programs to fill the GPU twice, but >= 4 key tiles per split
        want = triton.cdiv(2 * _num_sms(q.device), B * Hkv * m_tiles)
        num_splits = max(1, min(want, triton.cdiv(L + C, 4 * BLOCK_N), 64))
    n_rows = B * Hq * C
    if num_splits == 1:
        part, lse = out, out  # the kernel writes the final output directly
    else:
        part = torch.empty((num_splits, n_rows, D), dtype=torch.float32, device=q.device)
        lse = torch.empty((num_splits, n_rows), dtype=torch.float32, device=q.device)

    upcast = q.device.type != "cuda"  # CPU tensors only run under TRITON_INTERPRET=1
    _canvas_attention_kernel[(m_tiles, B * Hkv, num_splits)](
        q, k_ctx, v_ctx, k_canvas, v_canvas, part, lse, ctx_ptr,
        n_ctx, L, C, Hq, Hkv, scale * 1.4426950408889634,  # log2(e): softmax via exp2
        *q.stride()[:3], *k_ctx.stride()[:3], *v_ctx.stride()[:3], *k_canvas.stride()[:3], *v_canvas.stride()[:3],
        GROUP=group, HEAD_DIM=D, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, NUM_SPLITS=num_splits,
        CTX_FROM_PTR=ctx_from_ptr, UPCAST=upcast, DOT_PRECISION="ieee" if fp32 else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )
    if num_splits > 1:
        BLOCK_S = triton.next_power_of_2(num_splits)  # <= 64
        BLOCK_D = min(D, max(16, 4096 // BLOCK_S))
        BLOCK_ROWS = max(1, min(16, 4096 // (BLOCK_S * BLOCK_D)))
        _attention_combine_kernel[(triton.cdiv(n_rows, BLOCK_ROWS), D // BLOCK_D)](
            part, lse, out, n_rows,
            NUM_SPLITS=num_splits, BLOCK_S=BLOCK_S, BLOCK_ROWS=BLOCK_ROWS, BLOCK_D=BLOCK_D, HEAD_DIM=D, num_warps=4,
        )
    return out
