"""The engine side of serving: jobs sharing a sampler are denoised as one batch, each gets its own outcome
in order, a continuation runs on its own, and a job cancelled before its batch starts never denoises."""

from __future__ import annotations

from dg_lsp.engine.errors import InfillCancelled
from dg_lsp.engine.request import InfillRequest, SamplerConfig
from dg_lsp.serving.batcher import Job, health

from .conftest import loaded_batcher

A, B = SamplerConfig(steps=4), SamplerConfig(steps=6)


def job(prefix: str, sampler: SamplerConfig = A, **kw) -> Job:
    return Job(request=InfillRequest.at_cursor(prefix, "\n", 8), sampler=sampler, **kw)


def test_jobs_are_batched_per_sampler_and_answered_in_order(backend):
    batcher = loaded_batcher(backend)
    jobs = [job("def f(a):\n    return "), job("x = ", B), job("import "), job("for i in ", B), job("y = ")]
    out = batcher.run(jobs)
    assert batcher.stats.batch_sizes == {3: 1, 2: 1} and batcher.stats.largest_batch == 3
    for j, reply in zip(jobs, out):  # each answer is that job's own, as the engine writes it alone
        alone = backend.engine.complete(j.request, j.sampler)
        assert reply.middles == alone.texts and reply.batch_size == (3 if j.sampler == A else 2)


def test_a_continuation_runs_alone(backend):
    batcher = loaded_batcher(backend)
    out = batcher.run([job("a = "), job("b = ", canvases=3), job("c = ")])
    assert batcher.stats.batch_sizes == {2: 1, 1: 1}
    assert [r.batch_size for r in out] == [2, 1, 2]


def test_a_job_cancelled_before_its_batch_never_denoises(backend):
    batcher = loaded_batcher(backend)
    gone = job("a = ")
    gone.cancel()
    out = batcher.run([gone, job("b = ")])
    assert isinstance(out[0], InfillCancelled) and out[1].middles
    assert batcher.stats.cancelled == 1 and batcher.stats.completed == 1


def test_health_reports_loading_ok_and_a_fatal_error(backend):
    from dg_lsp.serving.batcher import Batcher

    assert health(Batcher(backend), "r")["status"] == "loading"
    batcher = loaded_batcher(backend)
    assert health(batcher, "r", actor="SERVE_REPLICA::x")["status"] == "ok"
    batcher.fatal = "the engine failed: CUDA error: an illegal memory access"
    body = health(batcher, "r")
    assert body["status"] == "unhealthy" and "CUDA error" in body["problem"]
