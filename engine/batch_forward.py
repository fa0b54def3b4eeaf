"""Many requests' denoising loops in lockstep: one padded model forward per step for all of them.

What batching buys is that each step reads the weights once for B users instead of B times. Per request
(`Member`) everything stays as `Engine.infill_layout` does it for a fresh request (context cache empty):
its layout, its context K/V (causal families: `model.encode` up front; bidirectional ones: the first
step is that request's own full forward, as CanvasForward's), its commit schedule, steps, done flag and
cancel check. What is shared (`PaddedCanvas`) is the cache the canvas rows attend to, padded to a
common shape: per request its context rows, then one slot per active row (the canvas, and under the
logits shift the row before each hole), then padding. `Transformer.denoise_padded` runs the running rows
of all requests packed (no padding through the linear layers), writes their K/V into their slots and
attends under a key-padding mask, so padding never reaches a real row.

Frozen canvas rows (CanvasForward's approximate reuse, on for bidirectional families on CPU): a frozen
row simply stops running and its slot keeps the K/V of its last forward, which is what CanvasForward
moves into its `frozen` cache; so the keys each row attends to are the same set as in the sequential
path (in another order: sums differ by float rounding only).

A finished or cancelled request leaves the batch (`PaddedCanvas.keep` gathers the others' cache rows)
rather than riding along as padding. Rows run packed, so a finished request left in would cost only its
share of the attention; leaving costs one gather of the cache (0.4-0.9 ms at 16 requests of the embedded
model on 2 CPU threads). The two measured the same within noise (bench/bench_batch.py --no-compact,
bench/results/batch-threshold-halt.json); leaving keeps a long-lived batch from carrying dead context.

Only the common case runs here: fill holes of fixed-length checkpoints, one block, the fused epilogue
(top_p 1, commit schedule or threshold), no periodic context refresh, no CUDA graphs. engine.batch sends
everything else to `Engine.complete`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor

from dg_lsp.engine.confidence import hole_confidences, hole_tokens
from dg_lsp.engine.errors import InfillCancelled
from dg_lsp.engine.forward import _scatter_rows  # the sequential path's own fill-in: same proposals
from dg_lsp.engine.model import KVCache
from dg_lsp.engine.prompt import Layout, predictor_rows
from dg_lsp.engine.request import InfillResult, SamplerConfig
from dg_lsp.engine.sampler import Proposal, held_back_ends, proposal_from_stats, update_canvas
from dg_lsp.kernels.naive import TokenStats


def batchable(eng, layout: Layout, sampler: SamplerConfig) -> bool:
    """Does this request's loop run in the batched path (else Engine.complete serves it)?

    A canvas-length probe leaves its context K/V in the cache the request's loop then reuses: exactly
    (as if encoded afresh, which is what a member does) only when the engine's reuse is exact."""
    n = sum(end - start for start, end in layout.holes)
    return (not eng.cfg.variable_length and eng.refresh_context_every is None and not any(layout.init)
            and sampler.top_p == 1.0 and sampler.commit != "renoise"
            and not 0 < sampler.block_length < n
            and (sampler.canvas_length == "fixed" or not eng.approximate_reuse))


