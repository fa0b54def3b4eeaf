"""Backends behind one protocol: the local engine, and a deterministic fake for tests.

A backend is owned by the scheduler's worker thread: `load` and `complete` run there, never on the event
loop. Only `EngineBackend.load` imports the engine's torch modules.

The remote backend (dg_lsp.remote) speaks the HTTP infill API that `dg-lsp serve` serves (docs/serving.md).
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Callable, Mapping, Protocol

from dg_lsp.engine.errors import InfillCancelled
from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig

Progress = Callable[[str, int, int], None]
CancelCheck = Callable[[], bool]
StopCheck = Callable[[str], bool]  # the text so far has ended (a block's stop rule)
Partial = Callable[[str], None]  # the text so far, after each canvas


class InfillBackend(Protocol):
    def load(self, progress: Progress | None = None) -> None: ...

    def complete(self, request: InfillRequest, sampler: SamplerConfig, cancel: CancelCheck | None = None,
                 seed: int = 0, canvases: int = 1, stop: StopCheck | None = None,
                 partial: Partial | None = None) -> InfillResult:
        """Fill the request's holes. With `canvases` > 1 a single fill hole may continue canvas after canvas
        (engine.Engine.continue_infill) until `stop(text so far)`, an end token or that many canvases;
        `partial` hears the text so far after each canvas."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def score(self, text: str, start: int, end: int) -> list[tuple[int, int, float]]:
        """(char start, char end, probability) of each existing token of `text[start:end]`, offsets into
        `text` (confidence hints). Raises an `EngineError` where the model cannot score."""
        ...

    def context_limit(self) -> int | None:
        """Most tokens one request (context + canvas) may hold, or None when unbounded."""
        ...

    def describe(self) -> dict: ...


class EngineBackend:
    """The local diffusion engine (`engine.load`); torch is imported when the model loads."""

    def __init__(self, model: str | None = None, device: str = "auto", dtype: str | None = None,
                 family: str | None = None, quantize: str | None = None, context_reuse: str = "auto") -> None:
        self.model, self.device, self.dtype = model, device, dtype
        self.family, self.quantize, self.context_reuse = family, quantize, context_reuse
        self._engine = None

    def load(self, progress: Progress | None = None) -> None:
        from dg_lsp import engine
        self._engine = engine.load(self.model, device=self.device, dtype=self.dtype, progress=progress,
                                   family=self.family, quantize=self.quantize,
                                   context_reuse=self.context_reuse)

    @property
    def engine(self):
        if self._engine is None:
            raise RuntimeError("the engine backend was used before its model was loaded")
        return self._engine

    def complete(self, request: InfillRequest, sampler: SamplerConfig, cancel: CancelCheck | None = None,
                 seed: int = 0, canvases: int = 1, stop: StopCheck | None = None,
                 partial: Partial | None = None) -> InfillResult:
        generator = None
        if sampler.temperature > 0:
            import torch  # already imported by engine.load

            info = self.engine.describe()
            generator = torch.Generator(device=str(info.get("device", "cpu"))).manual_seed(seed)
        if canvases <= 1 or not hasattr(self.engine, "continue_infill"):  # DiffusionGemma continues by itself
            return self.engine.complete(request, sampler, generator=generator, cancel=cancel)
        steps, encode_ms, denoise_ms, last = 0, 0.0, 0.0, None
        for last in self.engine.continue_infill(request, sampler, generator, cancel, max_canvases=canvases, stop=stop):
            steps, encode_ms, denoise_ms = steps + 1, encode_ms + last.state.encode_ms, denoise_ms + last.state.step_ms
            if last.state.done and partial is not None:
                partial(last.text)
        assert last is not None and last.done
        return InfillResult(texts=(last.text,), steps=steps, canvas_tokens=request.holes[0].canvas * (last.canvas + 1),
                            encode_ms=encode_ms, denoise_ms=denoise_ms)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def score(self, text: str, start: int, end: int) -> list[tuple[int, int, float]]:
        return self.engine.score(text, start, end)

    def context_limit(self) -> int | None:
        return int(self.engine.describe()["context"])

    def describe(self) -> dict:
        if self._engine is None:
            return {"model": str(self.model or "default"), "device": self.device, "kernels": "unknown"}
        return dict(self.engine.describe())


