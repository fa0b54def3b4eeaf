"""DiffusionGemma behind the same surface as `engine.Engine`: infill / complete / describe / count_tokens.

The CLI, the server and the benchmarks use it exactly like the mask-based families; what differs is inside:
- no mask token: a canvas starts as uniform random tokens and the entropy-bound sampler
  (engine.gemma_sampler) accepts the surest positions and re-randomises the rest every step;
- the prompt is encoded causally into the cache, the canvas is decoded against it (engine.gemma);
- infill: the reference has no suffix slot, so the text after each hole is pinned into the canvas right
  after it (the hole's free positions, then the pinned tokens; only the first `SUFFIX_PIN` tokens of the
  suffix): the decoder attends to them bidirectionally as it attends to its own converged tokens. A hole
  with nothing after it is generated block by block (`generate`), as many canvases as its budget needs.
  Rewrite regenerates the selection with its context (the canvas starts from noise, as the reference's).
Randomness: the sampler always samples (multinomial); with no generator given, each request draws from
`torch.Generator().manual_seed(0)`, so the same request gives the same text.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from dg_lsp.engine.confidence import cut_holes
from dg_lsp.engine.engine import StepState
from dg_lsp.engine.errors import RequestError, TokenizerError
from dg_lsp.engine.gemma import GemmaModel
from dg_lsp.engine.gemma_config import GemmaConfig
from dg_lsp.engine.gemma_sampler import EntropyBoundConfig, denoise_canvas, generate
from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig
from dg_lsp.engine.tokenizer import Tokenizer

SUFFIX_PIN = 64  # suffix tokens pinned after the last hole: enough to anchor the end, a short canvas


class GemmaEngine:
    def __init__(self, model: GemmaModel, tokenizer: Tokenizer, cfg: GemmaConfig, dtype_reason: str = "given"):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.dtype_reason = dtype_reason
        self.timings = {"encode_ms": 0.0, "decode_ms": 0.0}  # of the last request (benchmarks read them)

    @property
    def device(self) -> torch.device:
        return self.model.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed.weight.dtype

    def describe(self) -> dict:
        from dg_lsp.engine.quantize import weight_bytes
        from dg_lsp.kernels import fallbacks

        skipped = ", ".join(f"{n} tensors under {p}" for p, n in self.model.skipped_weights.items())
        return {
            "model": self.cfg.name, "family": "diffusion-gemma", "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."), "dtype_reason": self.dtype_reason,
            "params": sum(p.numel() for p in self.model.parameters()),
            "context": self.cfg.max_position_embeddings,
            "kernels": self.model.ops(self.model.embed.weight).name, "kernel_fallbacks": fallbacks(),
            "quantize": "none", "weight_bytes": weight_bytes(self.model),
            "skipped": f"vision tower not loaded (text only): {skipped}" if skipped else "",
        }

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def score(self, text: str, start: int, end: int) -> list[tuple[int, int, float]]:
        """Not for this family: it has no mask token, so a token's probability in place is not defined the
        way the mask families score it (confidence hints stay off)."""
        raise RequestError(f"model {self.cfg.name}: confidence hints (scoring existing tokens) are not "
                           "supported for DiffusionGemma; expected a mask-based family")

    def sampler_config(self, sampler: SamplerConfig, canvas: int) -> EntropyBoundConfig:
        """The request's sampler settings over the checkpoint's generation defaults."""
        gen = self.cfg.generation

        def pick(value, default):
            return default if value is None else value

        return EntropyBoundConfig(
            steps=pick(sampler.max_steps, gen.max_denoising_steps),
            entropy_bound=pick(sampler.entropy_bound, gen.entropy_bound),
            t_min=pick(sampler.temperature_min, gen.t_min), t_max=pick(sampler.temperature_max, gen.t_max),
            stability_threshold=pick(sampler.stability_threshold, gen.stability_threshold),
            confidence_threshold=pick(sampler.confidence_threshold, gen.confidence_threshold),
            canvas_length=canvas)

    def complete(self, request: InfillRequest, sampler: SamplerConfig = SamplerConfig(),
                 generator: torch.Generator | None = None, cancel: Callable[[], bool] | None = None) -> InfillResult:
        last, steps = None, 0
        for last in self.infill(request, sampler, generator, cancel):
            steps += 1
        assert last is not None and last.done
        return InfillResult(texts=self._texts(request, last.canvas), steps=steps, canvas_tokens=len(last.canvas),
                            encode_ms=self.timings["encode_ms"], denoise_ms=self.timings["decode_ms"])

    @torch.inference_mode()
    def infill(self, request: InfillRequest, sampler: SamplerConfig = SamplerConfig(),
               generator: torch.Generator | None = None,
               cancel: Callable[[], bool] | None = None) -> Iterator:
        """Yield a StepState after every decoder forward (canvas: the holes' tokens so far, in order)."""
        prompt, pinned, free = self._layout(request)
        gen = generator if generator is not None else torch.Generator(device=self.device).manual_seed(0)
        timed = TimedModel(self.model, self.timings)
        t0, prompt_ids = time.perf_counter(), torch.tensor([prompt], device=self.device)
        if pinned is None:  # one hole, nothing after it: canvases block by block until its budget or EOS
            budget = request.holes[0].canvas
            cfg = self.sampler_config(sampler, min(self.cfg.canvas_length, budget))
            states = generate(timed, prompt_ids, cfg, gen, max_new_tokens=budget, eos_id=self.cfg.eos_ids,
                              pad_id=self.cfg.pad_id, cancel=cancel)
            for i, s in enumerate(states):
                tokens = torch.cat([s.tokens[0], s.step.argmax[0]]) if not s.done else s.tokens[0]
                yield StepState(step=i, canvas=tokens[:budget], masked=torch.zeros(0, dtype=torch.bool),
                                committed=int(s.step.accepted.sum()), encode_ms=self.timings["encode_ms"] if i == 0 else 0.0,
                                step_ms=(time.perf_counter() - t0) * 1e3, done=s.done)
                t0 = time.perf_counter()
            return
        cfg = self.sampler_config(sampler, len(pinned))
        cache = timed.encode(prompt_ids)
        pinned_t = torch.tensor([pinned], device=self.device)
        for s in denoise_canvas(timed, cache, cfg, gen, pinned=pinned_t, cancel=cancel):
            yield StepState(step=s.step, canvas=s.argmax[0, free], masked=~s.accepted[0, free],
                            committed=int(s.accepted[0, free].sum()),
                            encode_ms=self.timings["encode_ms"] if s.step == 0 else 0.0,
                            step_ms=(time.perf_counter() - t0) * 1e3, done=s.done)
            t0 = time.perf_counter()

    def _layout(self, request: InfillRequest) -> tuple[list[int], list[int] | None, Tensor]:
        """(prompt ids, the canvas's pinned ids with -1 at free positions or None, free positions)."""
        tok, cfg = self.tokenizer, self.cfg
        prompt = ([cfg.bos_id] if cfg.bos_id is not None else []) + tok.encode(request.segments[0])
        after = [tok.encode(seg) for seg in request.segments[1:]]
        after[-1] = after[-1][:SUFFIX_PIN]
        canvas = sum(h.canvas for h in request.holes) + sum(len(a) for a in after)
        if len(prompt) + canvas > cfg.max_position_embeddings:
            raise RequestError(f"prompt {len(prompt)} + canvas {canvas} tokens is longer than the model's context "
                               f"of {cfg.max_position_embeddings}: shorten the prefix window or the canvas")
        if len(request.holes) == 1 and not after[-1]:
            return prompt, None, torch.arange(request.holes[0].canvas)
        pinned: list[int] = []
        for hole, fixed in zip(request.holes, after):
            pinned += [-1] * hole.canvas + fixed
        free = torch.tensor([p < 0 for p in pinned], device=self.device).nonzero()[:, 0]
        return prompt, pinned, free

    def _texts(self, request: InfillRequest, canvas: Tensor) -> tuple[str, ...]:
        """Each hole's text, cut at its first EOS/pad (what follows is filler)."""
        ends = frozenset(self.cfg.eos_ids) | ({self.cfg.pad_id} if self.cfg.pad_id is not None else frozenset())
        holes = cut_holes(canvas, [hole.canvas for hole in request.holes], ends)
        return tuple(self.tokenizer.decode(list(ids)) for ids in holes)


class TimedModel:
    """The model with its encode and decode time added up (the rest of a step is the sampler's)."""

    def __init__(self, model: GemmaModel, timings: dict[str, float]):
        self.model, self.timings, self.vocab_size = model, timings, model.cfg.vocab_size
        timings.update(encode_ms=0.0, decode_ms=0.0)

    def _time(self, key: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        device = self.model.embed.weight.device
        if device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(device)
        self.timings[key] += (time.perf_counter() - t0) * 1e3
        return out

    def encode(self, tokens: Tensor, cache=None):
        return self._time("encode_ms", self.model.encode, tokens, cache)

    def decode(self, canvas: Tensor, cache, self_cond: Tensor | None = None) -> Tensor:
        return self._time("decode_ms", self.model.decode, canvas, cache, self_cond)


def load_gemma_engine(path: Path, name: str, device: torch.device, dtype: torch.dtype, dtype_reason: str,
                      progress=None) -> GemmaEngine:
    """A DiffusionGemma checkpoint directory as an engine (`engine.load` calls this for its model_type)."""
    from dg_lsp.engine.gemma import load_gemma
    from dg_lsp.engine.tokenizer import read_tokenizer

    tokenizer = read_tokenizer(path)  # before the weights: a missing tokenizer fails fast
    model, cfg = load_gemma(path, device, dtype, progress)
    size = tokenizer.hf.get_vocab_size(with_added_tokens=True)
    if size > cfg.vocab_size:
        raise TokenizerError(f"{path / 'tokenizer.json'}: {size} tokens do not fit the model's "
                             f"vocab_size={cfg.vocab_size}")
    return GemmaEngine(model, tokenizer, replace(cfg, name=name), dtype_reason)
