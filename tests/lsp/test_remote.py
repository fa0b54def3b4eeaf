"""The remote backend against a stand-in HTTP server on 127.0.0.1 (no network): the dg infill API's
contract, vLLM's documented OpenAI-compatible shapes (tests/lsp/recorded/), retries, timeouts,
cancellation, bad options; and end to end through the language server as a subprocess."""

from __future__ import annotations

import concurrent.futures
import json
import random
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from dg_lsp.backend import make_backend
from dg_lsp.engine.errors import ConfigError, InfillCancelled
from dg_lsp.engine.request import Hole, InfillRequest, SamplerConfig
from dg_lsp.openai_compat import END_OF_TURN, HOLE, gemma_prompt, middle_from_reply
from dg_lsp.options import parse_options
from dg_lsp.remote import RemoteBackend, RemoteUnsupported, check_remote
from dg_lsp.remote_http import RemoteError, RemoteRejected, RemoteUnavailable, retry_after_s, sleep_polling

from .conftest import HANG_GUARD_S, initialize, inline_params, open_doc, stats, wait_for_state

RECORDED = json.loads((Path(__file__).parent / "recorded" / "vllm_openai.json").read_text())
MODEL_INFO = {"model": "dg-coder-tiny", "family": "dg", "device": "cuda", "dtype": "bfloat16", "params": 4_900_000,
              "kernels": "triton", "context": 512}
CONTRACT_KEYS = {"prefix", "suffix", "segments", "holes", "mode", "max_tokens", "max_canvases", "sampler", "seed"}


def infill_problems(body: Any) -> list[str]:
    """What a POST /v1/infill body breaks of the dg API contract (docs/serving.md), as the real server would."""
    if not isinstance(body, dict):
        return ["body: expected an object"]
    problems = [f"unknown field {k}" for k in body if k not in CONTRACT_KEYS]
    one, general = "prefix" in body, "segments" in body or "holes" in body
    if one == general:
        problems.append("expected either prefix/suffix or segments+holes")
    if one and not (isinstance(body["prefix"], str) and isinstance(body.get("suffix", ""), str)):
        problems.append("prefix/suffix: expected strings")
    if general:
        segments, holes = body.get("segments"), body.get("holes")
        if not (isinstance(segments, list) and isinstance(holes, list) and len(segments) == len(holes) + 1):
            problems.append("segments: expected one more than holes")
        elif not all(isinstance(h, dict) and isinstance(h.get("canvas"), int) and isinstance(h.get("init", ""), str)
                     for h in holes):
            problems.append("holes: expected {canvas: int, init: str}")
    if body.get("mode", "line") not in ("line", "block"):
        problems.append("mode: expected line or block")
    tokens = body.get("max_tokens")
    if not (tokens is None or (isinstance(tokens, int) and 1 <= tokens <= 4096)):
        problems.append("max_tokens: expected 1..4096")
    if not (isinstance(body.get("max_canvases", 1), int) and 1 <= body.get("max_canvases", 1) <= 32):
        problems.append("max_canvases: expected 1..32")
    if not isinstance(body.get("sampler", {}), dict) or not isinstance(body.get("seed", 0), int):
        problems.append("sampler/seed: expected an object and an integer")
    return problems


def infill_reply(middles: list[str]) -> dict:
    return {"api_version": "1", "middle": middles[0], "middles": middles,
            "tokens": [[{"text": m, "confidence": 0.9}] for m in middles], "steps": 8, "canvas_tokens": 16,
            "timings": {"queue_ms": 0.1, "encode_ms": 1.5, "denoise_ms": 4.0, "total_ms": 5.6},
            "model": "dg-coder-tiny", "replica": "r0"}


