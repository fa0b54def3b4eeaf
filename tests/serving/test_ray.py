"""The Ray Serve application for real: a local Ray (2 CPUs, no dashboard), one app with two CPU replicas of
the embedded model on a free loopback port, for the whole module.

Batches are held (serving.testing.HeldBatcher, while a file exists) so that the tests decide when requests
are in flight, instead of racing the model: concurrent requests queue up and are denoised together, a
client that disconnects has its request cancelled on the replica, and a replica can be killed while it
holds a language server's request, which the remote backend then retries on the other replica.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import pytest

ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install 'dg-lsp[serve]')")
serve = pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

import pytest_lsp  # noqa: E402
from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient  # noqa: E402

from dg_lsp.serving.app import ServeArgs, application  # noqa: E402
from dg_lsp.serving.testing import HOLD_ENV, HeldBatcher, held  # noqa: E402

from .conftest import GOOD  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")

APP, ROUTE = "dg", "/dg"
PROBES = 2000  # health probes before a test gives up waiting for a state (Serve routes each one to either replica)


@pytest.fixture(scope="module")
def hold(tmp_path_factory):
    """While this file exists, replicas hold every batch before denoising it (replicas inherit the env)."""
    path = tmp_path_factory.mktemp("hold") / "hold"
    os.environ[HOLD_ENV] = str(path)
    yield path
    os.environ.pop(HOLD_ENV, None)
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def url(hold):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        cfg = ServeArgs(replicas=2, max_batch_size=8, batch_wait_timeout_s=0.05)
        serve.run(application(cfg, HeldBatcher), name=APP, route_prefix=ROUTE)
        yield f"http://127.0.0.1:{port}{ROUTE}"
    finally:
        serve.shutdown()
        ray.shutdown()


async def replicas(http: httpx.AsyncClient, url: str, until) -> dict[str, dict]:
    """Probe /v1/health until `until(view)`, view = the latest health body of each replica seen so far."""
    view: dict[str, dict] = {}
    for _ in range(PROBES):
        try:
            r = await http.get(f"{url}/v1/health")
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code == 200:
            body = r.json()
            view[body["replica"]] = body
            if until(view):
                return view
        await asyncio.sleep(0.01)
    raise AssertionError(f"replicas never reached the state waited for: {view}")


def total(view: dict, stat: str) -> int:
    return sum(body["stats"][stat] for body in view.values())


async def holding(hold, until) -> list[dict]:
    """Wait until `until(markers)` holds for the markers of the replicas holding a batch."""
    for _ in range(PROBES):
        markers = held(hold)
        if until(markers):
            return markers
        await asyncio.sleep(0.01)
    raise AssertionError(f"replicas never held what was waited for: {held(hold)}")


async def test_concurrent_requests_are_denoised_in_one_batch(url, hold):
    deployment = serve.status().applications[APP].deployments["dg-infill"]
    assert deployment.replica_states == {"RUNNING": 2}
    async with httpx.AsyncClient(timeout=120) as http:
        hold.touch()
        posts = [asyncio.ensure_future(http.post(f"{url}/v1/infill", json={**GOOD, "prefix": f"x{i} = "}))
                 for i in range(6)]
        await holding(hold, lambda markers: sum(m["in_flight"] for m in markers) == 6)
        hold.unlink()
        answers = await asyncio.gather(*posts)
        assert [a.status_code for a in answers] == [200] * 6
        assert all(a.json()["api_version"] == "1" and a.json()["model"] == "dg-coder-tiny" for a in answers)
        # 6 requests on at most 2 replicas: one replica got 3 or more, and those that queued while its first
        # batch was held were denoised as one batch
        view = await replicas(http, url, lambda view: total(view, "completed") >= 6)
        assert max(body["stats"]["largest_batch"] for body in view.values()) >= 2
        bad = await http.post(f"{url}/v1/infill", content=b"{", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "malformed_json"
        assert "/v1/infill" in (await http.get(f"{url}/openapi.json")).json()["paths"]


async def test_a_client_that_disconnects_has_its_request_cancelled_on_the_replica(url, hold):
    """Serve's proxy cancels the replica's handler when its client goes away; the handler sets the request's
    cancel flag, so the held batch, once released, stops that canvas before its first denoising step."""
    async with httpx.AsyncClient(timeout=120) as http:
        before = total(await replicas(http, url, lambda view: len(view) == 2), "cancelled")
        hold.touch()
        leaving = httpx.AsyncClient(timeout=120)
        post = asyncio.ensure_future(leaving.post(f"{url}/v1/infill", json=GOOD))
        await holding(hold, lambda markers: sum(m["in_flight"] for m in markers) == 1)
        post.cancel()
        await leaving.aclose()  # the connection closes: the client is gone
        await holding(hold, lambda markers: sum(m["in_flight"] for m in markers) == 0)  # the handler ended
        hold.unlink()
        await replicas(http, url, lambda view: len(view) == 2 and total(view, "cancelled") == before + 1)


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=[sys.executable, "-m", "dg_lsp.cli"]))
async def lsp(lsp_client: LanguageClient):
    yield
    await lsp_client.shutdown_session()


SOURCE = "import os\n\n\ndef add(a, b):\n    return \n\n\nprint(add(1, 2))\n"
URI = "file:///work/remote_demo.py"


async def test_a_language_server_completes_through_serve_when_a_replica_dies_mid_request(url, hold,
                                                                                           lsp: LanguageClient):
    await lsp.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities())),
        initialization_options={"backend": "remote", "remote": {"url": url, "api": "dg", "timeoutMs": 120000},
                                "cache": {"size": 0}}))
    lsp.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=URI, language_id="python", version=1, text=SOURCE)))
    async with httpx.AsyncClient(timeout=120) as http:
        before = await replicas(http, url, lambda view: len(view) == 2)
        hold.touch()
        reply = asyncio.ensure_future(lsp.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(4, 11),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))))
        (victim,) = await holding(hold, lambda markers: [m["in_flight"] for m in markers] == [1])
        ray.kill(ray.get_actor(victim["actor"], namespace="serve"), no_restart=True)
        hold.unlink()
        result = await reply  # the remote backend's retry reached another replica
        assert result is not None
        others = {r: body for r, body in before.items() if body["actor"] != victim["actor"]}
        done = total(others, "completed") + 1
        await replicas(http, url, lambda view: total({r: b for r, b in view.items() if b["actor"] != victim["actor"]},
                                                     "completed") >= done)
