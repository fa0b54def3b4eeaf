"""DiffusionGemma's mixture of experts: a router on the raw residual and top-k gated-GELU experts.

Shapes: N tokens (batch and rows flattened), H hidden, E experts, K experts per token, I expert width.
`moe_reference` is the plain loop over experts (the oracle). `moe_grouped` (the fast path) sorts the N*K
(token, expert) pairs by expert once and runs all experts in one `torch._grouped_mm` per projection where
that runs and is right (probed once per device kind and dtype; on CPU in torch 2.13: bf16 and fp32),
else a loop over contiguous slices. Both take the router's output, so tests compare them on the same
routing. On the 2-core development CPU (bench/bench_moe.py: E=128, top-8, H=704, I=176; best of 15 runs,
machine shared), N=256 bf16: reference 33 ms, slice loop 29 ms, grouped_mm 23 ms; N=16 bf16: 15 / 10 /
8 ms; fp32 alike (39 / 34 / 30 ms at N=256).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MoE(nn.Module):
    """Router weights (proj, scale, per_expert_scale) and expert weights, as transformers stores them:
    gate_up_proj [E, 2I, H] with the gate rows first, down_proj [E, H, I]."""

    def __init__(self, hidden: int, num_experts: int, top_k: int, intermediate: int, eps: float):
        super().__init__()
        self.top_k, self.eps = top_k, eps
        self.proj = nn.Linear(hidden, num_experts, bias=False)
        self.scale = nn.Parameter(torch.ones(hidden))
        self.per_expert_scale = nn.Parameter(torch.ones(num_experts))
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate, hidden))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden, intermediate))

    def forward(self, resid: Tensor, x: Tensor, fast: bool = True) -> Tensor:
        """resid: the raw residual (routes); x: its pre-expert norm (what the experts read). [..., H] each."""
        weights, index = route(resid.reshape(-1, resid.shape[-1]), self.scale, self.proj.weight,
                               self.per_expert_scale, self.top_k, self.eps)
        experts = moe_grouped if fast else moe_reference
        return experts(x.reshape(-1, x.shape[-1]), weights, index, self.gate_up_proj, self.down_proj).view_as(x)


def route(x: Tensor, scale: Tensor, proj: Tensor, per_expert_scale: Tensor, top_k: int,
          eps: float) -> tuple[Tensor, Tensor]:
    """x: [N, H] -> (weights [N, K] fp32, expert index [N, K]).

    rmsnorm without a weight (fp32 inside, rounded to x.dtype), times scale and H**-0.5 in x.dtype, the
    projection in x.dtype, then softmax over all E experts in fp32, top-k, the k weights renormalised to
    sum 1, and each multiplied by its expert's learned scale (the result stays fp32).
    """
    h = rms_norm(x, None, eps) * scale * x.shape[-1] ** -0.5
    probs = F.linear(h, proj).softmax(dim=-1, dtype=torch.float32)  # [N, E]
    weights, index = probs.topk(top_k, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights * per_expert_scale[index], index


def moe_reference(x: Tensor, weights: Tensor, index: Tensor, gate_up: Tensor, down: Tensor) -> Tensor:
    """sum_k weights[n, k] * expert_{index[n, k]}(x[n]); x: [N, H] -> [N, H] in x.dtype.

    Expert by expert over the tokens routed to it, as transformers does: the expert runs in x.dtype, its
    output times the fp32 weight is rounded to x.dtype and added into an x.dtype accumulator.
    """
    out = torch.zeros_like(x)
    for e in index.unique().tolist():
        token, slot = torch.where(index == e)
        y = _expert(x[token], gate_up[e], down[e]) * weights[token, slot, None]
        out.index_add_(0, token, y.to(x.dtype))
    return out


def moe_grouped(x: Tensor, weights: Tensor, index: Tensor, gate_up: Tensor, down: Tensor) -> Tensor:
    """`moe_reference` with the (token, expert) pairs sorted by expert: one gather, each expert on a
    contiguous slice (a single grouped GEMM per projection where `torch._grouped_mm` supports the device
    and dtype), one weighted scatter-add. The k contributions of a token are summed in fp32 and rounded
    once, so it differs from the reference (which rounds each one) by about one ulp of x.dtype."""
    n, k = index.shape
    flat = index.reshape(-1)  # [N*K]
    order = flat.argsort(stable=True)
    token = order // k  # token of each sorted pair
    counts = torch.bincount(flat, minlength=gate_up.shape[0])  # [E]
    xs = x[token]  # [N*K, H], grouped by expert
    if _grouped_mm_ok(x.device.type, x.dtype):
        offs = counts.cumsum(0).to(torch.int32)
        gate, up = torch._grouped_mm(xs, gate_up.transpose(1, 2), offs=offs).chunk(2, dim=-1)
        ys = torch._grouped_mm(F.gelu(gate, approximate="tanh") * up, down.transpose(1, 2), offs=offs)
    else:
        ys = torch.empty_like(xs)
        start = 0
        for e, c in enumerate(counts.tolist()):  # one host sync; experts nobody chose cost nothing
            if c:
                ys[start:start + c] = _expert(xs[start:start + c], gate_up[e], down[e])
                start += c
    ys = ys.float() * weights.reshape(-1)[order, None]  # [N*K, H]
    return torch.zeros(n, x.shape[1], dtype=torch.float32, device=x.device).index_add_(0, token, ys).to(x.dtype)


def _expert(x: Tensor, gate_up: Tensor, down: Tensor) -> Tensor:
    """One expert: down(gelu_tanh(gate(x)) * up(x)); gate_up [2I, H] holds the gate rows first."""
    gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
    return F.linear(F.gelu(gate, approximate="tanh") * up, down)


def rms_norm(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """Gemma's RMSNorm: x / rms(x) in fp32 (float64 stays float64), times the weight as is (not 1 + w; no
    weight for the unscaled norms) still in fp32, rounded once to x.dtype."""
    h = x.to(torch.promote_types(x.dtype, torch.float32))
    h = h * torch.pow(h.pow(2).mean(-1, keepdim=True) + eps, -0.5)
    return (h if weight is None else h * weight.to(h.dtype)).to(x.dtype)


@functools.cache
def _grouped_mm_ok(device_type: str, dtype: torch.dtype) -> bool:
    """Whether torch._grouped_mm runs for this device kind and dtype and agrees with per-group matmuls, on
    operands laid out as `moe_grouped` passes them (transposed [G, N, K] weights, an empty group)."""
    if not hasattr(torch, "_grouped_mm") or dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return False
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(48, 32, generator=gen).to(device_type, dtype)
    b = torch.randn(3, 64, 32, generator=gen).to(device_type, dtype)  # [G, N, K], as gate_up_proj
    offs = torch.tensor([16, 16, 48], device=device_type, dtype=torch.int32)  # group 1 is empty
    try:
        got = torch._grouped_mm(a, b.transpose(1, 2), offs=offs)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return False
    want = torch.cat([a[:16] @ b[0].T, a[16:] @ b[2].T])
    return bool(torch.allclose(got.float(), want.float(), rtol=2e-2, atol=2e-2))
