"""The context K/V kept from one request to the next, and how much of it the next request reuses.

Typing changes a few tokens around the cursor: the context before them and the context after them are the
same tokens as last time. Two kinds of rows are reused:
- the common leading rows (same tokens at the same positions), as they are. Exact for causal-context
  families (a row's K/V depend only on the rows before it); for bidirectional families those rows also
  saw the old middle and canvas, which is Fast-dLLM's dual-cache approximation carried across requests.
- with approximate reuse, the common trailing rows (same tokens, all moved by the same number of
  positions), their keys re-rotated to the new positions. RoPE rotations compose (K at p + d is K at p
  rotated by d), so the move itself is exact up to one fp32 rounding; what is approximate is that these
  rows attended to the old text before them.
Only the rows between are encoded. Approximate reuse is bounded: after `max_reuse` approximate requests
in a row, or when less than `min_share` of the context would be reused, the next request recomputes the
context in full (exactly, for the family), so errors cannot pile up keystroke after keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dg_lsp.engine.model import KVCache, rope_cos_sin
from dg_lsp.kernels import naive


@dataclass(frozen=True)
class ReusePlan:
    lead: int  # leading context rows reused as they are
    tail: int  # trailing context rows reused, keys re-rotated by `shift` positions (0 rows: none)
    shift: int
    total: int  # context rows of the new request

    @property
    def middle(self) -> range:
        """Indices (into the new context rows) that must be encoded."""
        return range(self.lead, self.total - self.tail)

    @property
    def approximate(self) -> bool:
        return self.tail > 0


@dataclass
class ContextCache:
    max_reuse: int = 16  # approximate reuses in a row before an exact recompute
    min_share: float = 0.5  # reuse (approximately) only when at least this share of rows is reused
    tokens: tuple[int, ...] = ()
    positions: tuple[int, ...] = ()
    kv: KVCache | None = None
    age: int = 0  # approximate reuses since the context was last computed exactly

    def clear(self) -> None:
        self.tokens, self.positions, self.kv, self.age = (), (), None, 0

    def store(self, tokens: tuple[int, ...], positions: tuple[int, ...], kv: KVCache, age: int) -> None:
        """Keep a request's context; `age`: approximate reuses since it was last computed exactly."""
        self.tokens, self.positions, self.kv, self.age = tokens, positions, kv, age

    def plan(self, tokens: tuple[int, ...], positions: tuple[int, ...], allow_tail: bool,
             lead_exact: bool = True) -> ReusePlan:
        """What the request with these context rows can reuse (nothing: lead = tail = 0).

        allow_tail: approximate reuse is on. lead_exact: the family's lead rows are exact (causal context);
        otherwise reusing them is an approximation too, bounded like the tail."""
        n = len(tokens)
        if self.kv is None or (not lead_exact and (not allow_tail or self.age >= self.max_reuse)):
            return ReusePlan(0, 0, 0, n)
        old_t, old_p = self.tokens, self.positions
        limit = min(len(old_t), n)
        lead = 0
        while lead < limit and old_t[lead] == tokens[lead] and old_p[lead] == positions[lead]:
            lead += 1
        tail, shift = 0, (positions[-1] - old_p[-1]) if n and old_p else 0
        if allow_tail and self.age < self.max_reuse:
            while (tail < limit - lead and old_t[-1 - tail] == tokens[-1 - tail]
                   and positions[-1 - tail] - old_p[-1 - tail] == shift):
                tail += 1
            if (lead + tail) < self.min_share * n:
                return ReusePlan(0, 0, 0, n)  # too little in common: recompute rather than approximate
        return ReusePlan(lead, tail, shift if tail else 0, n)

    def reused(self, plan: ReusePlan, rope_theta: float) -> tuple[KVCache | None, KVCache | None]:
        """(lead rows as they are, tail rows moved to their new positions); None where there are none."""
        assert self.kv is not None or (plan.lead == 0 and plan.tail == 0)
        lead = self.kv.truncate(plan.lead) if plan.lead else None
        tail = None
        if plan.tail:
            old = len(self.tokens)
            rows = torch.arange(old - plan.tail, old, device=self.kv.k[0].device)
            moved = self.kv.select(rows)
            tail = KVCache([shift_keys(k, plan.shift, rope_theta) for k in moved.k], moved.v)
        return lead, tail


def shift_keys(k: Tensor, shift: int, theta: float) -> Tensor:
    """Keys with RoPE applied at position p -> the same keys at p + shift. k: [B, Hkv, L, Dh]."""
    if shift == 0:
        return k
    cos, sin = rope_cos_sin(torch.tensor([[shift]], device=k.device), k.shape[-1], theta, torch.float32)
    return naive.rope(k, cos, sin)  # fp32 math, one rounding to k's dtype


def concat(*parts: KVCache | None) -> KVCache:
    """Context caches joined along the rows, in the order given (None parts are skipped)."""
    present = [p for p in parts if p is not None and p.length]
    assert present, "concat needs at least one non-empty cache"
    if len(present) == 1:
        return present[0]
    layers = len(present[0].k)
    return KVCache([torch.cat([p.k[i] for p in present], dim=2) for i in range(layers)],
                   [torch.cat([p.v[i] for p in present], dim=2) for i in range(layers)])
