"""The engine side of the serving path: parsed jobs in, one denoising batch per distinct sampler, replies out.

No Ray and no HTTP here, so the FastAPI app (serving.api) can be tested against a `LocalService` in one
process, and the Ray Serve deployment (serving.app) only adds `@serve.batch` and replicas around it.
A `Batcher` belongs to one replica; `run` is called from one thread at a time (the engine serves one
thread at a time), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from dg_lsp.backend import EngineBackend, Progress
from dg_lsp.engine.errors import EngineError, InfillCancelled
from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One /v1/infill request, parsed. `cancelled` is set by the HTTP handler when its client goes away;
    the engine reads it between denoising steps (`is_cancelled` is the cancel check it polls)."""

    request: InfillRequest
    sampler: SamplerConfig = SamplerConfig()
    seed: int = 0
    canvases: int = 1  # a single fill hole may continue canvas after canvas
    stop: Callable[[str], bool] | None = None  # ends a continuation early (line mode: at a newline)
    received: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()


@dataclass(frozen=True)
class Token:
    text: str
    confidence: float | None  # the probability it was committed with; None where the engine gives none


@dataclass(frozen=True)
class Reply:
    middles: tuple[str, ...]
    tokens: tuple[tuple[Token, ...], ...]  # per hole
    steps: int
    canvas_tokens: int
    queue_ms: float  # received -> its batch started
    encode_ms: float
    denoise_ms: float
    batch_size: int  # requests denoised together with this one (itself included)


@dataclass
class Stats:
    """Counters a replica reports in /v1/health: what batching and cancellation actually did."""

    in_flight: int = 0  # received and not yet answered (waiting for a batch or in one)
    requests: int = 0  # jobs run (any outcome)
    completed: int = 0
    cancelled: int = 0  # stopped between denoising steps because their client went away
    failed: int = 0  # answered with an error
    batches: int = 0  # engine batch calls (one per distinct sampler in a Serve batch)
    largest_batch: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Count a request in flight while the block runs (on the event loop)."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def as_dict(self) -> dict:  # read on the event loop while the worker thread counts: copy first
        return {"in_flight": self.in_flight, "requests": self.requests, "completed": self.completed,
                "cancelled": self.cancelled, "failed": self.failed, "batches": self.batches,
                "largest_batch": self.largest_batch,
                "batch_sizes": {str(k): v for k, v in sorted(dict(self.batch_sizes).items())}}


