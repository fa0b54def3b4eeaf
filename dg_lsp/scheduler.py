"""One worker thread owns the backend; per lane (kind of request x document) the latest request wins, and
requests with the same cache key share one model run.

`submit` returns a `Job` whose `future` (a `concurrent.futures.Future`) resolves to an `InfillResult`, or
fails with `Superseded` (a newer job took its lane), `Cancelled` (the caller gave up, e.g. on
`$/cancelRequest`), `BackendUnavailable` (the model failed to load) or whatever the backend raised.
A job whose cache key matches a run that is queued or running attaches to it (`shared`) instead of starting
another; the inline and the completion request of one keystroke run the model once. A job that leaves
(superseded or cancelled) resolves at once; its run is dropped if queued, or told through its cancel event
(polled between denoising steps) if running, only when no job waits on it any more. Either way every
future resolves, so the request that waits on it always gets a reply.

Results are kept in an LRU keyed by a hash of the request and settings; a hit resolves without the worker.

A `speculative` job (the completion the user will probably ask for next) never holds up anyone: it runs
only when nothing else is queued, and a run that only speculative jobs wait on is dropped or stopped
(between denoising steps) as soon as a job that needs a run of its own arrives; one that needs the same
run joins it instead.

A job with `canvases` > 1 (a block completion) may continue canvas after canvas (backend `complete`); after
each canvas the text so far goes to the `on_partial` of every job still waiting on the run (worker thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Callable, Hashable

from dg_lsp.engine.errors import InfillCancelled
from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig
from dg_lsp.backend import InfillBackend, Progress

log = logging.getLogger(__name__)


class Superseded(Exception):
    """A newer request for the same document replaced this one."""


class Cancelled(Exception):
    """The client cancelled the request."""


class BackendUnavailable(Exception):
    """The backend has no model: loading failed (the message says why)."""


class LRUCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, InfillResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str | None) -> InfillResult | None:
        if key is None or self.size <= 0:
            return None
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str | None, value: InfillResult) -> None:
        if key is None or self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass(eq=False)
class Job:
    """One request's claim on a model run: `future` resolves with the run's outcome, or with `Superseded` /
    `Cancelled` as soon as this request leaves (the run goes on while other jobs still wait on it)."""

    lane: Hashable
    request: InfillRequest
    sampler: SamplerConfig
    cache_key: str | None = None
    prepare: Callable[[InfillBackend, InfillRequest], InfillRequest] | None = None  # e.g. fit to the token budget
    seed: int = 0
    not_before: float = 0.0  # time.monotonic() before which the worker leaves it queued (debounce)
    canvases: int = 1  # most canvases one hole may continue over (part of the cache key's settings)
    stop: Callable[[str], bool] | None = None  # the text so far has ended (checked after each canvas)
    on_partial: Callable[[str], None] | None = None  # the text so far after each canvas (worker thread)
    # other work than `backend.complete` (e.g. scoring for confidence hints): called as (backend, request,
    # cancel check) on the worker; `low_priority` runs wait while any other run is queued
    call: Callable[[InfillBackend, InfillRequest, Callable[[], bool]], object] | None = None
    low_priority: bool = False
    speculative: bool = False  # low priority, and gives way to any other run (module docstring)
    future: Future = field(default_factory=Future)
    run: _Run | None = field(default=None, repr=False)  # set by `Scheduler.submit`


@dataclass(eq=False)
class _Run:
    """One model run, made for its first job; `waiters` are the jobs that get its result (a reference
    count: the run is dropped or stopped when the last one leaves)."""

    first: Job
    waiters: list[Job]
    not_before: float
    cancel_event: threading.Event = field(default_factory=threading.Event)


def _settle(future: Future, result: object = None, error: BaseException | None = None) -> bool:
    """Resolve a future unless something else already did (a cancel racing a result)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
        return True
    except InvalidStateError:
        return False


@dataclass
class Stats:
    submitted: int = 0  # jobs (requests)
    cache_hits: int = 0
    shared: int = 0  # jobs that attached to a run already queued or running
    started: int = 0  # runs that reached the backend
    computed: int = 0  # runs that ran to completion
    superseded: int = 0  # jobs
    cancelled: int = 0  # jobs
    failed: int = 0  # runs
    speculated: int = 0  # speculative jobs submitted
    yielded: int = 0  # speculative jobs dropped or stopped for another run, or for a newer speculation
    last_latency_ms: float | None = None

    def as_dict(self) -> dict:
        return {"submitted": self.submitted, "cacheHits": self.cache_hits, "shared": self.shared,
                "started": self.started, "computed": self.computed, "superseded": self.superseded,
                "cancelled": self.cancelled, "failed": self.failed, "speculated": self.speculated,
                "yielded": self.yielded, "lastLatencyMs": self.last_latency_ms}


