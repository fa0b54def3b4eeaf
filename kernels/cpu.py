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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dg_lsp.kernels import naive
from dg_lsp.kernels.naive import TokenStats


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
