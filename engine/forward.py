"""One request's forwards: which rows run each step, the context cache, and the step graph to replay.

Rows of a layout: context rows (prefix, middle segments, suffix) have their K/V cached; active rows (the
canvas, and under the logits shift the row before each canvas position) run every denoising step.

- Context: causal families encode it up front, bidirectional ones with their first forward; either way
  reusing what the last request's context allows (engine.context_cache).
- Frozen canvas rows (approximate reuse only, as Fast-dLLM's cache): a canvas position committed at one
  step runs once more with its token as input, then its K/V join the cache and it stops running. Only
  the positions still masked (and, under the shift, the rows that predict them) run after that, so a
  long canvas gets cheaper step by step. With semi-autoregressive blocks the positions of later blocks
  freeze too, with their noise tokens' K/V (Fast-dLLM's dual cache), and run again when their block
  starts. Never on the logits path (renoise may re-mask a commit), with CUDA graphs (fixed rows), or when
  the context is refreshed.
Logits come out per canvas position: row j predicts canvas position j (itself, or the row before it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dg_lsp.engine.context_cache import concat
from dg_lsp.engine.model import KVCache
from dg_lsp.engine.prompt import Layout, predictor_rows
from dg_lsp.engine.request import SamplerConfig
from dg_lsp.engine.sampler import Proposal, proposal_from_stats
from dg_lsp.kernels.naive import TokenStats


class CanvasForward:
    def __init__(self, eng, layout: Layout):
        dev, cfg = eng.device, eng.cfg
        self.eng, self.model = eng, eng.model
        self.tokens = torch.tensor(layout.tokens, device=dev)[None]  # [1, T]
        self.positions = torch.arange(self.tokens.shape[1], device=dev)[None]
        self.canvas_idx = layout.canvas_index.to(dev)  # [N]
        self.pred_rows = predictor_rows(layout, cfg).to(dev)  # [N]
        # rows run in every denoising forward: the canvas, and the rows that predict it under the shift
        self.active = torch.unique(torch.cat([self.canvas_idx, self.pred_rows]))
        is_active = torch.zeros(self.tokens.shape[1], dtype=torch.bool, device=dev)
        is_active[self.active] = True
        self.context_rows = (~is_active).nonzero()[:, 0]
        self.pred_in_active = torch.searchsorted(self.active, self.pred_rows)
        # active rows outside the canvas (under the shift, the row before each hole) run at every step
        self.fixed_rows = self.active[~torch.isin(self.active, self.canvas_idx)]
        self.forwards = 0
        self.graph = None
        self.ctx: KVCache | None = None  # K/V of the context rows, in their order, once complete
        self.pending: Tensor | None = None  # context rows still to encode, beside the canvas (first forward)
        self.freezing = eng.approximate_reuse and eng.refresh_context_every is None and eng.graphs is None
        self.frozen: KVCache | None = None  # K/V of canvas positions that no longer run
        self.frozen_pos = torch.zeros(0, dtype=torch.long, device=dev)  # their canvas positions, in cache order
        self.live = torch.ones(len(self.canvas_idx), dtype=torch.bool, device=dev)  # canvas positions that run
        self._prepare_context()

    # -- context -------------------------------------------------------------------------------------

    def _prepare_context(self) -> None:
        """Reuse what the last request's context cache allows (see engine.context_cache), encode the rest.

        Causal context: the rows between the reused lead and tail are encoded now, causally after the
        lead. Bidirectional: with nothing reusable the first forward runs the whole layout; otherwise the
        new rows run beside the canvas in the first forward, attending to the reused rows, the canvas and
        each other, as they would in a full forward."""
        eng, cfg = self.eng, self.eng.cfg
        cache = eng.context
        self.ctx_tokens = tuple(self.tokens[0, self.context_rows].tolist())
        self.ctx_pos = tuple(self.positions[0, self.context_rows].tolist())
        causal = cfg.family.context_attention == "causal"
        plan = cache.plan(self.ctx_tokens, self.ctx_pos, allow_tail=eng.approximate_reuse, lead_exact=causal)
        self.approximate = plan.approximate or (not causal and plan.lead > 0)
        lead, tail = cache.reused(plan, cfg.rope_theta)
        self.age = cache.age + 1 if self.approximate else 0
        cache.clear()  # never keep a cache that a failure below could leave half-built
        middle = self.context_rows[plan.lead: plan.total - plan.tail]
        if causal:
            if len(middle):
                lead = self.model.encode(self.tokens[:, middle], self.positions[:, middle], lead)
            if lead is None and tail is None:
                lead = KVCache.empty(cfg, 1, eng.device, eng.dtype)
            self._complete(concat(lead, tail))
        elif lead is not None or tail is not None:
            self._lead, self._tail = lead, tail
            self.ctx = concat(lead, tail)
            if len(middle):
                self.pending = middle
            else:
                self._complete(self.ctx)

    def _complete(self, ctx: KVCache) -> None:
        self.ctx, self.pending, self.graph = ctx, None, None
        self.eng.context.store(self.ctx_tokens, self.ctx_pos, ctx, self.age)

    def _refresh_due(self) -> bool:
        every = self.eng.refresh_context_every
        return self.ctx is None or bool(every and self.forwards % every == 0)

    # -- forwards ------------------------------------------------------------------------------------

    def hidden(self, want: Tensor | None = None) -> Tensor:
        """Final-norm hidden states of the rows predicting the canvas positions `want` (bool [N]; None: all,
        and nothing is frozen), [M, D], after one forward."""
        refresh = self._refresh_due()
        self.forwards += 1
        pred = self.pred_rows if want is None else self.pred_rows[want]
        if refresh:
            hidden, ctx = self.model.hidden(self.tokens, self.positions, keep=self.context_rows)
            self.age = 0
            self._complete(ctx)
            self._thaw(torch.ones_like(self.live))  # the whole canvas ran again
            return hidden[0, pred]
        if want is not None and bool((want & ~self.live).any()):
            self._thaw(want & ~self.live)  # a later block's positions: they run again from here
        if self.pending is None and not (self.freezing and want is not None) and self.frozen is None:
            hidden = self.model.denoise(self.tokens[:, self.active], self.positions[:, self.active], self.ctx)
            return hidden[0, self.pred_in_active if want is None else self.pred_in_active[want]]
        # general case: context rows to encode, canvas rows to freeze, fewer rows to run
        if self.frozen is None:
            rows = self.active
        else:
            rows = torch.unique(torch.cat([self.canvas_idx[self.live], pred, self.fixed_rows]))
        freeze = torch.zeros_like(self.live)
        if self.freezing and want is not None:
            # committed before this step (their token is this forward's input) and predicting nothing
            freeze = self.live & ~want
            freeze &= ~torch.isin(self.canvas_idx, pred)
        pending = self.pending if self.pending is not None else rows[:0]
        rows = torch.unique(torch.cat([rows, pending]))
        keep = torch.searchsorted(rows, torch.cat([pending, self.canvas_idx[freeze]]))
        attend = self.ctx if self.frozen is None else concat(self.ctx, self.frozen)
        hidden, kv = self.model.denoise(self.tokens[:, rows], self.positions[:, rows], attend, keep=keep)
        n = len(pending)
        if n:
            self._complete(concat(self._lead, _rows(kv, slice(0, n)), self._tail))
        if bool(freeze.any()):
            new = _rows(kv, slice(n, None))
            self.frozen = new if self.frozen is None else concat(self.frozen, new)
            self.frozen_pos = torch.cat([self.frozen_pos, freeze.nonzero()[:, 0]])
            self.live &= ~freeze
        return hidden[0, torch.searchsorted(rows, pred)]

    def _thaw(self, positions: Tensor) -> None:
        """Canvas positions (bool [N]) run again: their frozen K/V leave the cache."""
        if self.frozen is not None:
            keep = ~positions[self.frozen_pos]
            self.frozen = _rows(self.frozen, keep) if bool(keep.any()) else None
            self.frozen_pos = self.frozen_pos[keep]
        self.live |= positions

    def logits(self) -> Tensor:
        logits = self.model.logits(self.hidden())
        logits[:, self.eng.cfg.mask_id] = float("-inf")  # the noise token is never a proposal
        return logits

    def fused_proposal(self, sampler: SamplerConfig, generator: torch.Generator | None, canvas: Tensor,
                       masked: Tensor) -> Proposal:
        """The step's proposal from the fused epilogue. Only positions still masked go through the LM head
        (the sampler reads nothing else); the committed ones are filled with their own token, certain."""
        mask_id = self.eng.cfg.mask_id
        graphs = self.eng.graphs
        shifted = self.eng.cfg.family.shift_logits
        if (graphs is not None and sampler.temperature == 0 and not shifted and self.pending is None
                and not self._refresh_due()):
            if self.graph is None:
                self.graph = graphs.prepare(len(self.active), self.ctx)
            self.forwards += 1
            stats = self.graph.run(self.tokens[:, self.active], self.positions[:, self.active])
        else:
            hidden = self.hidden(masked)  # [M, D], M = masked positions
            seed = 0
            if sampler.temperature > 0:  # a fresh seed per step, drawn from the caller's generator
                device = generator.device if generator is not None else "cpu"
                seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=device))
            part = self.model.ops(hidden).lm_head_epilogue(hidden, self.model.lm_head_weight,
                                                           temperature=sampler.temperature, seed=seed, banned=mask_id)
            rows = masked.nonzero()[:, 0]
            stats = _scatter_rows(part, rows, canvas) if len(rows) < len(canvas) else part
        return proposal_from_stats(stats, sampler, generator)


def _rows(kv: KVCache, part: slice | Tensor) -> KVCache:
    return KVCache([k[:, :, part] for k in kv.k], [v[:, :, part] for v in kv.v])


def _scatter_rows(part: TokenStats, rows: Tensor, canvas: Tensor) -> TokenStats:
    """Statistics of a subset of canvas rows -> all rows; the others hold their token with certainty."""
    def full(values: Tensor, fill: Tensor | float) -> Tensor:
        out = (fill.clone() if isinstance(fill, Tensor) else torch.full(canvas.shape, fill, dtype=values.dtype,
                                                                        device=values.device))
        out[rows] = values
        return out

    return TokenStats(argmax=full(part.argmax, canvas), max_prob=full(part.max_prob, 1.0),
                      margin=full(part.margin, 1.0), entropy=full(part.entropy, 0.0),
                      sample=full(part.sample, canvas), sample_prob=full(part.sample_prob, 1.0))