class Member:
    """One request's state in the batch: Engine.infill_layout's loop variables and CanvasForward's rows."""

    def __init__(self, eng, layout: Layout, sampler: SamplerConfig, generator: torch.Generator | None,
                 cancel: Callable[[], bool] | None):
        dev, cfg = eng.device, eng.cfg
        self.eng, self.layout, self.sampler, self.generator, self.cancel = eng, layout, sampler, generator, cancel
        self.tokens = torch.tensor(layout.tokens, device=dev)  # [T]; canvas positions updated every step
        self.canvas_idx = layout.canvas_index.to(dev)  # [N]
        pred_rows = predictor_rows(layout, cfg).to(dev)  # [N]
        self.active = torch.unique(torch.cat([self.canvas_idx, pred_rows]))  # [A] rows that run (positions too)
        is_active = torch.zeros(len(self.tokens), dtype=torch.bool, device=dev)
        is_active[self.active] = True
        self.context_rows = (~is_active).nonzero()[:, 0]
        self.pred_in_active = torch.searchsorted(self.active, pred_rows)  # [N]
        self.canvas_in_active = torch.searchsorted(self.active, self.canvas_idx)  # [N]
        self.fixed = ~torch.isin(self.active, self.canvas_idx)  # [A] active rows outside the canvas
        self.bidirectional = cfg.family.context_attention == "bidirectional"
        # CanvasForward.freezing (no context refresh here, see batchable); with CUDA graphs the sequential
        # path keeps every row running, and so does this one, to stay its match
        self.freezing = eng.approximate_reuse and eng.graphs is None
        self.live = torch.ones(len(self.canvas_idx), dtype=torch.bool, device=dev)  # canvas positions that run
        self.ctx: KVCache | None = None
        self.canvas = self.tokens[self.canvas_idx].clone()
        self.masked = self.canvas == cfg.mask_id
        self.probs = torch.full(self.canvas.shape, float("nan"), device=dev)  # Engine's StepState.probs
        hole = torch.tensor(layout.hole_of(), device=dev)
        self.hole_start = torch.ones_like(hole, dtype=torch.bool)
        self.hole_start[1:] = hole[1:] != hole[:-1]
        self.end_ids = torch.tensor(sorted(cfg.end_ids), dtype=torch.long, device=dev)
        self.step_sampler = replace(sampler, steps=max(1, sampler.steps))  # one block: Engine's block_sampler
        self.previous: Tensor | None = None
        self.step = 0
        self.encode_ms = self.denoise_ms = 0.0
        self.run_idx: Tensor | None = None  # this step's running rows, indices into `active`

    # -- context -------------------------------------------------------------------------------------

    def encode(self) -> None:
        """Causal context: encoded once, up front (CanvasForward with nothing to reuse)."""
        if self.bidirectional:
            return
        t0 = time.perf_counter()
        rows = self.context_rows
        if len(rows):
            self.ctx = self.eng.model.encode(self.tokens[None, rows], rows[None])
        else:
            self.ctx = KVCache.empty(self.eng.cfg, 1, self.eng.device, self.eng.dtype)
        self.encode_ms += (time.perf_counter() - t0) * 1e3

    def full_forward(self) -> Tensor:
        """Bidirectional context: the first step is this request's forward over its whole layout, which
        also gives the context K/V. Returns the hidden states predicting the masked positions [M, D]."""
        hidden, self.ctx = self.eng.model.hidden(self.tokens[None], torch.arange(len(self.tokens),
                                                                                 device=self.tokens.device)[None],
                                                  keep=self.context_rows)
        return hidden[0, self.active[self.pred_in_active[self.masked]]]

    # -- one step ------------------------------------------------------------------------------------

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise InfillCancelled("infill cancelled between denoising steps")

    def plan(self) -> Tensor:
        """Rows (indices into `active`) this step's padded forward runs: CanvasForward.hidden's choice."""
        if not self.freezing:
            self.run_idx = torch.arange(len(self.active), device=self.active.device)
            return self.run_idx
        run = self.fixed.clone()
        run[self.canvas_in_active[self.live]] = True
        run[self.pred_in_active[self.masked]] = True
        self.run_idx = run.nonzero()[:, 0]
        return self.run_idx

    def after_forward(self, hidden: Tensor) -> Tensor:
        """hidden: [R, D] of the running rows -> the rows predicting the masked positions [M, D]; canvas
        rows committed before this step and predicting nothing freeze (their slot keeps this K/V)."""
        want = self.pred_in_active[self.masked]
        if self.freezing:
            freeze = self.live & ~self.masked & ~torch.isin(self.canvas_in_active, want)
            self.live &= ~freeze
        return hidden[torch.searchsorted(self.run_idx, want)]

    def seed(self) -> int:
        """CanvasForward.fused_proposal's per-step seed, drawn from this request's generator."""
        if self.sampler.temperature == 0:
            return 0
        device = self.generator.device if self.generator is not None else "cpu"
        return int(torch.randint(2**31 - 1, (1,), generator=self.generator, device=device))

    def commit(self, part: TokenStats) -> bool:
        """Engine.infill_layout's step after the proposal; `part`: statistics of the masked positions.
        Returns done."""
        rows = self.masked.nonzero()[:, 0]
        stats = _scatter_rows(part, rows, self.canvas) if len(rows) < len(self.canvas) else part
        proposal: Proposal = proposal_from_stats(stats, self.sampler, self.generator)
        live, canvas, sampler = self.masked, self.canvas, self.sampler
        stable = (sampler.halt_when_stable and self.previous is not None
                  and bool((proposal.tokens[live] == self.previous[live]).all()))
        if stable:  # nothing moved since the last step: commit what the model keeps proposing
            canvas, live = torch.where(live, proposal.tokens, canvas), torch.zeros_like(live)
        else:
            held = (held_back_ends(proposal.tokens, live, self.hole_start, self.end_ids) if sampler.ends_in_order
                    else None)
            canvas, live = update_canvas(canvas, live, proposal, None, self.step, self.step_sampler,
                                         self.eng.cfg.mask_id, held)
        self.probs = torch.where(self.masked & ~live, proposal.prob.to(self.probs.dtype), self.probs)
        self.canvas, self.masked, self.previous = canvas, live, proposal.tokens
        self.tokens[self.canvas_idx] = canvas
        self.step += 1
        return not bool(live.any())

    def result(self) -> InfillResult:
        eng, layout = self.eng, self.layout
        lengths = [end - start for start, end in layout.holes]
        return InfillResult(texts=eng.decode_holes(layout, self.canvas), steps=self.step,
                            canvas_tokens=len(self.canvas), encode_ms=self.encode_ms, denoise_ms=self.denoise_ms,
                            confidences=hole_confidences(self.canvas, self.probs, lengths, eng.cfg.end_ids),
                            token_ids=hole_tokens(self.canvas, self.probs, lengths, eng.cfg.end_ids))


