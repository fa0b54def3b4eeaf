"""The engine: load a checkpoint, then infill requests with a denoising loop over the canvas rows only.

`Engine.infill` is a generator of per-step states (so callers can show progress or stop early);
`Engine.complete` runs it to the end and returns text. One Engine serves one thread at a time.

Context handling depends on how the family was trained (config.Family.context_attention):
- causal context (ours): prefix, middle segments and suffix are encoded once, causally; their K/V do not
  depend on the canvas, so the cache is exact, and a token prefix shared with the previous request is
  reused as is (only new tokens are encoded).
- bidirectional context (Dream, LLaDA): the first step is a full forward over the whole layout, which
  also yields the context K/V; later steps reuse them (Fast-dLLM's dual cache). That is an approximation
  once the canvas changes; `refresh_context_every=k` redoes the full forward every k steps (k=1 is exact
  and equals the reference sampler).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from dg_lsp.engine.config import ModelConfig, load_config
from dg_lsp.engine.errors import CheckpointError, ConfigError, InfillCancelled
from dg_lsp.engine.loader import Progress, load_weights
from dg_lsp.engine.model import KVCache, Transformer
from dg_lsp.engine.prompt import Layout, build_layout, predictor_rows
from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig
from dg_lsp.engine.graphs import StepGraphs
from dg_lsp.engine.sampler import held_back_ends, propose, proposal_from_stats, update_canvas
from dg_lsp.engine.tokenizer import Tokenizer, load_tokenizer


@dataclass(frozen=True)
class StepState:
    step: int  # 0-based index of the denoising forward that produced this state
    canvas: Tensor  # [N] tokens of every canvas position, holes in order; mask id where still noise
    masked: Tensor  # [N] bool
    committed: int  # positions committed by this step
    encode_ms: float  # context encode (prefix/suffix) done before this step; 0 after the first
    step_ms: float  # this step's forward and update
    done: bool


class Engine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, cfg: ModelConfig,
                 refresh_context_every: int | None = None, cuda_graphs: bool = True):
        if cfg.family.context_attention == "causal" and cfg.family.shift_logits:
            raise ConfigError(f"family {cfg.family.name}: shifted logits need the row before the canvas, which "
                              "a causal context encodes once; that combination is not supported")
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.refresh_context_every = refresh_context_every
        self._context: tuple[tuple[int, ...], tuple[int, ...], KVCache] | None = None  # for prefix reuse
        # launch-bound small steps on a GPU replay as one graph; elsewhere there is nothing to gain
        on_cuda = self.device.type == "cuda" and self.dtype != torch.float64
        self.graphs = StepGraphs(model, cfg.mask_id, capture=True) if cuda_graphs and on_cuda else None

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.tok_embeddings.weight.dtype

    def describe(self) -> dict:
        from dg_lsp.kernels import naive, ops_for

        return {
            "model": self.cfg.name, "family": self.cfg.family.name, "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."), "params": self.cfg.num_params(),
            "context": self.cfg.max_position_embeddings,
            "kernels": "torch" if ops_for(self.device) is naive else "triton",
        }

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def complete(self, request: InfillRequest, sampler: SamplerConfig = SamplerConfig(),
                 generator: torch.Generator | None = None, cancel: Callable[[], bool] | None = None) -> InfillResult:
        layout = build_layout(request, self.tokenizer, self.cfg)
        encode_ms = denoise_ms = 0.0
        last = None
        for last in self.infill_layout(layout, sampler, generator, cancel):
            encode_ms += last.encode_ms
            denoise_ms += last.step_ms
        assert last is not None and last.done
        return InfillResult(texts=self.decode_holes(layout, last.canvas), steps=last.step + 1,
                            canvas_tokens=len(last.canvas), encode_ms=encode_ms, denoise_ms=denoise_ms)

    def infill(self, request: InfillRequest, sampler: SamplerConfig = SamplerConfig(),
               generator: torch.Generator | None = None,
               cancel: Callable[[], bool] | None = None) -> Iterator[StepState]:
        """Yield the state after every denoising step; the last one has done=True."""
        layout = build_layout(request, self.tokenizer, self.cfg)  # errors surface here, before any work
        return self.infill_layout(layout, sampler, generator, cancel)

    def decode_holes(self, layout: Layout, canvas: Tensor) -> tuple[str, ...]:
        """Text of each hole, cut at the first pad/EOS (what follows it is filler)."""
        ends = self.cfg.end_ids
        texts, offset = [], 0
        for start, end in layout.holes:
            ids = canvas[offset: offset + end - start].tolist()
            offset += end - start
            cut = next((i for i, t in enumerate(ids) if t in ends), len(ids))
            texts.append(self.tokenizer.decode(ids[:cut]))
        return tuple(texts)

    @torch.inference_mode()
    def infill_layout(self, layout: Layout, sampler: SamplerConfig, generator: torch.Generator | None = None,
                      cancel: Callable[[], bool] | None = None) -> Iterator[StepState]:
        """`infill` on an already tokenized layout (benchmarks build token layouts without text)."""
        dev, cfg = self.device, self.cfg

        def check_cancel() -> None:
            if cancel is not None and cancel():
                raise InfillCancelled("infill cancelled between denoising steps")

        t0 = time.perf_counter()
        run = _CanvasForward(self, layout)
        encode_ms = (time.perf_counter() - t0) * 1e3
        canvas = run.tokens[0, run.canvas_idx].clone()
        masked = canvas == cfg.mask_id
        if any(layout.init):  # rewrite: re-noise the share of existing tokens the model likes least
            check_cancel()
            t0 = time.perf_counter()
            canvas, masked = self._renoise_init(canvas, masked, run.logits(), sampler.strength)
            run.tokens[0, run.canvas_idx] = canvas
            encode_ms += (time.perf_counter() - t0) * 1e3
        # the fused epilogue gives every statistic but the probability of an arbitrary token (renoise) and
        # cannot apply a nucleus (top-p): those two take the logits path
        fused = sampler.top_p == 1.0 and sampler.commit != "renoise"
        end_ids = torch.tensor(sorted(cfg.end_ids), dtype=torch.long, device=dev)
        hole = torch.tensor(layout.hole_of(), device=dev)  # canvas position -> its hole
        hole_start = torch.ones_like(hole, dtype=torch.bool)
        hole_start[1:] = hole[1:] != hole[:-1]
        previous = None
        for i in range(sampler.steps):
            check_cancel()
            t0 = time.perf_counter()
            if fused:
                proposal, current_prob = run.fused_proposal(sampler, generator), None
            else:
                logits = run.logits()
                proposal = propose(logits, sampler, generator)
                current_prob = logits.softmax(-1).gather(-1, canvas[:, None])[:, 0] if sampler.commit == "renoise" else None
            before = int(masked.sum())
            stable = (sampler.halt_when_stable and previous is not None
                      and bool((proposal.tokens[masked] == previous[masked]).all()))
            if stable:  # nothing moved since the last step: commit what the model keeps proposing
                canvas, masked = torch.where(masked, proposal.tokens, canvas), torch.zeros_like(masked)
            else:
                held = held_back_ends(proposal.tokens, masked, hole_start, end_ids) if sampler.ends_in_order else None
                canvas, masked = update_canvas(canvas, masked, proposal, current_prob, i, sampler, cfg.mask_id, held)
            previous = proposal.tokens
            run.tokens[0, run.canvas_idx] = canvas
            done = not bool(masked.any())
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            yield StepState(step=i, canvas=canvas.clone(), masked=masked.clone(), committed=before - int(masked.sum()),
                            encode_ms=encode_ms, step_ms=(time.perf_counter() - t0) * 1e3, done=done)
            encode_ms = 0.0
            if done:
                return

    def _renoise_init(self, canvas: Tensor, masked: Tensor, logits: Tensor, strength: float) -> tuple[Tensor, Tensor]:
        existing = ~masked
        n = round(strength * int(existing.sum()))
        if n == 0:
            return canvas, masked
        prob = logits.softmax(-1).gather(-1, canvas[:, None])[:, 0].masked_fill(masked, float("inf"))
        drop = prob.topk(n, largest=False).indices
        canvas, masked = canvas.clone(), masked.clone()
        canvas[drop] = self.cfg.mask_id
        masked[drop] = True
        return canvas, masked

    def _encode_context(self, tokens: Tensor, positions: Tensor, rows: Tensor) -> KVCache:
        """K/V of the context rows, reusing the longest (token, position) prefix of the last request's."""
        ctx_tokens = tuple(tokens[0, rows].tolist())
        ctx_pos = tuple(positions[0, rows].tolist())
        past, n = None, 0
        if self._context is not None:
            old_tokens, old_pos, old_cache = self._context
            limit = min(len(old_tokens), len(ctx_tokens))
            while n < limit and old_tokens[n] == ctx_tokens[n] and old_pos[n] == ctx_pos[n]:
                n += 1
            past = old_cache.truncate(n) if n else None
        self._context = None  # never keep a cache that a failure below could leave half-built
        if n == len(ctx_tokens):
            cache = past if past is not None else KVCache.empty(self.cfg, 1, self.device, self.dtype)
        else:
            new = rows[n:]
            cache = self.model.encode(tokens[:, new], positions[:, new], past)
        self._context = (ctx_tokens, ctx_pos, cache)
        return cache



