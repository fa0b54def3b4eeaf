"""Scheduler with the fake backend: latest request per lane wins, jobs with one cache key share a run (kept
while any job waits on it), cancellation mid-denoise, every job resolves, the LRU answers repeats. Waiting
uses events and futures; nothing is timed."""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait

import pytest

from dg_lsp.backend import FakeBackend
from dg_lsp.scheduler import BackendUnavailable, Cancelled, Job, Scheduler, Superseded
from dg_lsp.engine.errors import InfillCancelled
from dg_lsp.engine.request import InfillRequest, SamplerConfig


class GatedBackend(FakeBackend):
    """A fake whose denoising loop blocks on a gate after its first step, so tests control timing."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.in_step = threading.Event()
        self.steps_run = 0

    def complete(self, request, sampler, cancel=None, seed=0):
        for _ in range(sampler.steps):
            if cancel is not None and cancel():
                raise InfillCancelled("cancelled")
            self.steps_run += 1
            self.in_step.set()
            self.gate.wait()
        return super().complete(request, SamplerConfig(steps=1))  # counts calls and completions


@pytest.fixture
def scheduler():
    s = Scheduler(cache_size=16)
    yield s
    s.stop()


def load(s: Scheduler, backend) -> None:
    s.load(lambda: backend).result()


def job(lane="doc", prefix="x = ", key=None, steps=4) -> Job:
    return Job(lane=lane, request=InfillRequest.at_cursor(prefix, "\n", 8), sampler=SamplerConfig(steps=steps),
               cache_key=key)


def test_a_job_runs_and_resolves(scheduler):
    load(scheduler, FakeBackend({"x = ": "1"}))
    j = scheduler.submit(job())
    assert j.future.result().texts == ("1",)
    assert scheduler.stats.computed == 1


def test_queued_jobs_are_superseded_and_only_the_latest_runs(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    running = scheduler.submit(job(lane="other"))  # occupies the worker
    assert backend.in_step.wait(10)
    queued = [scheduler.submit(job(prefix=f"v{i} = ")) for i in range(50)]
    backend.gate.set()
    wait([j.future for j in queued + [running]], timeout=10)
    for j in queued[:-1]:
        assert isinstance(j.future.exception(), Superseded)
    assert queued[-1].future.result().texts == ("fill_0",)
    assert running.future.result()
    assert backend.completed == 2 and scheduler.stats.superseded == 49


def test_a_running_job_stops_between_steps_when_superseded(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    first = scheduler.submit(job(steps=1000))
    assert backend.in_step.wait(10)
    second = scheduler.submit(job(prefix="y = ", steps=2))
    backend.gate.set()
    assert isinstance(first.future.exception(timeout=10), Superseded)
    assert second.future.result(timeout=10)
    assert backend.steps_run < 1000  # stopped mid-denoise
    assert scheduler.stats.computed == 1


def test_cancel_running_and_queued_jobs(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    running = scheduler.submit(job(lane="a", steps=1000))
    assert backend.in_step.wait(10)
    queued = scheduler.submit(job(lane="b"))
    scheduler.cancel(queued)
    assert isinstance(queued.future.exception(timeout=10), Cancelled)
    scheduler.cancel(running)
    backend.gate.set()
    assert isinstance(running.future.exception(timeout=10), Cancelled)
    assert scheduler.stats.cancelled == 2 and scheduler.stats.computed == 0


def test_lanes_are_independent(scheduler):
    load(scheduler, FakeBackend())
    a, b = scheduler.submit(job(lane="a")), scheduler.submit(job(lane="b"))
    assert a.future.result(timeout=10) and b.future.result(timeout=10)


def test_cache_hits_skip_the_worker(scheduler):
    backend = FakeBackend()
    load(scheduler, backend)
    scheduler.submit(job(key="k")).future.result(timeout=10)
    again = scheduler.submit(job(key="k"))
    assert again.future.done() and again.future.result().texts == ("fill_0",)
    assert backend.calls == 1 and scheduler.stats.cache_hits == 1


def test_cache_is_bounded():
    s = Scheduler(cache_size=2)
    try:
        load(s, FakeBackend())
        for key in "abc":
            s.submit(job(key=key, lane=key)).future.result(timeout=10)
        assert len(s.cache) == 2 and s.cache.get("a") is None and s.cache.get("c") is not None
    finally:
        s.stop()


def test_backend_errors_and_load_failures_reach_the_waiter(scheduler):
    load(scheduler, FakeBackend())
    failing = scheduler.submit(job(prefix="FAKE_ERROR "))
    assert isinstance(failing.future.exception(timeout=10), RuntimeError)

    def broken():
        raise OSError("no such checkpoint: /nope")

    with pytest.raises(OSError):
        scheduler.load(broken).result(timeout=10)
    unavailable = scheduler.submit(job())
    err = unavailable.future.exception(timeout=10)
    assert isinstance(err, BackendUnavailable) and "/nope" in str(err)


def test_every_submitted_job_resolves_under_a_storm(scheduler):
    load(scheduler, FakeBackend(step_delay_ms=0.5))
    jobs = []
    for i in range(300):  # consecutive pairs share a key, so some jobs attach to runs
        jobs.append(scheduler.submit(job(lane=f"doc{i % 3}", prefix=f"v{i} = ", key=f"v{i // 2}", steps=3)))
        if i % 7 == 0:
            scheduler.cancel(jobs[-1])
    done, not_done = wait([j.future for j in jobs], timeout=30)
    assert not not_done
    outcomes = [type(j.future.exception()).__name__ if j.future.exception() else "ok" for j in jobs]
    assert set(outcomes) <= {"ok", "Superseded", "Cancelled"}
    last_per_lane = {j.lane: j for j in jobs}
    for j in last_per_lane.values():
        assert j.future.exception() is None or isinstance(j.future.exception(), Cancelled)


def test_stop_resolves_queued_jobs():
    s = Scheduler()
    backend = GatedBackend()
    load(s, backend)
    running = s.submit(job(lane="a", steps=1000))
    assert backend.in_step.wait(10)
    queued = s.submit(job(lane="b"))
    backend.gate.set()
    s.stop()
    assert isinstance(queued.future.exception(timeout=10), Cancelled)
    assert isinstance(running.future.exception(timeout=10), Cancelled)


def test_debounced_jobs_superseded_while_waiting_never_start(scheduler):
    import time

    backend = FakeBackend()
    load(scheduler, backend)
    jobs = []
    for i in range(20):
        j = job(prefix=f"v{i} = ")
        j.not_before = time.monotonic() + 0.5  # far longer than 20 submits take
        jobs.append(scheduler.submit(j))
    assert jobs[-1].future.result(timeout=10).texts == ("fill_0",)
    assert all(isinstance(j.future.exception(), Superseded) for j in jobs[:-1])
    assert backend.calls == 1 and scheduler.stats.started == 1


# --- shared runs: one key, one run; a run stops only when its last job leaves -------------------------------

def test_a_job_with_the_same_key_attaches_to_the_running_one(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    inline = scheduler.submit(job(lane="inline", key="k", steps=3))
    assert backend.in_step.wait(10)
    completion = scheduler.submit(job(lane="completion", key="k"))
    backend.gate.set()
    assert inline.future.result(timeout=10) is completion.future.result(timeout=10)
    assert backend.calls == 1
    s = scheduler.stats
    assert (s.submitted, s.shared, s.started, s.computed, s.superseded) == (2, 1, 1, 1, 0)


def test_jobs_attach_to_a_queued_run(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    running = scheduler.submit(job(lane="other", key="o"))  # occupies the worker
    assert backend.in_step.wait(10)
    shared = [scheduler.submit(job(lane=lane, key="k")) for lane in ("inline", "completion", "edit")]
    assert scheduler.pending() == 2  # the running job and one queued run
    backend.gate.set()
    results = [j.future.result(timeout=10) for j in shared]
    assert all(r is results[0] for r in results) and running.future.result(timeout=10)
    assert backend.calls == 2 and scheduler.stats.shared == 2


def test_a_shared_run_keeps_going_when_one_of_its_jobs_is_cancelled(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    inline = scheduler.submit(job(lane="inline", key="k", steps=3))
    assert backend.in_step.wait(10)
    completion = scheduler.submit(job(lane="completion", key="k"))
    scheduler.cancel(inline)
    assert isinstance(inline.future.exception(timeout=10), Cancelled)  # answered at once
    backend.gate.set()
    assert completion.future.result(timeout=10).texts == ("fill_0",)
    assert backend.steps_run == 3 and scheduler.stats.computed == 1 and scheduler.stats.cancelled == 1


def test_a_shared_run_stops_when_its_last_job_leaves(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    jobs = [scheduler.submit(job(lane=lane, key="k", steps=1000)) for lane in ("inline", "completion")]
    assert backend.in_step.wait(10)
    for j in jobs:
        scheduler.cancel(j)
    backend.gate.set()
    assert all(isinstance(j.future.exception(timeout=10), Cancelled) for j in jobs)
    after = scheduler.submit(job(lane="inline", key="next", steps=1))  # the worker is free again
    assert after.future.result(timeout=10)
    assert backend.steps_run < 1000 and scheduler.stats.computed == 1 and scheduler.stats.cancelled == 2


def test_a_request_supersedes_only_its_own_lane(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    inline = scheduler.submit(job(lane="inline", key="k1", steps=3))
    assert backend.in_step.wait(10)
    completion = scheduler.submit(job(lane="completion", key="k1"))
    newer_inline = scheduler.submit(job(lane="inline", prefix="y = ", key="k2"))
    assert isinstance(inline.future.exception(timeout=10), Superseded)
    backend.gate.set()
    assert completion.future.result(timeout=10).texts == ("fill_0",)  # its run went on for it
    assert newer_inline.future.result(timeout=10)
    s = scheduler.stats
    assert (s.started, s.computed, s.superseded, s.shared) == (2, 2, 1, 1)


def test_a_newer_keystroke_supersedes_both_kinds_and_stops_their_run(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    old = [scheduler.submit(job(lane=lane, key="v1", steps=1000)) for lane in ("inline", "completion")]
    assert backend.in_step.wait(10)
    new = [scheduler.submit(job(lane=lane, prefix="y = ", key="v2", steps=2)) for lane in ("inline", "completion")]
    backend.gate.set()
    assert all(isinstance(j.future.exception(timeout=10), Superseded) for j in old)
    assert new[0].future.result(timeout=10) is new[1].future.result(timeout=10)
    s = scheduler.stats
    assert backend.steps_run < 1000
    assert (s.started, s.computed, s.superseded, s.shared) == (2, 1, 2, 2)


def test_the_same_request_again_in_its_lane_keeps_the_run(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    first = scheduler.submit(job(lane="inline", key="k", steps=3))
    assert backend.in_step.wait(10)
    again = scheduler.submit(job(lane="inline", key="k"))
    assert isinstance(first.future.exception(timeout=10), Superseded)
    backend.gate.set()
    assert again.future.result(timeout=10).texts == ("fill_0",)
    assert backend.calls == 1 and scheduler.stats.started == 1


def test_an_invoked_job_starts_the_debounced_run_it_attaches_to(scheduler):
    import time

    backend = FakeBackend()
    load(scheduler, backend)
    automatic = job(lane="inline", key="k")
    automatic.not_before = time.monotonic() + 3600  # would wait an hour on its own
    scheduler.submit(automatic)
    invoked = scheduler.submit(job(lane="completion", key="k"))
    assert invoked.future.result(timeout=10) is automatic.future.result(timeout=10)
    assert backend.calls == 1 and scheduler.stats.shared == 1


def test_stop_resolves_every_job_of_a_shared_run():
    s = Scheduler()
    backend = GatedBackend()
    load(s, backend)
    jobs = [s.submit(job(lane=lane, key="k", steps=1000)) for lane in ("inline", "completion")]
    assert backend.in_step.wait(10)
    backend.gate.set()
    s.stop()
    assert all(isinstance(j.future.exception(timeout=10), Cancelled) for j in jobs)


def test_a_continued_run_tells_every_waiting_job_the_text_so_far(scheduler):
    backend = FakeBackend({"x = ": "1\f2\f3"})
    load(scheduler, backend)
    heard: dict[str, list[str]] = {"a": [], "b": []}

    def long_job(name: str, not_before: float) -> Job:
        return Job(lane=name, request=InfillRequest.at_cursor("x = ", "\n", 8), sampler=SamplerConfig(steps=2),
                   cache_key="same", canvases=4, stop=lambda text: text.endswith("2"), on_partial=heard[name].append,
                   not_before=not_before)

    # the first job waits (a long debounce) until the second joins its run and starts it
    a, b = scheduler.submit(long_job("a", time.monotonic() + 600)), scheduler.submit(long_job("b", 0.0))
    assert a.future.result().texts == b.future.result().texts == ("12",)  # the stop rule ended it at "12"
    assert heard == {"a": ["1", "12"], "b": ["1", "12"]}
    assert backend.canvases == 2 and scheduler.stats.shared == 1