class FakeBackend:
    """Deterministic stand-in for the engine.

    Each hole is filled with `responses[k]` for the longest key `k` that the text before the hole ends
    with; otherwise a rewrite hole gets its initial text upper-cased and a plain hole gets `fill_<i>`.
    It "denoises" for `sampler.steps` steps, sleeping `step_delay_ms` per step and polling `cancel`
    between steps, so cancellation mid-denoise can be tested. A response with form feeds (`"\\f"`) is one
    piece per canvas: with `canvases` > 1 each canvas adds the next piece (the last one ends with an end
    token) until `stop` says so or `canvases` ran; each canvas is a request of its own, its prefix
    holding the pieces so far, and `partial` hears the text so far after each. Without that, the pieces
    are joined. Text containing `FAKE_ERROR` makes it raise.
    `score` splits the span into words and punctuation marks; each occurrence of an `unlikely` string gets
    probability 0.001, every other token 0.9.
    Every request it gets is kept in `requests` and, with a `record_path`, appended there as a JSON line
    (`{"segments": [...]}`) for tests that run the server as a subprocess.
    """

    ERROR_TRIGGER = "FAKE_ERROR"

    def __init__(self, responses: Mapping[str, str] | None = None, step_delay_ms: float = 0.0,
                 load_delay_ms: float = 0.0, record_path: str | None = None,
                 unlikely: tuple[str, ...] = ()) -> None:
        self.responses = dict(responses or {})
        self.unlikely = tuple(u for u in unlikely if u)
        self.record_path = record_path
        self.requests: list[InfillRequest] = []
        self.step_delay = step_delay_ms / 1000.0
        self.load_delay = load_delay_ms / 1000.0
        self.loaded = False
        self.calls = 0  # completions started
        self.canvases = 0  # canvases denoised
        self.completed = 0  # completions that ran every step

    def load(self, progress: Progress | None = None) -> None:
        for i in range(2):
            if progress:
                progress("loading the fake model", i, 2)
            time.sleep(self.load_delay / 2)
        if progress:
            progress("loaded the fake model", 2, 2)
        self.loaded = True

    def _fill(self, before: str, i: int, init: str) -> str:
        keys = [k for k in self.responses if before.endswith(k)]
        if keys:
            return self.responses[max(keys, key=len)]
        return init.upper() if init else f"fill_{i}"

    def _canvas(self, request: InfillRequest, sampler: SamplerConfig, cancel: CancelCheck | None) -> None:
        self.canvases += 1
        self.requests.append(request)
        if self.record_path:
            with open(self.record_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"segments": list(request.segments)}) + "\n")
        for _ in range(sampler.steps):
            if cancel is not None and cancel():
                raise InfillCancelled("cancelled between denoising steps")
            if self.step_delay:
                time.sleep(self.step_delay)

    def complete(self, request: InfillRequest, sampler: SamplerConfig, cancel: CancelCheck | None = None,
                 seed: int = 0, canvases: int = 1, stop: StopCheck | None = None,
                 partial: Partial | None = None) -> InfillResult:
        self.calls += 1
        pieces = [p for seg, hole in zip(request.segments, request.holes) for p in (seg, hole.init)]
        if self.ERROR_TRIGGER in "".join(pieces + [request.segments[-1]]):
            self.requests.append(request)
            raise RuntimeError("fake backend failure (the request contained FAKE_ERROR)")
        start = time.perf_counter()
        texts = tuple(self._fill(request.segments[i], i, h.init) for i, h in enumerate(request.holes))
        if canvases > 1 and len(request.holes) == 1 and not request.holes[0].init:
            chunks, text = texts[0].split("\f"), ""
            for k, chunk in enumerate(chunks[:canvases]):
                segments = (request.segments[0] + text, request.segments[1])
                self._canvas(InfillRequest(segments=segments, holes=request.holes), sampler, cancel)
                text += chunk
                if partial is not None:
                    partial(text)
                if stop is not None and stop(text):
                    break
            texts, ran = (text,), k + 1
        else:
            self._canvas(request, sampler, cancel)
            texts, ran = tuple(t.replace("\f", "") for t in texts), 1
        self.completed += 1
        return InfillResult(texts=texts, steps=sampler.steps * ran,
                            canvas_tokens=sum(h.canvas for h in request.holes) * ran,
                            denoise_ms=(time.perf_counter() - start) * 1000.0)

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / 4)

    def score(self, text: str, start: int, end: int) -> list[tuple[int, int, float]]:
        flagged = sorted((m.start(), m.end()) for u in self.unlikely for m in re.finditer(re.escape(u), text)
                         if start <= m.start() and m.end() <= end)
        spans = [(a, b, 0.001) for a, b in flagged]
        for m in re.finditer(r"\w+|\S", text[start:end]):
            a, b = start + m.start(), start + m.end()
            if not any(fa < b and a < fb for fa, fb in flagged):
                spans.append((a, b, 0.9))
        return sorted(spans)

    def context_limit(self) -> int | None:
        return None

    def describe(self) -> dict:
        return {"model": "fake", "family": "fake", "device": "cpu", "dtype": "none", "params": 0,
                "kernels": "none"}


def make_backend(options) -> InfillBackend:
    """The backend the options ask for (`options` is `dg_lsp.options.Options`)."""
    if options.backend == "fake":
        f = options.fake
        return FakeBackend(f.responses, f.step_delay_ms, f.load_delay_ms, f.record_path, tuple(f.unlikely))
    if options.backend == "remote":
        from dg_lsp.remote import RemoteBackend  # here: dg_lsp.remote imports this module's types

        r = options.remote
        return RemoteBackend(r.url, r.api, r.model, r.token_file, r.timeout_ms, r.retries)
    m = options.model
    return EngineBackend(m.path, m.device, m.dtype, family=m.family, quantize=m.quantize,
                         context_reuse=m.context_reuse)
