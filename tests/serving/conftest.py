"""Shared pieces of the serving tests: the embedded model loaded once, and the FastAPI app over it
(`batcher.LocalService`, no Ray), driven with starlette's TestClient."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx", reason="starlette's TestClient needs httpx (the test extra installs it)")

from fastapi.testclient import TestClient  # noqa: E402

from dg_lsp.backend import EngineBackend  # noqa: E402
from dg_lsp.serving.api import make_app  # noqa: E402
from dg_lsp.serving.batcher import Batcher, LocalService  # noqa: E402

PREFIX = "def add(a, b):\n    return "
GOOD = {"prefix": PREFIX, "suffix": "\n\n\nprint(add(1, 2))\n"}


@pytest.fixture(scope="session")
def backend() -> EngineBackend:
    """The embedded model (engine.load(None)) on CPU, loaded once for the session."""
    b = EngineBackend(None, device="cpu")
    b.load()
    return b


class Preloaded:
    """An already loaded backend, optionally with its engine wrapped (a Batcher's `load` then costs nothing)."""

    def __init__(self, backend: EngineBackend, wrap=None) -> None:
        self.backend = backend
        self.engine = wrap(backend.engine) if wrap else backend.engine

    def load(self, progress=None) -> None:
        pass

    def complete(self, *args, **kwargs):
        return self.backend.complete(*args, **kwargs)

    def describe(self) -> dict:
        return self.backend.describe()


def loaded_batcher(backend: EngineBackend, wrap=None) -> Batcher:
    batcher = Batcher(Preloaded(backend, wrap))
    batcher.load()
    return batcher


@pytest.fixture
def make_client(backend):
    """make_client(token=None, max_body_bytes=..., wrap=None) -> (TestClient, Batcher)."""
    def make(wrap=None, **app_options):
        batcher = loaded_batcher(backend, wrap)
        return TestClient(make_app(LocalService(batcher), **app_options)), batcher

    return make


class HoldAtPoll:
    """The real engine, but at its `hold_at`-th cancel poll (before that denoising step) it waits until the
    request is cancelled, so a test can cancel while a canvas is mid-denoise without racing it."""

    def __init__(self, engine, hold_at: int = 1, fail_on: str | None = None) -> None:
        self.inner, self.hold_at, self.fail_on = engine, hold_at, fail_on
        self.polls = 0
        self.held = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def complete(self, request, sampler, generator=None, cancel=None):
        if self.fail_on and self.fail_on in request.prefix:
            raise RuntimeError("engine bug for the test")

        def check() -> bool:
            self.polls += 1
            if self.polls == self.hold_at:
                self.held.set()
                for _ in range(3000):  # until the request is cancelled; bounded so a broken test fails
                    if cancel():
                        break
                    time.sleep(0.01)
            return cancel()

        return self.inner.complete(request, sampler, generator=generator, cancel=check)