class StandIn:
    """A stand-in remote on 127.0.0.1 (port 0: any free one), serving from a thread.

    `answers[path]` is a list of (status, body, headers) taken one per request, the last one repeating; the
    default answers implement the dg API with canned middles (`middles`). A path in `hang` never answers:
    its handler waits until the client closes the connection, then counts it in `closed`. Every request is
    kept in `requests` as (method, path, headers, parsed body); contract problems of /v1/infill bodies in
    `problems`."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[str, str, dict, Any]] = []
        self.problems: list[str] = []
        self.answers: dict[str, list[tuple[int, Any, dict]]] = {}
        self.middles = ["return a + b"]
        self.hang: set[str] = set()
        self.hanging, self.closed_event = threading.Event(), threading.Event()
        self.closed = 0
        self._stopping = False
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                stand_in.handle(self, None)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.handle(self, raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def handle(self, handler: BaseHTTPRequestHandler, raw: bytes | None) -> None:
        body = json.loads(raw) if raw else None
        self.requests.append((handler.command, handler.path, dict(handler.headers), body))
        if handler.path in self.hang:
            self.hanging.set()
            self._wait_for_close(handler.connection)
            return
        script = self.answers.get(handler.path)
        if script:
            status, answer, headers = script.pop(0) if len(script) > 1 else script[0]
        else:
            status, answer, headers = self.default(handler.path, body)
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def default(self, path: str, body: Any) -> tuple[int, Any, dict]:
        if path == "/v1/health":
            return 200, {"status": "ok", "model": "dg-coder-tiny", "replica": "r0"}, {}
        if path == "/v1/model":
            return 200, MODEL_INFO, {}
        if path == "/v1/infill":
            problems = infill_problems(body)
            self.problems += problems
            if problems:
                return 422, {"error": {"code": "invalid", "message": "; ".join(problems)}}, {}
            holes = len(body["holes"]) if "holes" in body else 1
            return 200, infill_reply((self.middles * holes)[:holes]), {}
        return 404, {"error": {"code": "not_found", "message": f"no route {path}"}}, {}

    def _wait_for_close(self, conn: socket.socket) -> None:
        while not self._stopping:
            readable, _, _ = select.select([conn], [], [], 0.05)
            if readable and not conn.recv(1024):
                self.closed += 1
                self.closed_event.set()
                return

    def posts(self, path: str) -> list[Any]:
        return [body for method, p, _, body in self.requests if method == "POST" and p == path]

    def stop(self) -> None:
        self._stopping = True
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    server = StandIn()
    yield server
    server.stop()


def bounded(fn: Callable[[], Any]) -> Any:
    """Run `fn` on a thread and wait for it at most HANG_GUARD_S (a hang fails the test; no duration is
    asserted)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=HANG_GUARD_S)


def backend_for(server: StandIn, sleeps: list | None = None, **kwargs: Any) -> RemoteBackend:
    record = sleeps.append if sleeps is not None else None
    sleep = (lambda seconds, cancel: record(seconds)) if record else sleep_polling
    backend = RemoteBackend(server.url, sleep=sleep, rng=random.Random(0), environ={}, **kwargs)
    bounded(backend.load)
    return backend


CURSOR = InfillRequest.at_cursor("def add(a, b):\n    ", "\n", 16)


# --- the dg API ----------------------------------------------------------------------------------------

def test_dg_load_checks_health_and_describes_the_remote_model(stand_in: StandIn):
    backend = backend_for(stand_in)
    assert [(m, p) for m, p, _, _ in stand_in.requests] == [("GET", "/v1/health"), ("GET", "/v1/model")]
    info = backend.describe()
    assert info["model"] == "dg-coder-tiny" and info["backend"] == "remote" and info["remote"] == "ok"
    assert info["device"] == f"cuda at 127.0.0.1:{stand_in.port}"
    assert backend.context_limit() == 512 == info["context"]


def test_dg_cursor_request_follows_the_contract(stand_in: StandIn):
    backend = RemoteBackend(stand_in.url, environ={"DG_LSP_REMOTE_TOKEN": "s3cret"})
    bounded(backend.load)
    result = bounded(lambda: backend.complete(CURSOR, SamplerConfig(steps=12), seed=7))
    assert result.texts == ("return a + b",) and result.steps == 8 and result.denoise_ms == 4.0
    assert result.confidences == ((0.9,),)  # the reply's per-token confidences
    (body,) = stand_in.posts("/v1/infill")
    assert body == {"prefix": "def add(a, b):\n    ", "suffix": "\n", "max_tokens": 16, "mode": "line",
                    "max_canvases": 1, "sampler": {"steps": 12}, "seed": 7}  # only settings off their default
    assert stand_in.problems == []
    headers = stand_in.requests[-1][2]
    assert headers["Authorization"] == "Bearer s3cret" and headers["Content-Type"] == "application/json"
    assert "s3cret" not in repr(backend.describe()) and "s3cret" not in repr(backend._api.client)


