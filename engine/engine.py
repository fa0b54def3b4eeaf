"""The engine: load a checkpoint, then infill requests with a denoising loop over the canvas rows only.

`Engine.infill` is a generator of per-step states (so callers can show progress or stop early);
`Engine.complete` runs it to the end and returns text; `Engine.continue_infill` goes on canvas after canvas
for a middle longer than one canvas. One Engine serves one thread at a time.

Context handling depends on how the family was trained (config.Family.context_attention):
- causal context (ours): prefix, middle segments and suffix are encoded once, causally; their K/V do not
  depend on the canvas, so the cache is exact, and a token prefix shared with the previous request is
  reused as is (only new tokens are encoded).
- bidirectional context (Dream, LLaDA): the first step is a full forward over the whole layout, which
  also yields the context K/V; later steps reuse them (Fast-dLLM's dual cache). That is an approximation
  once the canvas changes; `refresh_context_every=k` redoes the full forward every k steps (k=1 is exact
  and equals the reference sampler).
Across requests the context K/V are kept and only what an edit changed is encoded (engine.context_cache);
`context_reuse` says how far that goes. Which rows run at each step: engine.forward.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from dg_lsp.engine.config import GEMMA_FAMILY, ModelConfig, load_config, read_config
from dg_lsp.engine.confidence import cut_holes, hole_confidences, hole_tokens
from dg_lsp.engine.context_cache import ContextCache
from dg_lsp.engine.device import choose_dtype, resolve_device
from dg_lsp.engine.errors import CheckpointError, ConfigError, InfillCancelled, RequestError
from dg_lsp.engine.forward import CanvasForward
from dg_lsp.engine.loader import Progress, load_weights
from dg_lsp.engine.model import Transformer
from dg_lsp.engine.prompt import Layout, build_layout, continue_after, with_canvases
from dg_lsp.engine.quantize import check_scheme, quantize_model, weight_bytes
from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig
from dg_lsp.engine.graphs import StepGraphs
from dg_lsp.engine.length import chosen_lengths, end_probability
from dg_lsp.engine.sampler import held_back_ends, propose, resize_hole, update_canvas
from dg_lsp.engine.tokenizer import Tokenizer, load_tokenizer


CONTEXT_REUSE = ("auto", "exact", "approximate")


@dataclass(frozen=True)
class StepState:
    step: int  # 0-based index of the denoising forward that produced this state
    canvas: Tensor  # [N] tokens of every canvas position, holes in order; mask id where still noise
    masked: Tensor  # [N] bool
    committed: int  # positions committed by this step
    encode_ms: float  # context encode (prefix/suffix) done before this step; 0 after the first
    step_ms: float  # this step's forward and update
    done: bool
    # variable-length checkpoints (expand/delete tokens): canvas positions per hole after this step (empty:
    # as the layout built them), and how many positions this step's expand and delete tokens added and removed
    lengths: tuple[int, ...] = ()
    expanded: int = 0
    deleted: int = 0
    # [N] probability each committed position's token had under the step that committed it (NaN: still
    # noise); None where not tracked (variable-length canvases). InfillResult.confidences comes from it
    probs: Tensor | None = None


@dataclass(frozen=True)
class CanvasState:
    """A step of `Engine.continue_infill`: the step's state in canvas `canvas` (0-based), and `text`, the
    hole's text so far (the canvases already committed, plus this one once it is done)."""

    canvas: int
    state: StepState
    text: str
    done: bool  # the last state: no canvas follows


def blocks(n: int, steps: int, block_length: int, device: torch.device) -> Iterator[tuple[Tensor, int]]:
    """(canvas positions of each block [n] bool, its steps), left to right. The steps are shared as LLaDA
    shares commits over steps: equal parts, the remainder to the first blocks, at least one each."""
    size = block_length if 0 < block_length < n else n
    starts = range(0, n, size)
    for b, start in enumerate(starts):
        share = steps // len(starts) + (1 if b < steps % len(starts) else 0)
        in_block = torch.zeros(n, dtype=torch.bool, device=device)
        in_block[start: start + size] = True
        yield in_block, max(1, share)


