"""A client that goes away stops its canvas between denoising steps: the handler sets the request's cancel
flag, which the engine polls before every step. The engine here is the real one, held at a chosen poll
until the flag is set (conftest.HoldAtPoll), so nothing depends on timing; /v1/health counts the result."""

from __future__ import annotations

import asyncio
import json

import pytest

from dg_lsp.serving.api import make_app
from dg_lsp.serving.batcher import LocalService

from .conftest import GOOD, HoldAtPoll, loaded_batcher

pytestmark = pytest.mark.asyncio

# 8 steps that each commit 2 of the 16 positions (no early halt), so a hold at poll 3 is mid-denoise
SLOW = {**GOOD, "sampler": {"steps": 8, "halt_when_stable": False}}


def scope(path: str = "/v1/infill", method: str = "POST") -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


class Client:
    """The ASGI side of one HTTP client: sends the body, then reports a disconnect once `gone` is set."""

    def __init__(self, body: dict, gone) -> None:
        self.body, self.gone = json.dumps(body).encode(), gone
        self.sent_body = False
        self.messages: list[dict] = []

    async def receive(self) -> dict:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if self.gone():  # answered at once: starlette's is_disconnected does not wait
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # nothing yet (is_disconnected cancels this wait)

    async def send(self, message: dict) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.messages if m["type"] == "http.response.start"), None)


def held_app(backend, hold_at: int):
    engine = {}

    def wrap(real):
        engine["held"] = HoldAtPoll(real, hold_at=hold_at)
        return engine["held"]

    batcher = loaded_batcher(backend, wrap)
    return make_app(LocalService(batcher)), batcher, engine["held"]


async def get_json(app, path: str) -> dict:
    client = Client({}, lambda: False)
    await app(scope(path, "GET"), client.receive, client.send)
    return json.loads(b"".join(m.get("body", b"") for m in client.messages if m["type"] == "http.response.body"))


@pytest.mark.parametrize("hold_at", [1, 3])
async def test_a_client_that_disconnects_stops_its_canvas_between_steps(backend, hold_at):
    app, batcher, engine = held_app(backend, hold_at)
    client = Client(SLOW, gone=engine.held.is_set)  # disconnects once the engine reached the held step
    await app(scope(), client.receive, client.send)
    assert client.status == 499  # answered to nobody: the client is gone
    assert engine.polls == hold_at  # no step ran after the one the disconnect interrupted
    stats = (await get_json(app, "/v1/health"))["stats"]
    assert stats["cancelled"] == 1 and stats["completed"] == 0 and stats["in_flight"] == 0
    # and the app serves the next client in full
    client = Client(GOOD, gone=lambda: False)
    await app(scope(), client.receive, client.send)
    assert client.status == 200


async def test_a_handler_cancelled_by_its_server_cancels_the_canvas(backend):
    """Ray Serve's proxy cancels the replica's handler when its client goes away: same outcome."""
    app, batcher, engine = held_app(backend, hold_at=2)
    client = Client(SLOW, gone=lambda: False)
    task = asyncio.ensure_future(app(scope(), client.receive, client.send))
    for _ in range(3000):  # until the engine waits at its second step (polling; nothing is timed)
        if engine.held.is_set():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(batcher.flush)
    assert engine.polls == 2 and batcher.stats.cancelled == 1 and batcher.stats.completed == 0
