"""One worker thread owns the backend; per lane (kind of work x document) the latest request wins.

`submit` returns a `Job` whose `future` (a `concurrent.futures.Future`) resolves to an `InfillResult`, or
fails with `Superseded` (a newer job took its lane), `Cancelled` (the caller gave up, e.g. on
`$/cancelRequest`), `BackendUnavailable` (the model failed to load) or whatever the backend raised.
A job that is still queued when it is superseded resolves at once; a running job is told through its
cancel event, which the backend polls between denoising steps. Either way the future always resolves, so
the request that waits on it always gets a reply.

Results are kept in an LRU keyed by a hash of the request and settings; a hit resolves without the worker.
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
    lane: Hashable
    request: InfillRequest
    sampler: SamplerConfig
    cache_key: str | None = None
    prepare: Callable[[InfillBackend, InfillRequest], InfillRequest] | None = None  # e.g. fit to the token budget
    seed: int = 0
    not_before: float = 0.0  # time.monotonic() before which the worker leaves it queued (debounce)
    future: Future = field(default_factory=Future)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    reason: type[Exception] = Cancelled

    def cancel(self, reason: type[Exception] = Cancelled) -> None:
        if not self.cancel_event.is_set():
            self.reason = reason
            self.cancel_event.set()


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
    submitted: int = 0
    cache_hits: int = 0
    started: int = 0  # reached the backend
    computed: int = 0  # ran to completion
    superseded: int = 0
    cancelled: int = 0
    failed: int = 0
    last_latency_ms: float | None = None

    def as_dict(self) -> dict:
        return {"submitted": self.submitted, "cacheHits": self.cache_hits, "started": self.started,
                "computed": self.computed, "superseded": self.superseded, "cancelled": self.cancelled,
                "failed": self.failed, "lastLatencyMs": self.last_latency_ms}


class Scheduler:
    """Owns `backend` on one worker thread. Every public method is safe to call from any thread."""

    def __init__(self, cache_size: int = 256, on_computed: Callable[[float], None] | None = None) -> None:
        self.cache = LRUCache(cache_size)
        self.stats = Stats()
        self.backend: InfillBackend | None = None
        self.load_error: str | None = None
        self._on_computed = on_computed
        self._cond = threading.Condition()
        self._pending: OrderedDict[Hashable, Job] = OrderedDict()
        self._controls: list[Callable[[], None]] = []
        self._current: Job | None = None
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
        with self._cond:
            self.stats.submitted += 1
            cached = self.cache.get(job.cache_key)
            old = self._pending.pop(job.lane, None)
            if old is not None:
                self.stats.superseded += 1
                old.cancel(Superseded)
                _settle(old.future, error=Superseded())
            if self._current is not None and self._current.lane == job.lane:
                self._current.cancel(Superseded)
            if cached is not None:
                self.stats.cache_hits += 1
                _settle(job.future, cached)
                return job
            self._pending[job.lane] = job
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The client gave up on `job`: drop it if queued, stop it between steps if running."""
        with self._cond:
            job.cancel(Cancelled)
            if self._pending.get(job.lane) is job:
                del self._pending[job.lane]
                self.stats.cancelled += 1
                _settle(job.future, error=Cancelled())

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + (self._current is not None)

    def stop(self, timeout: float = 5.0) -> bool:
        """Cancel every job (the running one stops at its next step), end the worker and wait up to
        `timeout` seconds for it. True when the worker has ended."""
        with self._cond:
            self._stopping = True
            for job in self._pending.values():
                job.cancel(Cancelled)
                _settle(job.future, error=Cancelled())
            self._pending.clear()
            if self._current is not None:
                self._current.cancel(Cancelled)
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- worker ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                action, job = self._next()
                if action is None and job is None:
                    return
            if job is None:
                action()
                continue
            try:
                self._execute(job)
            except BaseException as exc:  # noqa: BLE001 - the job's waiter must always hear back
                log.exception("worker failed on a job")
                _settle(job.future, error=exc)
            finally:
                with self._cond:
                    self._current = None

    def _next(self) -> tuple[Callable[[], None] | None, Job | None]:
        """Under the lock: the next control action or due job; (None, None) when stopping."""
        while True:
            if self._stopping:
                return None, None
            if self._controls:
                return self._controls.pop(0), None
            if self._pending:
                lane, job = next(iter(self._pending.items()))
                delay = job.not_before - time.monotonic()
                if delay <= 0:
                    del self._pending[lane]
                    self._current = job
                    return None, job
                self._cond.wait(delay)  # a newer job for this lane may replace it meanwhile
                continue
            self._cond.wait()

    def _execute(self, job: Job) -> None:
        if job.cancel_event.is_set():
            self._count_stop(job)
            _settle(job.future, error=job.reason())
            return
        if self.backend is None:
            self._bump("failed")
            _settle(job.future, error=BackendUnavailable(self.load_error or "no model is loaded"))
            return
        cached = self.cache.get(job.cache_key)
        if cached is not None:
            self._bump("cache_hits")
            _settle(job.future, cached)
            return
        self._bump("started")
        start = time.perf_counter()
        try:
            request = job.prepare(self.backend, job.request) if job.prepare else job.request
            result = self.backend.complete(request, job.sampler, cancel=job.cancel_event.is_set, seed=job.seed)
        except InfillCancelled:
            self._count_stop(job)
            _settle(job.future, error=job.reason())
            return
        except Exception as exc:  # noqa: BLE001 - handed to the waiter, which turns it into a reply
            self._bump("failed")
            _settle(job.future, error=exc)
            return
        latency = (time.perf_counter() - start) * 1000.0
        with self._cond:
            self.stats.computed += 1
            self.stats.last_latency_ms = latency
        self.cache.put(job.cache_key, result)
        _settle(job.future, result)
        if self._on_computed is not None:
            try:
                self._on_computed(latency)
            except Exception:  # noqa: BLE001 - a status callback must not kill the worker
                log.exception("status callback failed")

    def _count_stop(self, job: Job) -> None:
        self._bump("superseded" if job.reason is Superseded else "cancelled")

    def _bump(self, name: str) -> None:
        with self._cond:
            setattr(self.stats, name, getattr(self.stats, name) + 1)