class Engine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, cfg: ModelConfig,
                 refresh_context_every: int | None = None, cuda_graphs: bool = True, quantize: str | None = None,
                 context_reuse: str = "auto", dtype_reason: str = "given"):
        if cfg.family.context_attention == "causal" and cfg.family.shift_logits:
            raise ConfigError(f"family {cfg.family.name}: shifted logits need the row before the canvas, which "
                              "a causal context encodes once; that combination is not supported")
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.refresh_context_every = refresh_context_every
        self.quantize = quantize  # the scheme the block linears were quantized with (None: not)
        self.dtype_reason = dtype_reason  # why the weights are in this dtype (load() says; doctor shows it)
        if context_reuse not in CONTEXT_REUSE:
            raise ConfigError(f"context_reuse={context_reuse!r}: expected one of {', '.join(CONTEXT_REUSE)}")
        self.context_reuse = context_reuse
        self.context = ContextCache()  # the last request's context K/V (engine.context_cache)
        # launch-bound small steps on a GPU replay as one graph; elsewhere there is nothing to gain
        on_cuda = self.device.type == "cuda" and self.dtype != torch.float64
        self.graphs = StepGraphs(model, cfg.mask_id, capture=True) if cuda_graphs and on_cuda else None

    @property
    def approximate_reuse(self) -> bool:
        """Reuse context K/V across requests beyond what is exact (engine.context_cache)?

        "auto": yes for bidirectional families, whose cached context is already Fast-dLLM's approximation
        within a request (and whose exact alternative is a full forward per keystroke); no for causal
        families, whose lead-row reuse is exact."""
        if self.context_reuse == "auto":
            return self.cfg.family.context_attention == "bidirectional"
        return self.context_reuse == "approximate"

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.tok_embeddings.weight.dtype

    def describe(self) -> dict:
        from dg_lsp.kernels import fallbacks

        return {
            "model": self.cfg.name, "family": self.cfg.family.name, "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."), "dtype_reason": self.dtype_reason,
            "params": self.cfg.num_params(),
            "context": self.cfg.max_position_embeddings,
            "kernels": self.model.ops(self.model.tok_embeddings.weight).name, "kernel_fallbacks": fallbacks(),
            "quantize": self.quantize or "none", "weight_bytes": weight_bytes(self.model),
        }

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def complete(self, request: InfillRequest, sampler: SamplerConfig = SamplerConfig(),
                 generator: torch.Generator | None = None, cancel: Callable[[], bool] | None = None) -> InfillResult:
        layout = self.layout_for(request, sampler, cancel)
        encode_ms = denoise_ms = 0.0
        last = None
        for last in self.infill_layout(layout, sampler, generator, cancel):
            encode_ms += last.encode_ms
            denoise_ms += last.step_ms
        assert last is not None and last.done
        lengths = last.lengths or [end - start for start, end in layout.holes]
        return InfillResult(texts=self.decode_holes(layout, last.canvas, last.lengths), steps=last.step + 1,
                            canvas_tokens=len(last.canvas), encode_ms=encode_ms, denoise_ms=denoise_ms,
                            confidences=hole_confidences(last.canvas, last.probs, lengths, self.cfg.end_ids),
                            token_ids=hole_tokens(last.canvas, last.probs, lengths, self.cfg.end_ids))

    def infill(self, request: InfillRequest, sampler: SamplerConfig = SamplerConfig(),
               generator: torch.Generator | None = None,
               cancel: Callable[[], bool] | None = None) -> Iterator[StepState]:
        """Yield the state after every denoising step; the last one has done=True."""
        layout = self.layout_for(request, sampler, cancel)  # errors surface here, before any denoising
        return self.infill_layout(layout, sampler, generator, cancel)

    def continue_infill(self, request: InfillRequest, sampler: SamplerConfig = SamplerConfig(),
                        generator: torch.Generator | None = None, cancel: Callable[[], bool] | None = None,
                        max_canvases: int = 4, stop: Callable[[str], bool] | None = None) -> Iterator[CanvasState]:
        """`infill` canvas after canvas, for a middle longer than one canvas: each finished canvas becomes
        part of the prefix (its tokens as sampled) and a fresh canvas of the same length starts at the new
        end, before the same suffix. The context cache sees a longer prefix: exact for causal-context
        families (only the new tokens are encoded), its approximate reuse for bidirectional ones. It ends
        after a canvas that holds an end token (pad/EOS), after `max_canvases`, when `stop(text so far)`
        says so (the server's block stop rule), or when a next canvas would not fit the context.
        Only a single fill hole continues; other requests run one canvas. `cancel` is polled before every
        denoising step of every canvas, as in `infill`."""
        if not isinstance(max_canvases, int) or max_canvases < 1:
            raise RequestError(f"max_canvases={max_canvases!r}: expected an integer >= 1")
        layout = self.layout_for(request, sampler, cancel)  # errors surface here, before any denoising
        if len(layout.holes) != 1 or any(layout.init):
            max_canvases = 1
        return self._continue(layout, sampler, generator, cancel, max_canvases, stop)

    def _continue(self, layout: Layout, sampler: SamplerConfig, generator: torch.Generator | None,
                  cancel: Callable[[], bool] | None, max_canvases: int,
                  stop: Callable[[str], bool] | None) -> Iterator[CanvasState]:
        (start, end), = layout.holes
        width, ends, texts = end - start, self.cfg.end_ids, []
        for k in range(max_canvases):
            last = None
            for last in self.infill_layout(layout, sampler, generator, cancel):
                if not last.done:
                    yield CanvasState(canvas=k, state=last, text="".join(texts), done=False)
            assert last is not None and last.done
            ids = last.canvas.tolist()
            cut = next((i for i, t in enumerate(ids) if t in ends), None)
            texts.append(self.tokenizer.decode(ids[:cut]))
            text = "".join(texts)
            ended = cut is not None or k + 1 == max_canvases or (stop is not None and stop(text))
            following = None if ended else continue_after(layout, ids, width, self.cfg)
            yield CanvasState(canvas=k, state=last, text=text, done=following is None)
            if following is None:
                return
            if cancel is not None and cancel():  # before the next canvas's context encode
                raise InfillCancelled("infill cancelled between canvases")
            layout = following

    def layout_for(self, request: InfillRequest, sampler: SamplerConfig,
                   cancel: Callable[[], bool] | None = None) -> Layout:
        """The request's token layout; with `sampler.canvas_length == "probe"` each fill hole's canvas is
        cut to the length a first forward at the full length points to (engine.length)."""
        layout = build_layout(request, self.tokenizer, self.cfg)
        fill = [not init for init in layout.init]
        if sampler.canvas_length != "probe" or self.cfg.variable_length or not any(fill):
            return layout
        if cancel is not None and cancel():
            raise InfillCancelled("infill cancelled before the canvas-length probe")
        sizes = [end - start for start, end in layout.holes]
        chosen = self.probe_lengths(layout, fill)
        if chosen == sizes:
            return layout
        holes = tuple(replace(hole, canvas=n) for hole, n in zip(request.holes, chosen))
        return build_layout(replace(request, holes=holes), self.tokenizer, self.cfg)

    @torch.inference_mode()
    def probe_lengths(self, layout: Layout, fill: list[bool]) -> list[int]:
        """Canvas length per hole from one forward over `layout` with every canvas position masked."""
        end_ids = torch.tensor(sorted(self.cfg.end_ids), dtype=torch.long, device=self.device)
        if not len(end_ids):
            raise ConfigError(f"{self.cfg.name}: canvas_length=probe needs the model's end tokens (pad/EOS), and its "
                              "config names none: expected canvas_length=fixed")
        logits = CanvasForward(self, layout).logits()
        return chosen_lengths(end_probability(logits, end_ids), [e - s for s, e in layout.holes], fill)

    def decode_holes(self, layout: Layout, canvas: Tensor, lengths: tuple[int, ...] = ()) -> tuple[str, ...]:
        """Text of each hole, cut at the first pad/EOS (what follows it is filler). `lengths`: canvas
        positions per hole when expand/delete tokens changed them (StepState.lengths)."""
        holes = cut_holes(canvas, lengths or [end - start for start, end in layout.holes], self.cfg.end_ids)
        return tuple(self.tokenizer.decode(list(ids)) for ids in holes)

    @torch.inference_mode()
    def infill_layout(self, layout: Layout, sampler: SamplerConfig, generator: torch.Generator | None = None,
                      cancel: Callable[[], bool] | None = None) -> Iterator[StepState]:
        """`infill` on an already tokenized layout (benchmarks build token layouts without text)."""
        dev, cfg = self.device, self.cfg

        def check_cancel() -> None:
            if cancel is not None and cancel():
                raise InfillCancelled("infill cancelled between denoising steps")

        t0 = time.perf_counter()
        run = CanvasForward(self, layout)
        encode_ms = (time.perf_counter() - t0) * 1e3
        canvas = run.tokens[0, run.canvas_idx].clone()
        masked = canvas == cfg.mask_id
        probs = torch.full(canvas.shape, float("nan"), device=dev)  # see StepState.probs
        if any(layout.init):  # rewrite: re-noise the share of existing tokens the model likes least
            check_cancel()
            t0 = time.perf_counter()
            logits = run.logits()
            canvas, masked = self._renoise_init(canvas, masked, logits, sampler.strength)
            probs = torch.where(masked, probs, token_probs(canvas, logits).to(probs.dtype))  # kept tokens
            run.tokens[0, run.canvas_idx] = canvas
            encode_ms += (time.perf_counter() - t0) * 1e3
        # the fused epilogue gives every statistic but the probability of an arbitrary token (renoise) and
        # cannot apply a nucleus (top-p): those two take the logits path
        fused = sampler.top_p == 1.0 and sampler.commit != "renoise"
        end_ids = torch.tensor(sorted(cfg.end_ids), dtype=torch.long, device=dev)
        hole = torch.tensor(layout.hole_of(), device=dev)  # canvas position -> its hole
        hole_start = torch.ones_like(hole, dtype=torch.bool)
        hole_start[1:] = hole[1:] != hole[:-1]
        if not bool(masked.any()):  # nothing to fill (a rewrite that re-noised nothing): done as it is
            yield StepState(step=0, canvas=canvas.clone(), masked=masked.clone(), committed=0, encode_ms=encode_ms,
                            step_ms=0.0, done=True, probs=probs.clone())
            return
        if cfg.variable_length:
            yield from self._denoise_variable(layout, run, canvas, sampler, generator, check_cancel, encode_ms)
            return
        i = 0
        for in_block, block_steps in blocks(len(canvas), sampler.steps, sampler.block_length, dev):
            block_sampler = replace(sampler, steps=block_steps)
            previous = None
            for j in range(block_steps):
                live = masked & in_block  # what this step may commit
                if not bool(live.any()):
                    break
                check_cancel()
                t0 = time.perf_counter()
                if fused:
                    proposal, current_prob = run.fused_proposal(sampler, generator, canvas, live), None
                else:
                    logits = run.logits()
                    proposal = propose(logits, sampler, generator)
                    current_prob = (logits.softmax(-1).gather(-1, canvas[:, None])[:, 0]
                                    if sampler.commit == "renoise" else None)
                before = int(masked.sum())
                stable = (sampler.halt_when_stable and previous is not None
                          and bool((proposal.tokens[live] == previous[live]).all()))
                if stable:  # nothing moved since the last step: commit what the model keeps proposing
                    canvas, live = torch.where(live, proposal.tokens, canvas), torch.zeros_like(live)
                else:
                    held = held_back_ends(proposal.tokens, live, hole_start, end_ids) if sampler.ends_in_order else None
                    canvas, live = update_canvas(canvas, live, proposal, current_prob, j, block_sampler, cfg.mask_id,
                                                 held)
                probs = torch.where(masked & ~live & in_block, proposal.prob.to(probs.dtype), probs)  # committed now
                masked = (masked & ~in_block) | live
                previous = proposal.tokens
                run.tokens[0, run.canvas_idx] = canvas
                done = not bool(masked.any())
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                yield StepState(step=i, canvas=canvas.clone(), masked=masked.clone(),
                                committed=before - int(masked.sum()), encode_ms=encode_ms,
                                step_ms=(time.perf_counter() - t0) * 1e3, done=done, probs=probs.clone())
                encode_ms, i = 0.0, i + 1
                if done:
                    return

    def _denoise_variable(self, layout: Layout, run: CanvasForward, canvas: Tensor, sampler: SamplerConfig,
                          generator: torch.Generator | None, check_cancel: Callable[[], None],
                          encode_ms: float) -> Iterator[StepState]:
        """The loop of checkpoints with expand/delete tokens (DreamOn; engine.reference.reference_dreamon).

        Each step: logits of the canvas (the expand logit lowered by 1e9 in a hole at its cap, at the
        context length, or out of expand budget, as DreamOn does), the sampler's commits, then each hole's
        length edits (sampler.resize_hole). A step that changed a length rebuilds the layout and the
        per-request forward: the rows after a hole move, and the context K/V are reused as across requests
        (engine.context_cache: exact for the prefix of a causal family, approximate otherwise). The
        schedule counts from the first step; past `steps` every masked position commits at each step, so
        the loop ends when no mask is left (each expansion spends budget). One block; no renoise, no halt
        on a stable canvas (the positions move)."""
        cfg, dev = self.cfg, self.device
        if sampler.commit == "renoise" or sampler.block_length:
            raise RequestError(f"model {cfg.name} grows and shrinks its canvas (expand/delete tokens): commit="
                               f"{sampler.commit!r} and block_length={sampler.block_length} are not supported with it; "
                               "expected commit 'schedule' or 'threshold' and block_length 0")
        end_ids = torch.tensor(sorted(cfg.end_ids), dtype=torch.long, device=dev)
        budget = [sampler.expand_budget or sampler.max_canvas] * len(layout.holes)
        i = 0
        while True:
            check_cancel()
            t0 = time.perf_counter()
            lengths = [end - start for start, end in layout.holes]
            hole = torch.tensor(layout.hole_of(), dtype=torch.long, device=dev)
            masked = canvas == cfg.mask_id
            context_left = cfg.max_position_embeddings - len(layout.tokens)
            room = [min(sampler.max_canvas - n, b, context_left) for n, b in zip(lengths, budget)]
            logits = run.logits()
            blocked = torch.tensor([r <= 0 for r in room], device=dev)[hole]
            logits[blocked, cfg.expand_id] -= 1e9
            proposal = propose(logits, sampler, generator)
            hole_start = torch.ones_like(masked)
            hole_start[1:] = hole[1:] != hole[:-1]
            held = held_back_ends(proposal.tokens, masked, hole_start, end_ids) if sampler.ends_in_order else None
            canvas, still = update_canvas(canvas, masked, proposal, None, min(i, sampler.steps - 1), sampler,
                                          cfg.mask_id, held)
            committed = int(masked.sum() - still.sum())
            canvases, expanded, deleted, offset = [], 0, 0, 0
            for h, n in enumerate(lengths):
                span = slice(offset, offset + n)
                part, grew, shrank = resize_hole(canvas[span].tolist(), masked[span].tolist(), cfg.expand_id,
                                                 cfg.delete_id, cfg.mask_id, max(room[h], 0))
                canvases.append(part)
                budget[h] -= grew
                expanded, deleted, offset = expanded + grew, deleted + shrank, offset + n
            canvas = torch.tensor([t for part in canvases for t in part], dtype=torch.long, device=dev)
            masked = canvas == cfg.mask_id
            done = not bool(masked.any())
            if expanded or deleted:  # positions moved
                layout = with_canvases(layout, canvases, cfg)
                if not done:
                    run = CanvasForward(self, layout)
            else:
                run.tokens[0, run.canvas_idx] = canvas
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            yield StepState(step=i, canvas=canvas.clone(), masked=masked.clone(), committed=committed,
                            encode_ms=encode_ms, step_ms=(time.perf_counter() - t0) * 1e3, done=done,
                            lengths=tuple(len(p) for p in canvases), expanded=expanded, deleted=deleted)
            encode_ms, i = 0.0, i + 1
            if done:
                return

    @torch.inference_mode()
    def score(self, text: str, start: int, end: int) -> list[tuple[int, int, float]]:
        """How likely the model finds each existing token of `text[start:end]`, in one forward: the span is
        a rewrite hole holding its own tokens (as a rewrite's first step sees them, `token_probs`), the rest
        of `text` its context. One (char start, char end, probability) per token, offsets into `text`."""
        span = text[start:end]
        ids = self.tokenizer.encode(span)
        if not ids:
            return []
        layout = build_layout(InfillRequest.rewrite(text[:start], span, text[end:], len(ids)), self.tokenizer, self.cfg)
        run = CanvasForward(self, layout)
        canvas = run.tokens[0, run.canvas_idx]
        prob = token_probs(canvas, run.logits()).tolist()
        spans, offset = [], start
        for k in range(len(ids)):  # char ends from decoding growing prefixes (a token may end mid-character)
            stop = min(end, start + len(self.tokenizer.decode(ids[: k + 1])))
            spans.append((offset, max(offset, stop), float(prob[k])))
            offset = max(offset, stop)
        return spans

    def _renoise_init(self, canvas: Tensor, masked: Tensor, logits: Tensor, strength: float) -> tuple[Tensor, Tensor]:
        existing = ~masked
        n = round(strength * int(existing.sum()))
        if n == 0:
            return canvas, masked
        prob = token_probs(canvas, logits).masked_fill(masked, float("inf"))
        drop = prob.topk(n, largest=False).indices
        canvas, masked = canvas.clone(), masked.clone()
        canvas[drop] = self.cfg.mask_id
        masked[drop] = True
        return canvas, masked