def test_dg_holes_rewrites_and_blocks(stand_in: StandIn):
    backend = backend_for(stand_in)
    stand_in.middles = ["x * 2", "y"]
    holes = InfillRequest(segments=("y = ", "\nreturn ", "\n"), holes=(Hole(24), Hole(24)))
    assert bounded(lambda: backend.complete(holes, SamplerConfig())).texts == ("x * 2", "y")
    rewrite = InfillRequest.rewrite("a = ", "old()", "\n", 8)
    bounded(lambda: backend.complete(rewrite, SamplerConfig()))
    bounded(lambda: backend.complete(CURSOR, SamplerConfig(), canvases=4))
    first, second, third = stand_in.posts("/v1/infill")
    assert first["segments"] == ["y = ", "\nreturn ", "\n"] and first["holes"] == [{"canvas": 24, "init": ""}] * 2
    assert second["holes"] == [{"canvas": 8, "init": "old()"}] and "prefix" not in second
    assert third["mode"] == "block" and third["max_canvases"] == 4  # the block continues on the remote
    assert stand_in.problems == []


def test_dg_reply_without_middles_is_a_clear_error(stand_in: StandIn):
    backend = backend_for(stand_in)
    stand_in.answers["/v1/infill"] = [(200, {"middle": "x"}, {})]
    with pytest.raises(RemoteError, match="without 1 middles"):
        bounded(lambda: backend.complete(CURSOR, SamplerConfig()))


# --- retries ---------------------------------------------------------------------------------------------

def test_retries_503_with_backoff_then_succeeds(stand_in: StandIn):
    sleeps: list[float] = []
    backend = backend_for(stand_in, sleeps, retries=2)
    busy = (503, {"error": {"code": "draining", "message": "replica draining"}}, {})
    stand_in.answers["/v1/infill"] = [busy, busy, (200, infill_reply(["ok"]), {})]
    assert bounded(lambda: backend.complete(CURSOR, SamplerConfig())).texts == ("ok",)
    assert len(stand_in.posts("/v1/infill")) == 3
    first, second = sleeps  # exponential with equal jitter: [step/2, step], the step doubling
    assert 0.125 <= first <= 0.25 and 0.25 <= second <= 0.5


def test_gives_up_after_the_retries_and_says_why(stand_in: StandIn):
    sleeps: list[float] = []
    backend = backend_for(stand_in, sleeps, retries=1)
    stand_in.answers["/v1/infill"] = [(500, {"error": {"code": "internal", "message": "CUDA error"}}, {})]
    with pytest.raises(RemoteUnavailable, match=rf"remote.url {stand_in.url} answered POST /v1/infill with 500: "
                                                r"internal: CUDA error"):
        bounded(lambda: backend.complete(CURSOR, SamplerConfig()))
    assert len(stand_in.posts("/v1/infill")) == 2 and len(sleeps) == 1
    assert backend.describe()["remote"].startswith("unreachable")


@pytest.mark.parametrize("status,message", [(400, "both forms given"), (401, "wrong token"),
                                            (422, "max_tokens=0: expected 1..4096")])
def test_4xx_is_never_retried_and_its_message_is_kept(stand_in: StandIn, status: int, message: str):
    sleeps: list[float] = []
    backend = backend_for(stand_in, sleeps, retries=3)
    stand_in.answers["/v1/infill"] = [(status, {"error": {"code": "bad", "message": message}}, {})]
    with pytest.raises(RemoteRejected) as caught:
        bounded(lambda: backend.complete(CURSOR, SamplerConfig()))
    assert f"with {status}: bad: {message}" in str(caught.value) and "remote.url" in str(caught.value)
    assert len(stand_in.posts("/v1/infill")) == 1 and sleeps == []


def test_retry_after_is_honoured_for_429(stand_in: StandIn):
    sleeps: list[float] = []
    backend = backend_for(stand_in, sleeps, retries=2)
    stand_in.answers["/v1/infill"] = [(429, {"error": {"code": "busy", "message": "slow down"}}, {"Retry-After": "7"}),
                                      (200, infill_reply(["ok"]), {})]
    assert bounded(lambda: backend.complete(CURSOR, SamplerConfig())).texts == ("ok",)
    assert sleeps == [7.0]


