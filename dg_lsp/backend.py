"""Backends behind one protocol: the local engine, and a deterministic fake for tests.

A backend is owned by the scheduler's worker thread: `load` and `complete` run there, never on the event
loop. Only `EngineBackend.load` imports the engine's torch modules.
"""

from __future__ import annotations

import json
import math
import time
from typing import Callable, Mapping, Protocol

from dg_lsp.engine.errors import InfillCancelled
from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig

Progress = Callable[[str, int, int], None]
CancelCheck = Callable[[], bool]


class InfillBackend(Protocol):
    def load(self, progress: Progress | None = None) -> None: ...

    def complete(self, request: InfillRequest, sampler: SamplerConfig, cancel: CancelCheck | None = None,
                 seed: int = 0) -> InfillResult: ...

    def count_tokens(self, text: str) -> int: ...

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
                 seed: int = 0) -> InfillResult:
        generator = None
        if sampler.temperature > 0:
            import torch  # already imported by engine.load

            info = self.engine.describe()
            generator = torch.Generator(device=str(info.get("device", "cpu"))).manual_seed(seed)
        return self.engine.complete(request, sampler, generator=generator, cancel=cancel)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

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
    between steps, so cancellation mid-denoise can be tested. Text containing `FAKE_ERROR` makes it raise.
    Every request it gets is kept in `requests` and, with a `record_path`, appended there as a JSON line
    (`{"segments": [...]}`) for tests that run the server as a subprocess.
    """

    ERROR_TRIGGER = "FAKE_ERROR"

    def __init__(self, responses: Mapping[str, str] | None = None, step_delay_ms: float = 0.0,
                 load_delay_ms: float = 0.0, record_path: str | None = None) -> None:
        self.responses = dict(responses or {})
        self.record_path = record_path
        self.requests: list[InfillRequest] = []
        self.step_delay = step_delay_ms / 1000.0
        self.load_delay = load_delay_ms / 1000.0
        self.loaded = False
        self.calls = 0  # completions started
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

    def complete(self, request: InfillRequest, sampler: SamplerConfig, cancel: CancelCheck | None = None,
                 seed: int = 0) -> InfillResult:
        self.calls += 1
        self.requests.append(request)
        if self.record_path:
            with open(self.record_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"segments": list(request.segments)}) + "\n")
        pieces = [p for seg, hole in zip(request.segments, request.holes) for p in (seg, hole.init)]
        if self.ERROR_TRIGGER in "".join(pieces + [request.segments[-1]]):
            raise RuntimeError("fake backend failure (the request contained FAKE_ERROR)")
        start = time.perf_counter()
        for _ in range(sampler.steps):
            if cancel is not None and cancel():
                raise InfillCancelled("cancelled between denoising steps")
            if self.step_delay:
                time.sleep(self.step_delay)
        texts = tuple(self._fill(request.segments[i], i, h.init) for i, h in enumerate(request.holes))
        self.completed += 1
        return InfillResult(texts=texts, steps=sampler.steps, canvas_tokens=sum(h.canvas for h in request.holes),
                            denoise_ms=(time.perf_counter() - start) * 1000.0)

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / 4)

    def context_limit(self) -> int | None:
        return None

    def describe(self) -> dict:
        return {"model": "fake", "family": "fake", "device": "cpu", "dtype": "none", "params": 0,
                "kernels": "none"}


def make_backend(options) -> InfillBackend:
    """The backend the options ask for (`options` is `dg_lsp.options.Options`)."""
    if options.backend == "fake":
        f = options.fake
        return FakeBackend(f.responses, f.step_delay_ms, f.load_delay_ms, f.record_path)
    m = options.model
    return EngineBackend(m.path, m.device, m.dtype, family=m.family, quantize=m.quantize,
                         context_reuse=m.context_reuse)