class _CanvasForward:
    """One request's forwards: which rows run, the context cache, and the step (graph) to replay.

    Logits rows come out in canvas order: row j predicts canvas position j (itself, or the row before
    it for shifted families). Bidirectional families start with a full forward that also fills the
    context cache; causal ones encode the context up front (reusing the last request's prefix).
    """

    def __init__(self, eng: Engine, layout: Layout):
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
        self.forwards = 0
        self.ctx = eng._encode_context(self.tokens, self.positions, self.context_rows) \
            if cfg.family.context_attention == "causal" else None
        self.graph = None

    def _refresh_due(self) -> bool:
        every = self.eng.refresh_context_every
        return self.ctx is None or bool(every and self.forwards % every == 0)

    def hidden(self) -> Tensor:
        """Final-norm hidden states of the predictor rows, [N, D], after one forward."""
        refresh = self._refresh_due()
        self.forwards += 1
        if refresh:
            hidden, self.ctx = self.model.hidden(self.tokens, self.positions, keep=self.context_rows)
            self.graph = None
            return hidden[0, self.pred_rows]
        hidden = self.model.denoise(self.tokens[:, self.active], self.positions[:, self.active], self.ctx)
        return hidden[0, self.pred_in_active]

    def logits(self) -> Tensor:
        logits = self.model.logits(self.hidden())
        logits[:, self.eng.cfg.mask_id] = float("-inf")  # the noise token is never a proposal
        return logits

    def fused_proposal(self, sampler: SamplerConfig, generator: torch.Generator | None):
        mask_id = self.eng.cfg.mask_id
        graphs = self.eng.graphs
        shifted = self.eng.cfg.family.shift_logits
        if graphs is not None and sampler.temperature == 0 and not shifted and not self._refresh_due():
            if self.graph is None:
                self.graph = graphs.prepare(len(self.active), self.ctx)
            self.forwards += 1
            stats = self.graph.run(self.tokens[:, self.active], self.positions[:, self.active])
        else:
            hidden = self.hidden()
            seed = 0
            if sampler.temperature > 0:  # a fresh seed per step, drawn from the caller's generator
                device = generator.device if generator is not None else "cpu"
                seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=device))
            stats = self.model.ops(hidden).lm_head_epilogue(hidden, self.model.lm_head_weight,
                                                            temperature=sampler.temperature, seed=seed, banned=mask_id)
        return proposal_from_stats(stats, sampler, generator)


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={device!r} is not a device: expected auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}, but CUDA is not available here: expected cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r} is not supported: expected auto, cpu, cuda or cuda:N")
    return dev


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        # bf16 matmuls on CPU run ~40x slower than fp32 on the machines we measured; GPUs want bf16
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not supported: expected one of float32, bfloat16, float16")
    return DTYPES[dtype]


def load(model: str | Path | None = None, device: str | None = "auto", dtype: str | torch.dtype | None = None,
         progress: Progress | None = None, family: str | None = None,
         refresh_context_every: int | None = None, quantize: str | None = None) -> Engine:
    """Load a checkpoint directory (config.json, tokenizer.json, model.safetensors or shards)."""
    from dg_lsp.engine import default_model_dir

    path = Path(model) if model else default_model_dir()
    if not path.is_dir():
        raise CheckpointError(f"{path}: model directory does not exist")
    cfg = load_config(path, family)
    tokenizer, cfg = load_tokenizer(path, cfg)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    with torch.device("meta"):
        model = Transformer(cfg)
    load_weights(model, path, dev, dt, progress)
    model.eval()
    return Engine(model, tokenizer, cfg, refresh_context_every=refresh_context_every)