class Scheduler:
    """Owns `backend` on one worker thread. Every public method is safe to call from any thread."""

    def __init__(self, cache_size: int = 256, on_computed: Callable[[float], None] | None = None) -> None:
        self.cache = LRUCache(cache_size)
        self.stats = Stats()
        self.backend: InfillBackend | None = None
        self.load_error: str | None = None
        self._on_computed = on_computed
        self._cond = threading.Condition()
        self._queue: list[_Run] = []  # runs waiting for the worker, oldest first
        self._runs: dict[str, _Run] = {}  # cache key -> its run while queued or running (what jobs attach to)
        self._lanes: dict[Hashable, Job] = {}  # lane -> its latest job still waiting
        self._controls: list[Callable[[], None]] = []
        self._current: _Run | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dg-lsp-worker", daemon=True)
        self._thread.start()

    # --- public ----------------------------------------------------------------------------------------
    def load(self, factory: Callable[[], InfillBackend], progress: Progress | None = None) -> Future:
        """Replace the backend on the worker (queued before any job submitted after this call)."""
        done: Future = Future()

        def action() -> None:
            self.backend, self.load_error = None, None
            self.cache.clear()
            try:
                backend = factory()
                backend.load(progress)
            except Exception as exc:  # noqa: BLE001 - reported to the user, jobs then fail with the message
                log.exception("model load failed")
                self.load_error = f"{type(exc).__name__}: {exc}"
                _settle(done, error=exc)
            else:
                self.backend = backend
                _settle(done, backend.describe())

        with self._cond:
            self._controls.append(action)
            self._cond.notify()
        return done

    def submit(self, job: Job) -> Job:
        """Queue `job`, or attach it to the run of its cache key; the job it replaces in its lane leaves."""
        with self._cond:
            self.stats.submitted += 1
            self.stats.speculated += job.speculative
            old = self._lanes.pop(job.lane, None)
            cached = self.cache.get(job.cache_key)
            if cached is not None:
                self.stats.cache_hits += not job.speculative  # hits of requests, not of speculations
                _settle(job.future, cached)
            else:
                run = self._runs.get(job.cache_key) if job.cache_key is not None else None
                if run is not None:
                    self.stats.shared += 1
                    run.waiters.append(job)
                    run.not_before = min(run.not_before, job.not_before)  # an invoked request starts it now
                else:
                    run = _Run(first=job, waiters=[job], not_before=job.not_before)
                    self._queue.append(run)
                    if job.cache_key is not None:
                        self._runs[job.cache_key] = run
                job.run = run
                if not job.low_priority:
                    self._make_way(run)
                self._lanes[job.lane] = job
            if old is not None:  # after attaching: a run `old` shares with `job` goes on
                self._leave(old, Superseded)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The client gave up on `job`: it resolves `Cancelled` now; its run stops if nobody else waits."""
        with self._cond:
            self._leave(job, Cancelled)

    def pending(self) -> int:
        """Runs queued or running."""
        with self._cond:
            return len(self._queue) + (self._current is not None)

    def stop(self, timeout: float = 5.0) -> bool:
        """Cancel every job (the running model stops at its next step), end the worker and wait up to
        `timeout` seconds for it. True when the worker has ended."""
        with self._cond:
            self._stopping = True
            for run in [*self._queue, *([self._current] if self._current is not None else [])]:
                for job in list(run.waiters):
                    self._leave(job, Cancelled)
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- bookkeeping (under the lock) --------------------------------------------------------------------
    def _leave(self, job: Job, reason: type[Exception]) -> None:
        """`job` stops waiting and resolves with `reason`; a run nobody waits on is dropped or stopped."""
        if self._lanes.get(job.lane) is job:
            del self._lanes[job.lane]
        run = job.run
        if run is None or job not in run.waiters:
            return  # already resolved
        run.waiters.remove(job)
        self._bump("yielded" if job.speculative else "superseded" if reason is Superseded else "cancelled")
        _settle(job.future, error=reason())
        if not run.waiters:
            run.cancel_event.set()
            if run in self._queue:
                self._queue.remove(run)
            self._forget(run)

    def _make_way(self, run: _Run) -> None:
        """Drop or stop every other run that only speculative jobs wait on: `run` must not wait for them."""
        others = [*self._queue, *([self._current] if self._current is not None else [])]
        for other in others:
            if other is not run and other.waiters and all(job.speculative for job in other.waiters):
                for job in list(other.waiters):
                    self._leave(job, Superseded)

    def _forget(self, run: _Run) -> None:
        key = run.first.cache_key
        if key is not None and self._runs.get(key) is run:
            del self._runs[key]

    def _finish(self, run: _Run, result: object = None, error: BaseException | None = None) -> None:
        """Hand the run's outcome to every job still waiting on it."""
        with self._cond:
            waiters, run.waiters = run.waiters, []
            self._forget(run)
            for job in waiters:
                if self._lanes.get(job.lane) is job:
                    del self._lanes[job.lane]
                _settle(job.future, result, error)

    def _bump(self, name: str) -> None:
        with self._cond:  # reentrant: also called with the lock held
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    # --- worker ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                action, run = self._next()
                if action is None and run is None:
                    return
            if run is None:
                action()
                continue
            try:
                self._execute(run)
            except BaseException as exc:  # noqa: BLE001 - the jobs' waiters must always hear back
                log.exception("worker failed on a job")
                self._finish(run, error=exc)
            finally:
                with self._cond:
                    self._current = None

    def _next(self) -> tuple[Callable[[], None] | None, _Run | None]:
        """Under the lock: the next control action or due run; (None, None) when stopping."""
        while True:
            if self._stopping:
                return None, None
            if self._controls:
                return self._controls.pop(0), None
            if self._queue:
                # a low-priority run that a normal job joined is a normal run
                run = next((r for r in self._queue if not all(j.low_priority for j in r.waiters)), self._queue[0])
                delay = run.not_before - time.monotonic()
                if delay <= 0:
                    self._queue.remove(run)
                    self._current = run
                    return None, run
                self._cond.wait(delay)  # a newer job for its lane may replace it meanwhile
                continue
            self._cond.wait()

    def _partial(self, run: _Run, text: str) -> None:
        """The run's text so far, to each job still waiting on it that listens."""
        with self._cond:
            listeners = [job.on_partial for job in run.waiters if job.on_partial is not None]
        for listener in listeners:
            try:
                listener(text)
            except Exception:  # noqa: BLE001 - a progress listener must not stop the run
                log.exception("partial result listener failed")

    def _execute(self, run: _Run) -> None:
        if run.cancel_event.is_set():  # its last job left while the worker picked it
            self._finish(run, error=Cancelled())
            return
        if self.backend is None:
            self._bump("failed")
            self._finish(run, error=BackendUnavailable(self.load_error or "no model is loaded"))
            return
        job = run.first
        cached = self.cache.get(job.cache_key)
        if cached is not None:
            self._bump("cache_hits")
            self._finish(run, cached)
            return
        self._bump("started")
        start = time.perf_counter()
        try:
            request = job.prepare(self.backend, job.request) if job.prepare else job.request
            if job.call is not None:
                result = job.call(self.backend, request, run.cancel_event.is_set)
            else:
                continuation = ({"canvases": job.canvases, "stop": job.stop,
                                 "partial": lambda text: self._partial(run, text)} if job.canvases > 1 else {})
                result = self.backend.complete(request, job.sampler, cancel=run.cancel_event.is_set, seed=job.seed,
                                               **continuation)
        except InfillCancelled:
            self._finish(run, error=Cancelled())  # nobody waits any more: the jobs were told when they left
            return
        except Exception as exc:  # noqa: BLE001 - handed to the waiters, which turn it into replies
            self._bump("failed")
            self._finish(run, error=exc)
            return
        latency = (time.perf_counter() - start) * 1000.0
        with self._cond:
            self.stats.computed += 1
            # a speculation nobody waited for is not the latency of a completion the user saw
            waited = any(not waiter.speculative for waiter in run.waiters)
            if waited:
                self.stats.last_latency_ms = latency
        self.cache.put(job.cache_key, result)
        self._finish(run, result)
        if waited and self._on_computed is not None:
            try:
                self._on_computed(latency)
            except Exception:  # noqa: BLE001 - a status callback must not kill the worker
                log.exception("status callback failed")