class PaddedCanvas:
    """The cache every member's canvas rows attend to, padded: member b's keys are its context rows
    [0, L_b), then its active rows' slots [L_b, L_b + A_b). Every slot is a valid key at every step: a
    running row rewrites its slot before any row reads it, a frozen one keeps its last K/V. The last key
    is a scratch slot no member attends to (padding rows' slot, should they ever run)."""

    def __init__(self, members: list[Member]):
        first = members[0]
        cfg, dev, dt = first.eng.cfg, first.eng.device, first.eng.dtype
        self.members = members
        self.base = [m.ctx.length for m in members]  # L_b: where b's slots start
        width = max(m.ctx.length + len(m.active) for m in members) + 1
        self.scratch = width - 1
        shape = (len(members), cfg.num_key_value_heads, width, cfg.head_dim)
        self.cache = KVCache([torch.zeros(shape, device=dev, dtype=dt) for _ in range(cfg.num_hidden_layers)],
                             [torch.zeros(shape, device=dev, dtype=dt) for _ in range(cfg.num_hidden_layers)])
        self.key_mask = torch.zeros(len(members), width, dtype=torch.bool, device=dev)
        for b, m in enumerate(members):
            n = m.ctx.length
            for layer in range(cfg.num_hidden_layers):
                self.cache.k[layer][b, :, :n] = m.ctx.k[layer][0]
                self.cache.v[layer][b, :, :n] = m.ctx.v[layer][0]
            self.key_mask[b, : n + len(m.active)] = True
            m.ctx = None  # the padded cache holds it now

    def keep(self, members: list[Member]) -> None:
        """Only `members` (a subset, in batch order) go on: their rows of the cache are gathered."""
        index = torch.tensor([self.members.index(m) for m in members], device=self.key_mask.device)
        self.cache = KVCache([k.index_select(0, index) for k in self.cache.k],
                             [v.index_select(0, index) for v in self.cache.v])
        self.key_mask = self.key_mask.index_select(0, index)
        self.base = [self.base[i] for i in index.tolist()]
        self.members = members

    def forward(self, members: list[Member]) -> list[Tensor]:
        """One padded forward over the running rows of `members` (all in this batch; one that left
        earlier but has not been dropped just runs no row). Returns each member's hidden rows [R_b, D]."""
        model, dev = self.members[0].eng.model, self.key_mask.device
        plans = {id(m): m.plan() for m in members}
        width = max(len(p) for p in plans.values())
        b = len(self.members)
        tokens = torch.zeros(b, width, dtype=torch.long, device=dev)
        positions = torch.zeros(b, width, dtype=torch.long, device=dev)
        slots = torch.full((b, width), self.scratch, dtype=torch.long, device=dev)
        real = torch.zeros(b, width, dtype=torch.bool, device=dev)
        for i, m in enumerate(self.members):
            run = plans.get(id(m))
            if run is None:
                continue
            rows = m.active[run]
            tokens[i, : len(run)] = m.tokens[rows]
            positions[i, : len(run)] = rows
            slots[i, : len(run)] = run + self.base[i]
            real[i, : len(run)] = True
        hidden = model.denoise_padded(tokens, positions, self.cache, slots, self.key_mask, real)  # [B, R, D]
        index = {id(m): i for i, m in enumerate(self.members)}
        return [hidden[index[id(m)], : len(plans[id(m)])] for m in members]


def lm_head(eng, hidden: list[Tensor], members: list[Member]) -> list[TokenStats]:
    """The fused epilogue over every member's rows. At temperature 0 one call for all (one read of the
    head); otherwise one per member, each with the seed its own generator gives (as Engine draws it)."""
    model, mask_id = eng.model, eng.cfg.mask_id
    if members[0].sampler.temperature == 0:
        rows = torch.cat(hidden)
        stats = model.ops(rows).lm_head_epilogue(rows, model.lm_head_weight, temperature=0.0, seed=0, banned=mask_id)
        out, start = [], 0
        for h in hidden:
            part = slice(start, start + len(h))
            out.append(TokenStats(*(getattr(stats, f)[part] for f in TokenStats.__dataclass_fields__)))
            start += len(h)
        return out
    return [model.ops(h).lm_head_epilogue(h, model.lm_head_weight, temperature=m.sampler.temperature,
                                          seed=m.seed(), banned=mask_id) for h, m in zip(hidden, members)]