def token_probs(canvas: Tensor, logits: Tensor) -> Tensor:
    """Probability of each canvas token under its logits (`canvas: [N]`, `logits: [N, V]`): what a rewrite's
    re-noising ranks and what confidence hints flag."""
    return logits.softmax(-1).gather(-1, canvas[:, None])[:, 0]


def is_gemma(raw: dict, family: str | None) -> bool:
    """DiffusionGemma has an engine of its own (engine.gemma_engine): no mask token, MoE, two modes."""
    return family == GEMMA_FAMILY or (family is None and raw.get("model_type") == "diffusion_gemma")


def _load_gemma(path: Path, device: str | None, dtype, progress: Progress | None, quantize: str | None):
    from dg_lsp.engine.gemma_config import load_gemma_config
    from dg_lsp.engine.gemma_engine import load_gemma_engine
    from dg_lsp.engine.hub import repo_id_of

    if quantize is not None:
        raise ConfigError(f"quantize={quantize!r}: DiffusionGemma's weights are not quantized yet (its experts are "
                          "3-D tensors torchao's int8 weight-only does not cover here): expected null")
    cfg = load_gemma_config(path)  # validated before any weight is read
    dev = resolve_device(device)
    choice = choose_dtype(dtype, dev, cfg)
    return load_gemma_engine(path, repo_id_of(path) or path.resolve().name, dev, choice.dtype, choice.reason, progress)


