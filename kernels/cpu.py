"""CPU fast paths, plain torch: only the ops where the reference leaves real speed behind.

`ops_for("cpu")` takes these and `kernels.naive` for everything else. Same signatures as the references;
tests/kernels/test_cpu.py compares the two.

lm_head_epilogue: the reference upcasts hidden and the whole [V, D] head to fp32 before the matmul. That is
exact, but for a 0.5B model's 152k-row head in bf16 it copies 545 MB and runs an fp32 matmul every step
(measured 336 ms against 48 ms for the bf16 matmul on our 2-core development CPU). Here the matmul runs in
the weights' own dtype: oneDNN multiplies bf16 and accumulates in fp32, then rounds the logits to bf16,
which is what a bf16 model's `lm_head` does in transformers too. The statistics are then computed in fp32
from those logits, exactly as the reference computes them. fp32 and fp64 weights take the reference
unchanged, so only bf16/fp16 models see the (bf16-rounded) logits.

canvas_attention: the reference upcasts the whole context K/V to fp32 and repeats it per query head (7x
for a 14/2-head model) every layer of every step. torch's fused CPU attention reads the 16-bit K/V once,
with each query group folded into one head, and keeps the softmax in fp32 (online, flash-style); only
the summation order differs from the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dg_lsp.kernels import naive
from dg_lsp.kernels.naive import TokenStats


def canvas_attention(
    q: Tensor,
    k_ctx: Tensor,
    v_ctx: Tensor,
    k_canvas: Tensor,
    v_canvas: Tensor,
    scale: float,
    ctx_len: int | Tensor | None = None,
) -> Tensor:
    """`naive.canvas_attention` through torch's fused attention (see the module docstring)."""
    if q.dtype == torch.float64:  # the engine's exactness tests: keep the reference's math
        return naive.canvas_attention(q, k_ctx, v_ctx, k_canvas, v_canvas, scale, ctx_len)
    if q.shape[1] % k_ctx.shape[1]:
        raise ValueError(f"Hq must be a multiple of Hkv, got Hq={q.shape[1]}, Hkv={k_ctx.shape[1]}")
    n = naive.ctx_len_int(ctx_len, k_ctx.shape[2])
    k = torch.cat([k_ctx[:, :, :n], k_canvas], dim=2)  # [B, Hkv, n + C, D]
    v = torch.cat([v_ctx[:, :, :n], v_canvas], dim=2)
    b, hq, c, d = q.shape
    hkv = k.shape[1]
    # query head h reads K/V head h // group (HF repeat_kv): fold each group into one head with group * C
    # rows, so every K/V head is read by a single attention call (measured 0.85 vs 1.15 ms per layer at
    # 14/2 heads, 17 rows, 1,216 keys, bf16)
    folded = q.reshape(b, hkv, (hq // hkv) * c, d)
    return F.scaled_dot_product_attention(folded, k, v, scale=scale).reshape(b, hq, c, d)


def lm_head_epilogue(
    hidden: Tensor,
    weight: Tensor,
    *,
    temperature: float = 0.0,
    softcap: float | None = None,
    seed: int = 0,
    banned: int = -1,
) -> TokenStats:
    """`naive.lm_head_epilogue` with the matmul in the weights' 16-bit dtype (see the module docstring)."""
    if weight.dtype not in (torch.bfloat16, torch.float16):
        return naive.lm_head_epilogue(hidden, weight, temperature=temperature, softcap=softcap, seed=seed,
                                      banned=banned)
    naive.check_head_shapes(hidden, weight)
    logits = F.linear(hidden.to(weight.dtype), weight).float()  # [R, V]
    return naive.stats_from_logits(logits, temperature=temperature, softcap=softcap, seed=seed, banned=banned)