class Batcher:
    """Owns a replica's engine (through `EngineBackend`, which loads it and runs continuations)."""

    def __init__(self, backend: EngineBackend, threads: int | None = None) -> None:
        self.backend = backend
        self.stats = Stats()
        self.loaded = False
        self.model_name = ""
        self.fatal: str | None = None  # an error after which this replica should be replaced
        # one worker thread owns the engine (it serves one thread at a time); torch's CPU thread count is
        # set in that thread, where the denoising runs
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="dg-infill",
                                          initializer=_set_threads if threads else None,
                                          initargs=(threads,) if threads else ())

    async def run_async(self, jobs: list[Job]) -> list[Reply | Exception]:
        """`run` on the worker thread, leaving the event loop free to watch clients disconnect."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, self.run, jobs)

    def load(self, progress: Progress | None = None) -> None:
        self._worker.submit(self.backend.load, progress).result()  # on the thread that will use it
        self.model_name = str(self.backend.describe().get("model", ""))  # health reads it on every request
        self.loaded = True

    def flush(self) -> None:
        """Return once every batch handed to the worker so far has finished."""
        self._worker.submit(lambda: None).result()

    @property
    def engine(self):
        return self.backend.engine

    def describe(self) -> dict:
        return self.backend.describe()

    def health_problem(self) -> str | None:
        """Why this replica cannot serve (None: it can). Serve's check_health raises with it."""
        if not self.loaded:
            return "the model is not loaded yet"
        return self.fatal

    def run(self, jobs: list[Job]) -> list[Reply | Exception]:
        """Every job's reply or the exception it raised, in order. Jobs that share a sampler (and run one
        canvas) are denoised as one batch; a continuation runs on its own, as the engine continues one hole."""
        from dg_lsp.engine.batch import complete_batch

        started = time.perf_counter()
        out: list[Reply | Exception | None] = [None] * len(jobs)
        groups: dict[SamplerConfig, list[int]] = {}  # requests in one engine batch share a sampler
        for i, job in enumerate(jobs):
            if job.canvases > 1:
                out[i] = self._continue(job, started)
            else:
                groups.setdefault(job.sampler, []).append(i)
        for sampler, members in groups.items():
            batch = [jobs[i] for i in members]
            self._count_batch(len(batch))
            try:
                outcomes = complete_batch(self.engine, [j.request for j in batch], sampler,
                                          cancels=[j.is_cancelled for j in batch],
                                          generators=[self._generator(j) for j in batch])
            except Exception as exc:  # noqa: BLE001 - a failure of the batch as a whole answers each member
                outcomes = [exc] * len(batch)
            for i, outcome in zip(members, outcomes):
                out[i] = self._reply(jobs[i], outcome, started, len(batch))
        return out  # type: ignore[return-value]

    def _continue(self, job: Job, started: float) -> Reply | Exception:
        self._count_batch(1)
        try:
            result = self.backend.complete(job.request, job.sampler, cancel=job.is_cancelled, seed=job.seed,
                                           canvases=job.canvases, stop=job.stop)
        except Exception as exc:  # noqa: BLE001 - answered as this request's error
            return self._reply(job, exc, started, 1)
        return self._reply(job, result, started, 1)

    def _count_batch(self, size: int) -> None:
        s = self.stats
        s.batches += 1
        s.largest_batch = max(s.largest_batch, size)
        s.batch_sizes[size] = s.batch_sizes.get(size, 0) + 1

    def _generator(self, job: Job):
        if job.sampler.temperature <= 0:
            return None  # the argmax path draws nothing
        import torch  # already imported with the engine

        return torch.Generator(device=str(self.engine.device)).manual_seed(job.seed)

    def _reply(self, job: Job, outcome: InfillResult | Exception, started: float, size: int) -> Reply | Exception:
        self.stats.requests += 1
        if isinstance(outcome, Exception):
            if isinstance(outcome, InfillCancelled):
                self.stats.cancelled += 1
            else:
                self.stats.failed += 1
                if not isinstance(outcome, EngineError) and _is_fatal(outcome):
                    self.fatal = f"the engine failed: {outcome}"
                    log.error("replica unhealthy: %s", self.fatal)
            return outcome
        self.stats.completed += 1
        return Reply(middles=outcome.texts, tokens=tuple(self._tokens(outcome, h) for h in range(len(outcome.texts))),
                     steps=outcome.steps, canvas_tokens=outcome.canvas_tokens,
                     queue_ms=(started - job.received) * 1e3, encode_ms=outcome.encode_ms,
                     denoise_ms=outcome.denoise_ms, batch_size=size)

    def _tokens(self, result: InfillResult, hole: int) -> tuple[Token, ...]:
        """A hole's text as tokens, each with the probability it was committed with. The engine gives the
        tokens it wrote (`InfillResult.token_ids`); each token's text is what it adds to the decoded text
        before it, so tokens that split a character still join up to the whole text. Without them
        (DiffusionGemma, variable-length canvases) the text is tokenized again and confidences are None."""
        tok = self.engine.tokenizer
        ids = result.token_ids[hole] if hole < len(result.token_ids) else ()
        confidences = result.confidences[hole] if hole < len(result.confidences) else ()
        if not ids or len(ids) != len(confidences):
            return tuple(Token(tok.decode([i]), None) for i in tok.encode(result.texts[hole]))
        tokens, before = [], ""
        for k, p in enumerate(confidences):
            text = tok.decode(list(ids[: k + 1]))
            tokens.append(Token(text[len(before):] if text.startswith(before) else tok.decode([ids[k]]), p))
            before = text
        return tuple(tokens)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _is_fatal(exc: Exception) -> bool:
    """Errors that leave the device unusable (a replica restart is the cure); an ordinary bug is not."""
    text = f"{type(exc).__name__}: {exc}"
    return "CUDA error" in text or "AcceleratorError" in text or "out of memory" in text.lower()


class LocalService:
    """The FastAPI app's service in one process, without Ray: one job at a time through a `Batcher`
    (tests, and anyone embedding the app in their own ASGI server). Serve's deployment batches instead."""

    def __init__(self, batcher: Batcher, replica: str = "local") -> None:
        self.batcher, self.replica = batcher, replica

    async def infill(self, job: Job) -> Reply:
        with self.batcher.stats.counting():
            outcome, = await self.batcher.run_async([job])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def health(self) -> dict:
        return health(self.batcher, self.replica)

    def describe(self) -> dict:
        return self.batcher.describe()


def health(batcher: Batcher, replica: str, actor: str | None = None) -> dict:
    """The /v1/health body: status, model, replica (with its Ray actor's name under Serve: what `ray kill`
    and the logs go by), and the batcher's counters."""
    problem = batcher.health_problem()
    status = "ok" if problem is None else ("loading" if not batcher.loaded else "unhealthy")
    body = {"status": status, "model": batcher.model_name, "replica": replica,
            "stats": batcher.stats.as_dict()}
    if actor is not None:
        body["actor"] = actor
    if problem is not None:
        body["problem"] = problem
    return body