def load(model: str | Path | None = None, device: str | None = "auto", dtype: str | torch.dtype | None = None,
         progress: Progress | None = None, family: str | None = None,
         refresh_context_every: int | None = None, quantize: str | None = None,
         context_reuse: str = "auto") -> Engine:
    """Load a checkpoint (config.json, tokenizer.json, model.safetensors or shards). `model` is a directory,
    a Hugging Face repo id `org/name[@revision]` in the local cache, or a cache folder (engine.hub)."""
    from dg_lsp.engine import default_model_dir
    from dg_lsp.engine.hub import repo_id_of, resolve_model

    path = resolve_model(model or default_model_dir())
    if not path.is_dir():
        raise CheckpointError(f"{path}: model directory does not exist")
    if is_gemma(read_config(path), family):
        return _load_gemma(path, device, dtype, progress, quantize)
    cfg = load_config(path, family, repo_id=repo_id_of(path))
    tokenizer, cfg = load_tokenizer(path, cfg)
    dev = resolve_device(device)
    choice = choose_dtype(dtype, dev, cfg)
    dt = choice.dtype
    quantize = check_scheme(quantize, dt)  # before the weights load: a bad setting fails fast
    with torch.device("meta"):
        model = Transformer(cfg)
    load_weights(model, path, dev, dt, progress)
    model.eval()
    if quantize is not None:
        quantize_model(model, quantize)
    return Engine(model, tokenizer, cfg, refresh_context_every=refresh_context_every, quantize=quantize,
                  context_reuse=context_reuse, dtype_reason=choice.reason)