def test_a_retry_after_too_long_for_an_editor_is_reported_not_waited(stand_in: StandIn):
    sleeps: list[float] = []
    backend = backend_for(stand_in, sleeps, retries=2)
    stand_in.answers["/v1/infill"] = [(503, {"error": {"code": "loading", "message": "model loading"}},
                                       {"Retry-After": "120"})]
    with pytest.raises(RemoteUnavailable, match="retry after 120 s"):
        bounded(lambda: backend.complete(CURSOR, SamplerConfig()))
    assert sleeps == [] and len(stand_in.posts("/v1/infill")) == 1


def test_retry_after_reads_seconds_and_dates():
    assert retry_after_s("3") == 3.0 and retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: retry now


# --- timeouts, cancellation, an unreachable remote --------------------------------------------------------

def test_a_remote_that_never_answers_times_out_and_the_next_request_works(stand_in: StandIn):
    backend = backend_for(stand_in, [], timeout_ms=150, retries=2)
    stand_in.hang.add("/v1/infill")
    with pytest.raises(RemoteUnavailable, match="did not answer POST /v1/infill within 150 ms"):
        bounded(lambda: backend.complete(CURSOR, SamplerConfig()))
    assert stand_in.closed_event.wait(HANG_GUARD_S) and stand_in.closed == 1  # the client hung up
    assert len(stand_in.posts("/v1/infill")) == 1  # a read timeout is not retried
    stand_in.hang.clear()
    assert bounded(lambda: backend.complete(CURSOR, SamplerConfig())).texts == ("return a + b",)


def test_a_superseded_request_stops_waiting_and_closes_the_connection(stand_in: StandIn):
    backend = backend_for(stand_in, [], timeout_ms=600_000)
    stand_in.hang.add("/v1/infill")
    cancel = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(backend.complete, CURSOR, SamplerConfig(), cancel.is_set)
        assert stand_in.hanging.wait(HANG_GUARD_S)
        cancel.set()
        with pytest.raises(InfillCancelled):
            future.result(timeout=HANG_GUARD_S)
    assert stand_in.closed_event.wait(HANG_GUARD_S) and stand_in.closed == 1
    assert len(stand_in.posts("/v1/infill")) == 1


def test_backing_off_stops_when_cancelled():
    with pytest.raises(InfillCancelled):
        sleep_polling(3600.0, lambda: True)


def test_an_unreachable_remote_fails_the_load_naming_remote_url():
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = RemoteBackend(f"http://127.0.0.1:{port}", retries=0, environ={})
    with pytest.raises(RemoteUnavailable, match=rf"remote.url http://127.0.0.1:{port} is unreachable "
                                                r"\(GET /v1/health: connection refused\)"):
        bounded(backend.load)
    assert backend.describe()["remote"].startswith("unreachable")
    with pytest.raises(RemoteUnavailable, match="never reached"):
        backend.complete(CURSOR, SamplerConfig())


# --- options -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,key", [
    ({"url": "ftp://gpu-box"}, "remote.url"), ({"url": "gpu-box:8000"}, "remote.url"),
    ({"url": "http://user:pw@gpu-box"}, "remote.url"), ({"url": "http://gpu-box:99999"}, "remote.url"),
    ({"api": "grpc"}, "remote.api"), ({"timeoutMs": 0}, "remote.timeoutMs"), ({"retries": -1}, "remote.retries"),
])
def test_bad_remote_options_name_the_key(raw: dict, key: str):
    options, problems = parse_options({"backend": "remote", "remote": raw})
    (problem,) = problems
    assert problem.startswith(f"option {key} = ") and "expected" in problem
    assert options.backend == "remote"


def test_remote_needs_a_url_and_a_readable_token(tmp_path: Path):
    options, problems = parse_options({"backend": "remote"})
    assert problems == [] and isinstance(make_backend(options), RemoteBackend)
    with pytest.raises(ConfigError, match="backend remote needs remote.url"):
        make_backend(options).load()
    assert "remote.api 'grpc'" in check_remote("http://h", "grpc")
    empty = tmp_path / "token"
    empty.write_text("\n")
    for token_file, words in ((str(empty), "is empty"), (str(tmp_path / "missing"), "cannot be read")):
        with pytest.raises(ConfigError, match=f"remote.tokenFile .* {words}"):
            RemoteBackend("http://127.0.0.1:9", token_file=token_file, environ={}).load()


