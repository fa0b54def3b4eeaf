"""The Ray Serve application: replicas of the engine behind the HTTP infill API, batching concurrent requests.

`build` is the application builder `serve run` / `serve deploy` import (docs/serving-config.yaml):

    serve run dg_lsp.serving.app:build model=org/name device=cuda replicas=2

Each replica loads the model once (progress in its log), then serves serving.api's FastAPI app. Requests
that arrive together are gathered by `@serve.batch` (max_batch_size, batch_wait_timeout_s) and denoised as
one batch per distinct sampler (serving.batcher). On CUDA each replica takes one GPU; on CPU each takes
`threads` CPUs and uses that many torch threads.
"""

# no `from __future__ import annotations`: Serve reads the builder's parameter annotation as a class to
# validate the args dict with pydantic

import logging
import os
from pathlib import Path
from typing import Literal

import ray
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from dg_lsp.backend import EngineBackend
from dg_lsp.serving.api import MAX_BODY_BYTES, make_app
from dg_lsp.serving.batcher import Batcher, Job, Reply, health
from dg_lsp.tcp import TOKEN_ENV  # the same variable `dg-lsp --tcp` reads its token from

log = logging.getLogger("ray.serve")  # Serve writes this logger to the replica's log file


class ServeArgs(BaseModel):
    """The builder's arguments (serve config `args:`, or key=value after `serve run ...:build`)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="checkpoint dir or org/name in the HF cache (None: embedded)")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu, or cuda: one GPU per replica (Ray picks which)")
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    family: str | None = None
    quantize: Literal["int8"] | None = None
    replicas: int = Field(1, ge=1, le=1024)
    threads: int = Field(1, ge=1, le=512, description="CPUs (and torch threads) per CPU replica")
    token_file: str | None = Field(None, description=f"clients must send this file's text as a bearer "
                                                     f"token (default: ${TOKEN_ENV} on the replica, if set)")
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024)
    max_batch_size: int = Field(8, ge=1, le=1024, description="requests denoised together at most")
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=60.0, description="wait for a batch to fill")
    max_ongoing_requests: int | None = Field(None, ge=1,
                                             description="per replica (default: 2 x max_batch_size, at least 8)")
    # `dg-lsp serve` saw a token: a replica that finds none (a cluster node without the file or the variable)
    # refuses to start instead of serving without one
    require_token: bool = False


@serve.deployment(name="dg-infill", health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress()
class InfillDeployment:
    """One replica. `__serve_build_asgi_app__` hands Serve the FastAPI app with this object as its service."""

    def __init__(self, args: dict, batcher: type[Batcher] = Batcher) -> None:
        cfg = ServeArgs.model_validate(args)
        self.cfg = cfg
        self.replica = serve.get_replica_context().replica_tag
        self.actor = ray.get_runtime_context().get_actor_name()
        self.token = read_token(cfg.token_file)
        if cfg.require_token and self.token is None:
            raise RuntimeError(f"replica {self.replica}: a bearer token is required but this node has neither the "
                               f"token file nor ${TOKEN_ENV}")
        backend = EngineBackend(cfg.model, cfg.device, cfg.dtype, family=cfg.family, quantize=cfg.quantize)
        self.batcher = batcher(backend, threads=cfg.threads if cfg.device == "cpu" else None)
        log.info("replica %s: loading %s on %s", self.replica, cfg.model or "the embedded model", cfg.device)
        self.batcher.load(progress=LogProgress(f"replica {self.replica}"))
        log.info("replica %s: ready (%s)", self.replica, self.batcher.describe())
        self._batched.set_max_batch_size(cfg.max_batch_size)
        self._batched.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    def __serve_build_asgi_app__(self):
        return make_app(self, token=self.token, max_body_bytes=self.cfg.max_body_bytes)

    async def infill(self, job: Job) -> Reply:
        with self.batcher.stats.counting():
            outcome = await self._batched(job)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # the real sizes are set per replica in __init__
    async def _batched(self, jobs: list[Job]) -> list:
        return await self.batcher.run_async(jobs)

    def health(self) -> dict:
        return health(self.batcher, self.replica, self.actor)

    def describe(self) -> dict:
        return self.batcher.describe()

    def check_health(self) -> None:
        """Serve's periodic health check: a replica that raises is replaced."""
        if (problem := self.batcher.health_problem()) is not None:
            raise RuntimeError(problem)


def build(args: ServeArgs) -> Application:
    """The application `serve run dg_lsp.serving.app:build` / a serve config's import_path builds."""
    return application(args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args))


def application(cfg: ServeArgs, batcher: type[Batcher] = Batcher) -> Application:
    """The deployment for `cfg`; `batcher` is the replicas' Batcher class (serving.testing's holds batches)."""
    return InfillDeployment.options(**deployment_options(cfg)).bind(cfg.model_dump(), batcher)


def deployment_options(cfg: ServeArgs) -> dict:
    """Replicas, the Ray resources each declares (Ray places them by these), and how many requests each
    takes at once: enough to fill one batch while another denoises."""
    actor = {"num_gpus": 1, "num_cpus": 1} if cfg.device == "cuda" else {"num_cpus": cfg.threads}
    return {"num_replicas": cfg.replicas, "ray_actor_options": actor,
            "max_ongoing_requests": cfg.max_ongoing_requests or max(8, 2 * cfg.max_batch_size)}


def read_token(token_file: str | None) -> str | None:
    """The bearer token: the file's text (stripped), else $DG_LSP_TOKEN, else None (no token needed)."""
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"token_file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


class LogProgress:
    """The engine's load progress(message, done, total) as log lines, one per tenth (a replica has no
    terminal to draw a bar on; its log is what `serve status` users read)."""

    def __init__(self, who: str) -> None:
        self.who, self.last = who, -1

    def __call__(self, message: str, done: int, total: int) -> None:
        tenth = 10 * done // total if total else 10
        if tenth != self.last:
            self.last = tenth
            log.info("%s: %s %d/%d (%d%%)", self.who, message, done, total, 10 * tenth)
