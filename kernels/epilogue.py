"""Fused LM head + next-token statistics: one pass over the vocabulary, [R, V] never exists.

Kernel 1 tiles (row block x vocabulary chunk): each program computes logits tiles of BLOCK_R x BLOCK_V
with tl.dot (fp32 accumulation) and folds them into per-row online statistics: running max (= top-1),
its index, top-2, sum of exp, sum of exp * (z - max) for the entropy, and the best Gumbel score with its
token and logit. It writes these partials to [*, R, n_chunks]; kernel 2 merges them per row. The row
blocks of one vocabulary chunk are adjacent in launch order, so they share each weight tile through L2.
Reference: kernels.naive.lm_head_epilogue (same numerical choices, but fp32 Philox Gumbel noise).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from dg_lsp.kernels import require_triton
from dg_lsp.kernels.naive import TokenStats

try:
    import triton
    import triton.language as tl
except ImportError:  # macOS / CPU-only installs: the module imports, the launcher raises
    from dg_lsp.kernels import _NoTriton as triton, _NoTriton as tl

# partials per (row, chunk): fp32 (top1 = running max, sum_exp, sum_exp_dz, top2, gumbel_best, gumbel_z),
# int32 (top1_idx, gumbel_idx)
_N_FLOAT, _N_INT = 6, 2


@triton.jit(do_not_specialize=["seed"])  # seeds change every step: no per-seed specialisation
def _lm_head_epilogue_kernel(
    h_ptr, w_ptr, pf_ptr, pi_ptr,
    R, V, D, stride_h, stride_w, tiles_per_chunk, n_chunks,
    inv_temp, softcap, seed, banned,
    SOFTCAP: tl.constexpr,  # specialise the tanh away when there is no softcap
    SAMPLE: tl.constexpr,  # temperature > 0: draw Gumbel noise; else the sample is the argmax
    BLOCK_R: tl.constexpr,  # rows per program, >= 16 for tl.dot (padding rows read zeros)
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreter only: its tl.dot on bf16/fp16 is wrong, so dot in fp32
    DOT_PRECISION: tl.constexpr,  # "ieee" for fp32 inputs: tf32 would flip near-tie argmaxes
):
    pid_r = tl.program_id(0)
    chunk = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    lcols = tl.arange(0, BLOCK_V)
    kk = tl.arange(0, BLOCK_K)
    h_rows = h_ptr + rows.to(tl.int64)[:, None] * stride_h

    top1 = tl.full([BLOCK_R], float("-inf"), tl.float32)  # running max of z, doubles as the softmax shift
    idx1 = tl.zeros([BLOCK_R], tl.int32)
    top2 = tl.full([BLOCK_R], float("-inf"), tl.float32)
    sum_e = tl.zeros([BLOCK_R], tl.float32)  # sum exp(z - top1)
    sum_ez = tl.zeros([BLOCK_R], tl.float32)  # sum exp(z - top1) * (z - top1): entropy = log S - this / S
    g_best = tl.full([BLOCK_R], float("-inf"), tl.float32)
    g_idx = tl.zeros([BLOCK_R], tl.int32)
    g_z = tl.zeros([BLOCK_R], tl.float32)

    v_start = chunk * tiles_per_chunk * BLOCK_V
    v_end = tl.minimum(v_start + tiles_per_chunk * BLOCK_V, V)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = v0 + lcols
        cmask = cols < V
        w_cols = w_ptr + cols.to(tl.int64)[None, :] * stride_w
        acc = tl.zeros([BLOCK_R, BLOCK_V], tl.float32)
        for k0 in range(0, D, BLOCK_K):
            kmask = (k0 + kk) < D
            h = tl.load(h_rows + (k0 + kk)[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            wt = tl.load(w_cols + (k0 + kk)[:, None], mask=kmask[:, None] & cmask[None, :], other=0.0)  # [K, V]
            if UPCAST:
                h = h.to(tl.float32)
                wt = wt.to(tl.float32)
            acc = tl.dot(h, wt, acc, input_precision=DOT_PRECISION)
        if SOFTCAP:  # softcap * tanh(x / softcap), tanh(y) = 1 - 2 / (exp(2y) + 1): saturates cleanly at +-1
            acc = softcap * (1.0 - 2.0 / (tl.exp(2.0 * acc / softcap) + 1.0))
        cmask = cmask & (cols != banned)  # the noise token is never a proposal: it leaves the distribution
        z = tl.where(cmask[None, :], acc * inv_temp, float("-inf"))

        # top-2 of the tile, then merged with the running top-2; ties keep the lowest token id
        t1 = tl.max(z, 1)
        i1 = tl.argmax(z, 1)
        t2 = tl.max(tl.where(lcols[None, :] == i1[:, None], float("-inf"), z), 1)
        new_top1 = tl.maximum(top1, t1)
        top2 = tl.maximum(tl.minimum(top1, t1), tl.maximum(top2, t2))
        idx1 = tl.where(t1 > top1, v0 + i1, idx1)
        # online softmax with the sums rescaled to the new max
        # 0 on the first tile (top1 = -inf); 1 while every column so far was banned (no -inf - -inf)
        alpha = tl.where(new_top1 > float("-inf"), tl.exp(top1 - new_top1), 1.0)
        shift = tl.where(sum_e > 0, top1 - new_top1, 0.0) * sum_e  # first tile: no -inf * 0
        e = tl.where(cmask[None, :], tl.exp(z - new_top1[:, None]), 0.0)
        dz = tl.where(cmask[None, :], z - new_top1[:, None], 0.0)
        sum_ez = alpha * (sum_ez + shift) + tl.sum(e * dz, 1)
        sum_e = alpha * sum_e + tl.sum(e, 1)
        top1 = new_top1

        if SAMPLE:  # Gumbel-max; Philox counters (token, row) make the noise independent of the tiling
            zero = tl.zeros([BLOCK_R, BLOCK_V], tl.int32)
            r0, _, _, _ = tl.philox(seed, cols[None, :] + zero, rows[:, None] + zero, zero, zero)
            u = tl.uint_to_uniform_float(r0)
            score = tl.where(cmask[None, :], z - tl.log(-tl.log(u)), float("-inf"))
            b1 = tl.max(score, 1)
            bi = tl.argmax(score, 1)
            bz = tl.sum(tl.where(lcols[None, :] == bi[:, None], z, 0.0), 1)
            take = b1 > g_best
            g_idx = tl.where(take, v0 + bi, g_idx)
            g_z = tl.where(take, bz, g_z)
            g_best = tl.maximum(g_best, b1)

    # partials layout: [field, R, n_chunks]
    off = rows.to(tl.int64) * n_chunks + chunk
    plane = R * n_chunks
    tl.store(pf_ptr + off, top1, mask=rmask)
    tl.store(pf_ptr + plane + off, sum_e, mask=rmask)
    tl.store(pf_ptr + 2 * plane + off, sum_ez, mask=rmask)
    tl.store(pf_ptr + 3 * plane + off, top2, mask=rmask)
    tl.store(pf_ptr + 4 * plane + off, g_best, mask=rmask)
    tl.store(pf_ptr + 5 * plane + off, g_z, mask=rmask)
    tl.store(pi_ptr + off, idx1, mask=rmask)
    tl.store(pi_ptr + plane + off, g_idx, mask=rmask)


@triton.jit
def _lm_head_combine_kernel(
    pf_ptr, pi_ptr, argmax_ptr, max_prob_ptr, margin_ptr, entropy_ptr, sample_ptr, sample_prob_ptr,
    R, n_chunks,
    SAMPLE: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,  # rows per program, sized so the [rows, chunks] tile stays <= 2k elements
    BLOCK_C: tl.constexpr,  # next power of 2 >= n_chunks: a row's partials in one tile
):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    c = tl.arange(0, BLOCK_C)[None, :]
    rmask = rows < R
    mask = rmask[:, None] & (c < n_chunks)
    off = rows.to(tl.int64)[:, None] * n_chunks + c
    plane = R * n_chunks
    top1_c = tl.load(pf_ptr + off, mask=mask, other=float("-inf"))
    sum_e_c = tl.load(pf_ptr + plane + off, mask=mask, other=0.0)
    sum_ez_c = tl.load(pf_ptr + 2 * plane + off, mask=mask, other=0.0)
    top2_c = tl.load(pf_ptr + 3 * plane + off, mask=mask, other=float("-inf"))
    idx1_c = tl.load(pi_ptr + off, mask=mask, other=0)

    top1 = tl.where(rmask, tl.max(top1_c, 1), 0.0)  # padding rows: keep the arithmetic finite
    w = tl.exp(top1_c - top1[:, None])  # masked chunks: 0
    S = tl.where(rmask, tl.sum(w * sum_e_c, 1), 1.0)
    SZ = tl.sum(w * (sum_ez_c + tl.where(sum_e_c > 0, top1_c - top1[:, None], 0.0) * sum_e_c), 1)
    first = tl.argmax(top1_c, 1)[:, None]  # lowest chunk holding the max = lowest token id on ties
    idx1 = tl.sum(tl.where(c == first, idx1_c, 0), 1)
    top2 = tl.maximum(tl.max(tl.where(c == first, float("-inf"), top1_c), 1), tl.max(top2_c, 1))
    max_prob = 1.0 / S  # exp(top1 - top1) / S
    tl.store(argmax_ptr + rows, idx1.to(tl.int64), mask=rmask)
    tl.store(max_prob_ptr + rows, max_prob, mask=rmask)
    tl.store(margin_ptr + rows, max_prob - tl.exp(top2 - top1) / S, mask=rmask)
    tl.store(entropy_ptr + rows, tl.log(S) - SZ / S, mask=rmask)
    if SAMPLE:
        g_best_c = tl.load(pf_ptr + 4 * plane + off, mask=mask, other=float("-inf"))
        g_z_c = tl.load(pf_ptr + 5 * plane + off, mask=mask, other=0.0)
        g_idx_c = tl.load(pi_ptr + plane + off, mask=mask, other=0)
        best = tl.argmax(g_best_c, 1)[:, None]
        tl.store(sample_ptr + rows, tl.sum(tl.where(c == best, g_idx_c, 0), 1).to(tl.int64), mask=rmask)
        g_z = tl.sum(tl.where(c == best, g_z_c, 0.0), 1)
        tl.store(sample_prob_ptr + rows, tl.exp(g_z - top1) / S, mask=rmask)
    else:
        tl.store(sample_ptr + rows, idx1.to(tl.int64), mask=rmask)
        tl.store(sample_prob_ptr + rows, max_prob, mask=rmask)


@functools.cache
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def lm_head_epilogue(hidden: Tensor, weight: Tensor, *, temperature: float = 0.0, softcap: float | None = None,
                     seed: int = 0, banned: int = -1) -> TokenStats:
    """hidden: [R, D] canvas rows, weight: [V, D]. Token statistics of softmax(logits [/ temperature]) with
    logits = hidden @ weight.T (fp32 accumulation, optional softcap), token `banned` excluded;
    see kernels.naive.lm_head_epilogue."""
    return _lm_head_epilogue(hidden, weight, temperature=temperature, softcap=softcap, seed=seed, banned=banned)


def _lm_head_epilogue(hidden, weight, *, temperature=0.0, softcap=None, seed=0, banned=-1,
                      block_v: int | None = None, tiles_per_chunk: int | None = None) -> TokenStats:
    """The launcher; the keyword-only knobs let tests force several chunks on tiny vocabularies."""
    require_triton("lm_head_epilogue", hidden)
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden [R, D] and weight [V, D], got {tuple(hidden.shape)}, {tuple(weight.shape)}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden and weight dtypes differ: {hidden.dtype} vs {weight.dtype}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    hidden = hidden if hidden.stride(-1) == 1 else hidden.contiguous()
    weight = weight if weight.stride(-1) == 1 else weight.contiguous()
    (R, D), V = hidden.shape, weight.shape[0]
    dev = hidden.device
    out = TokenStats(*(torch.empty(R, dtype=dt, device=dev) for dt in
                       (torch.int64, torch.float32, torch.float32, torch.float32, torch.int64, torch.float32)))
    if R == 0:
        return out

    BLOCK_R = 16 if R <= 16 else 32 if R <= 32 else 64  # more rows: more row blocks, sharing weights via L2
    BLOCK_V = block_v or (128 if BLOCK_R <= 32 else 64)  # logits tile <= 4k fp32: ~8 live copies fit in registers
    BLOCK_K = min(64, max(16, triton.next_power_of_2(D)))
    n_tiles = triton.cdiv(V, BLOCK_V)
    r_blocks = triton.cdiv(R, BLOCK_R)
    if tiles_per_chunk is None:  # about two waves of programs over the SMs
        tiles_per_chunk = triton.cdiv(n_tiles, max(1, triton.cdiv(2 * _num_sms(dev), r_blocks)))
    n_chunks = triton.cdiv(n_tiles, tiles_per_chunk)  # every chunk holds >= 1 tile
    pf = torch.empty((_N_FLOAT, R, n_chunks), dtype=torch.float32, device=dev)
    pi = torch.empty((_N_INT, R, n_chunks), dtype=torch.int32, device=dev)

    upcast = dev.type != "cuda"  # CPU tensors only run under TRITON_INTERPRET=1
    sample = temperature > 0
    _lm_head_epilogue_kernel[(r_blocks, n_chunks)](
        hidden, weight, pf, pi, R, V, D, hidden.stride(0), weight.stride(0), tiles_per_chunk, n_chunks,
        1.0 / temperature if sample else 1.0, float(softcap or 1.0), int(seed) & 0x7FFFFFFF, int(banned),
        SOFTCAP=bool(softcap), SAMPLE=sample, BLOCK_R=BLOCK_R, BLOCK_V=BLOCK_V, BLOCK_K=BLOCK_K,
        UPCAST=upcast, DOT_PRECISION="ieee" if hidden.dtype == torch.float32 else "tf32",
        num_warps=4 if BLOCK_R * BLOCK_V <= 2048 else 8, num_stages=2 if upcast else 3,
    )
    BLOCK_C = triton.next_power_of_2(n_chunks)
    BLOCK_ROWS = max(1, min(256, 2048 // BLOCK_C))
    _lm_head_combine_kernel[(triton.cdiv(R, BLOCK_ROWS),)](
        pf, pi, *(getattr(out, f) for f in ("argmax", "max_prob", "margin", "entropy", "sample", "sample_prob")),
        R, n_chunks, SAMPLE=sample, BLOCK_ROWS=BLOCK_ROWS, BLOCK_C=BLOCK_C,
        num_warps=8 if BLOCK_ROWS * BLOCK_C >= 2048 else 4,
    )
    return out