def test_remote_options_change_the_backend_key():
    base, _ = parse_options({"backend": "remote", "remote": {"url": "http://a:1"}})
    other, _ = parse_options({"backend": "remote", "remote": {"url": "http://a:1", "timeoutMs": 500}})
    assert base.backend_key() != other.backend_key()


def test_what_the_remote_cannot_do(stand_in: StandIn):
    backend = backend_for(stand_in)
    with pytest.raises(RemoteUnsupported, match="hints.enable"):
        backend.score("x = 1", 0, 5)
    assert backend.count_tokens("abcdef") == 2  # an estimate: no tokenizer over the wire


# --- the openai API (vLLM), against its documented shapes ------------------------------------------------

@pytest.fixture
def vllm(stand_in: StandIn) -> StandIn:
    stand_in.answers["/v1/models"] = [(200, RECORDED["models_response"]["body"], {})]
    stand_in.answers["/v1/completions"] = [(200, RECORDED["completions_response"]["body"], {})]
    return stand_in


def test_openai_request_has_the_documented_shape(vllm: StandIn):
    backend = backend_for(vllm, api="openai")
    assert [p for _, p, _, _ in vllm.requests] == ["/v1/models"]
    assert backend.describe()["model"] == "Qwen/Qwen2.5-1.5B-Instruct"
    bounded(lambda: backend.complete(CURSOR, SamplerConfig(), seed=3))
    (body,) = vllm.posts("/v1/completions")
    documented = RECORDED["completions_request"]["body"]
    for key, value in documented.items():  # every field of vLLM's example, with the same JSON type
        assert key in body and isinstance(body[key], (int, float) if isinstance(value, (int, float)) else type(value))
    fields = RECORDED["completions_fields"]
    assert set(body) <= set(fields["supported"]) and not set(body) & set(fields["not_supported"])
    assert body["model"] == "Qwen/Qwen2.5-1.5B-Instruct" and body["stop"] == [END_OF_TURN]
    assert body["prompt"] == gemma_prompt("def add(a, b):\n    ", "\n") and body["max_tokens"] == 16


def test_openai_parses_the_documented_response_and_models(vllm: StandIn):
    backend = backend_for(vllm, api="openai")
    result = bounded(lambda: backend.complete(CURSOR, SamplerConfig()))
    assert result.texts == (" city in Northern California known",)
    assert backend.context_limit() == 32768 - 128  # max_model_len less the prompt's own tokens


def test_openai_unknown_model_and_documented_error(vllm: StandIn):
    with pytest.raises(RemoteRejected, match=r"remote.model 'gemma' is not served .* it serves Qwen/Qwen2.5-1.5B"):
        backend_for(vllm, api="openai", model="gemma")
    backend = backend_for(vllm, api="openai")
    error = RECORDED["error_response"]
    vllm.answers["/v1/completions"] = [(error["status"], error["body"], {})]
    with pytest.raises(RemoteRejected, match="with 404: The model `gemma` does not exist."):
        bounded(lambda: backend.complete(CURSOR, SamplerConfig()))


def test_openai_fills_several_holes_left_to_right(vllm: StandIn):
    backend = backend_for(vllm, api="openai")
    vllm.answers["/v1/completions"] = [(200, {"choices": [{"index": 0, "text": t}]}, {}) for t in ("x * 2", "y")]
    holes = InfillRequest(segments=("y = ", "\nreturn ", "\n"), holes=(Hole(24), Hole(24)))
    assert bounded(lambda: backend.complete(holes, SamplerConfig())).texts == ("x * 2", "y")
    first, second = (body["prompt"] for body in vllm.posts("/v1/completions"))
    assert f"y = {HOLE}\nreturn \n" in first and f"y = x * 2\nreturn {HOLE}\n" in second


def test_gemma_prompt_format():
    prompt = gemma_prompt("def f():\n    ", "\n", init="")
    assert prompt.startswith("<|turn>user\n") and f"\n\ndef f():\n    {HOLE}\n{END_OF_TURN}\n" in prompt
    assert prompt.endswith("<|turn>model\n<|channel>thought\n<channel|>")
    assert "held the text below" in gemma_prompt("a = ", "\n", init="old()")


