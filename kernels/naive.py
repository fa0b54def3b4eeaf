"""Torch reference implementations of every kernel: same signatures as the Triton launchers.

These are the oracles for the kernel tests and the path taken on CPU / macOS / when triton is missing.
They favour clarity over speed: they materialise what the fast paths never do (full [R, V] logits,
concatenated K/V). Numerical choices are spelled out per function, because the fast kernels must
reproduce exactly these choices, not "something close". "fp32 math" means at least fp32: float64 inputs
(the engine's exactness tests) keep float64 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

name = "torch reference"  # what `kernels.ops_for(...).name` reports for this set


@dataclass(frozen=True)
class TokenStats:
    """Per-row statistics of the next-token distribution, produced by `lm_head_epilogue`."""

    argmax: Tensor  # [R] int64
    max_prob: Tensor  # [R] fp32, probability of argmax
    margin: Tensor  # [R] fp32, top-1 minus top-2 probability
    entropy: Tensor  # [R] fp32, nats
    sample: Tensor  # [R] int64, Gumbel-max sample (== argmax when temperature == 0)
    sample_prob: Tensor  # [R] fp32, probability of the sampled token


def _wide(dtype: torch.dtype) -> torch.dtype:
    """The math dtype: fp32 for 16-bit and fp32 inputs, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def rms_norm(x: Tensor, weight: Tensor, eps: float, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h = x + residual (or x alone); returns (rmsnorm(h) * weight, h). x: [..., D].

    Matches HF Qwen2/Llama RMSNorm (and its decoder layer's residual add) for 16-bit and fp32 inputs:
    - the residual add happens in x.dtype (as the HF decoder layer does), so `h` is rounded to x.dtype
      *before* the norm reads it;
    - mean of squares and rsqrt in fp32 (float64 for float64 inputs, where HF would drop to fp32);
    - the normalised value is rounded to x.dtype, then multiplied by the weight (one more rounding).
    Output dtype is x.dtype even when the weight is fp32 (HF would promote; the engine keeps one dtype).
    """
    h = x if residual is None else x + residual
    h32 = h.to(_wide(x.dtype))
    y = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)
    out = weight.to(h32.dtype) * y.to(x.dtype).to(h32.dtype)
    return out.to(x.dtype), h


def rotate_half(x: Tensor) -> Tensor:
    """HF convention: cat(-x2, x1) on the last dim, where x1, x2 are the two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [B, H, T, D]; cos, sin: [B, T, D] or [T, D] (HF rotate_half convention, cos = cat(f, f).cos()).

    Returns x*cos + rotate_half(x)*sin in x.dtype. The math is fp32 with a single rounding at the end;
    HF computes in x.dtype (three roundings), so against HF the two differ by at most ~1 ulp of x.dtype.
    """
    if cos.dim() == 2:  # [T, D] -> [1, T, D]
        cos, sin = cos[None], sin[None]
    wide = _wide(x.dtype)
    cos32, sin32 = cos.to(wide)[:, None], sin.to(wide)[:, None]  # [B|1, 1, T, D]
    x32 = x.to(wide)
    return (x32 * cos32 + rotate_half(x32) * sin32).to(x.dtype)


def ctx_len_int(ctx_len: int | Tensor | None, capacity: int) -> int:
    if ctx_len is None:
        return capacity
    n = int(ctx_len.item()) if isinstance(ctx_len, Tensor) else int(ctx_len)
    if not 0 <= n <= capacity:
        raise ValueError(f"ctx_len must be in [0, {capacity}] (the cache capacity), got {n}")
    return n


def canvas_attention(
    q: Tensor,
    k_ctx: Tensor,
    v_ctx: Tensor,
    k_canvas: Tensor,
    v_canvas: Tensor,
    scale: float,
    ctx_len: int | Tensor | None = None,
) -> Tensor:
    """Non-causal grouped-query attention of the canvas rows over [context cache | canvas].

    q: [B, Hq, C, D]; k_ctx, v_ctx: [B, Hkv, L, D] of which only the first ctx_len rows are valid;
    k_canvas, v_canvas: [B, Hkv, C, D]. Returns [B, Hq, C, D] in q.dtype.

    Scores, softmax and the weighted sum are fp32 (inputs upcast first), one rounding at the end. The
    order of keys does not matter (no mask, no positions here: RoPE was applied before). ctx_len == 0
    leaves the canvas attending to itself only, so every row always has at least C >= 1 keys.
    """
    B, Hq, C, D = q.shape
    Hkv = k_ctx.shape[1]
    if Hq % Hkv:
        raise ValueError(f"Hq must be a multiple of Hkv, got Hq={Hq}, Hkv={Hkv}")
    n = ctx_len_int(ctx_len, k_ctx.shape[2])
    wide = _wide(q.dtype)
    k = torch.cat([k_ctx[:, :, :n], k_canvas], dim=2).to(wide)  # [B, Hkv, n + C, D]
    v = torch.cat([v_ctx[:, :, :n], v_canvas], dim=2).to(wide)
    group = Hq // Hkv
    k = k.repeat_interleave(group, dim=1)  # query head h reads kv head h // group (HF repeat_kv)
    v = v.repeat_interleave(group, dim=1)
    scores = (q.to(wide) @ k.transpose(-1, -2)) * scale  # [B, Hq, C, n + C]
    return (scores.softmax(dim=-1) @ v).to(q.dtype)


def lm_head_epilogue(
    hidden: Tensor,
    weight: Tensor,
    *,
    temperature: float = 0.0,
    softcap: float | None = None,
    seed: int = 0,
    banned: int = -1,
) -> TokenStats:
    """Next-token statistics for the canvas rows. hidden: [R, D]; weight: [V, D].

    Token `banned` (the mask token; -1 = none) gets logit -inf: it is never proposed and takes no mass.
    logits = hidden @ weight.T with fp32 accumulation (inputs upcast, so fp32 exactly);
    softcap: logits = softcap * tanh(logits / softcap); the distribution is softmax(logits / T) for
    T = temperature > 0, else softmax(logits) — max_prob, margin and entropy describe that distribution.
    Sampling is Gumbel-max: argmax(logits / T + g), g = -log(-log(u)). u and g are float64 (as LLaDA's
    `add_gumbel_noise` does): in fp32, u rounds to 1 with probability ~6e-8 per token and g's tail is
    coarsely quantised, which matters at 152k-token vocabularies. The fast path uses fp32 Philox noise;
    the two agree in distribution, not bit for bit. Temperature 0 returns the argmax as the sample.
    The same seed gives the same noise: pass a fresh one per denoising step (drawn from the engine's
    torch.Generator) unless repeating the draw is intended.
    Ties go to the lowest token id (torch.argmax), as in the fast path.
    This reference materialises [R, V] fp32 logits; the fast path never does.
    """
    check_head_shapes(hidden, weight)
    dt = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs (parity tests)
    logits = hidden.to(dt) @ weight.to(dt).T  # [R, V]
    return stats_from_logits(logits, temperature=temperature, softcap=softcap, seed=seed, banned=banned)


def check_head_shapes(hidden: Tensor, weight: Tensor) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden [R, D] and weight [V, D], got {tuple(hidden.shape)}, {tuple(weight.shape)}")


def stats_from_logits(logits: Tensor, *, temperature: float, softcap: float | None, seed: int,
                      banned: int) -> TokenStats:
    """lm_head_epilogue after the matmul: logits [R, V] in fp32 (or fp64) -> TokenStats."""
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    if banned >= 0:
        logits[:, banned] = float("-inf")
    z = logits / temperature if temperature > 0 else logits
    logp = F.log_softmax(z, dim=-1)
    probs = logp.exp()
    top = probs.topk(min(2, probs.shape[-1]), dim=-1)
    argmax = z.argmax(dim=-1)
    max_prob = probs.gather(-1, argmax[:, None])[:, 0]
    second = top.values[:, 1] if probs.shape[-1] > 1 else torch.zeros_like(max_prob)
    entropy = -torch.where(probs > 0, probs * logp, 0.0).sum(-1)  # a banned token: 0 * -inf counts 0
    if temperature > 0:
        gen = torch.Generator(device=logits.device).manual_seed(seed)
        u = torch.rand(z.shape, generator=gen, device=logits.device, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))
        sample = (z.double() + gumbel).argmax(dim=-1)
    else:
        sample = argmax
    sample_prob = probs.gather(-1, sample[:, None])[:, 0]
    return TokenStats(argmax, max_prob, max_prob - second, entropy, sample, sample_prob)