@pytest.mark.parametrize("reply,middle", [
    ("return a + b\n", "return a + b"),  # the suffix already starts with the line break
    ("```python\nreturn a + b\n```", "return a + b"),  # a Markdown fence
    ("<|channel>thought\nadd them<channel|>return a + b", "return a + b"),  # a thought block
    ("    return a + b<turn|>", "return a + b"),  # echoed indentation; the stop string kept
    (f"{HOLE}return a + b", "return a + b"),
])
def test_middle_from_reply(reply: str, middle: str):
    assert middle_from_reply(reply, "def add(a, b):\n    ", "\n") == middle


def test_middle_from_reply_drops_an_echo_of_the_cursor_line():
    assert middle_from_reply("x = compute(1, 2)", "y = 0\nx = compute(", ")\n") == "1, 2)"


# --- end to end: the language server with backend remote -----------------------------------------------

URI = "file:///work/calc.py"
SOURCE = "def add(a, b):\n    \n\nprint(add(1, 2))\n"


def remote_options(url: str, **remote: Any) -> dict:
    return {"backend": "remote", "remote": {"url": url, "retries": 1, **remote}}


async def inline_texts(client: LanguageClient, line: int, character: int) -> list[str]:
    result = await client.text_document_inline_completion_async(inline_params(URI, line, character))
    return [item.insert_text for item in result.items]


async def test_lsp_completes_through_the_remote_and_survives_losing_it(client: LanguageClient):
    stand_in = StandIn()
    try:
        await initialize(client, remote_options(stand_in.url))
        status = await wait_for_state(client, ("ready",))
        assert status["model"] == "dg-coder-tiny" and f"127.0.0.1:{stand_in.port}" in status["device"]
        open_doc(client, URI, SOURCE)
        assert await inline_texts(client, 1, 4) == ["return a + b"]
        assert stand_in.problems == [] and stand_in.posts("/v1/infill")[0]["prefix"].endswith("def add(a, b):\n    ")
        port = stand_in.port
        stand_in.stop()

        assert await inline_texts(client, 4, 0) == []  # unreachable: an empty reply, not a hang or an error
        info = await stats(client)
        assert info["failed"] == 1 and info["modelState"] == "ready" and info["torchLoaded"] is False
        # the outage is told once (a warning and the status's problem), not per request
        assert await inline_texts(client, 4, 1) == []
        warned = [m.message for m in client.messages if m.type == types.MessageType.Warning and "unreachable" in m.message]
        assert len(warned) == 1 and f"remote.url {stand_in.url}" in warned[0]
        assert "unreachable" in (client.statuses[-1].get("problem") or "")
        stand_in = StandIn(port)  # back without a reload: the next completion works and the notice clears
        assert await inline_texts(client, 1, 4) == ["return a + b"]
        assert client.statuses[-1].get("problem") is None
        assert any(m.type == types.MessageType.Info and "answers again" in m.message for m in client.messages)
        stand_in.stop()

        client.statuses.clear()  # a reload (any remote.* change) checks the remote again: it is down
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"dg-lsp": remote_options(stand_in.url, timeoutMs=5000)}))
        await wait_for_state(client, ("error",))
        shown = [m.message for m in client.messages if m.type == types.MessageType.Error]
        assert any(f"remote.url {stand_in.url} is unreachable" in m for m in shown), shown
        assert await inline_texts(client, 1, 4) == []  # no backend until the remote answers again

        stand_in = StandIn(port)  # the remote is back: the server keeps serving
        stand_in.middles = ["print(a)"]
        client.statuses.clear()
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"dg-lsp": remote_options(stand_in.url, timeoutMs=6000)}))
        await wait_for_state(client, ("ready",))
        assert client.statuses[-1].get("problem") is None  # a reload starts with no outage
        assert await inline_texts(client, 4, 0) == ["print(a)"]
    finally:
        stand_in.stop()


async def test_lsp_load_failure_with_a_bad_url_names_the_key(client: LanguageClient):
    await initialize(client, {"backend": "remote", "remote": {"url": "ftp://gpu-box"}})
    await wait_for_state(client, ("error",))
    messages = [m.message for m in client.messages]
    assert any("option remote.url = 'ftp://gpu-box' is invalid" in m for m in messages), messages
    assert any("backend remote needs remote.url" in m for m in messages), messages
    open_doc(client, URI, SOURCE)
    assert await inline_texts(client, 1, 4) == []
