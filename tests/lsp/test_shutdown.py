"""The server process ends in order from every state (docs/lsp.md, "Shutdown and exit codes").

Each test starts `python -m dg_lsp.cli` (stdio, or TCP for the signal cases) with a completion that would
run far longer than the test (fake backend with a step delay, or the engine on a tiny checkpoint made slow),
waits until the worker has started it, then ends the server one way: EOF on stdin, `exit` without
`shutdown`, `shutdown` + `exit`, `shutdown` + EOF, SIGTERM or SIGINT. The process must end with the
documented code, answer the running request, and write no abort or traceback. Timeouts here are safety
nets against a hang only.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

import pytest

from dg_lsp.lifecycle import exit_code

from .conftest import SERVER_COMMAND, frame

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and exit codes")

SAFETY_S = 120.0  # against a hang only; nothing here is timed
URI = "file:///work/shutdown.py"
SOURCE = "def f(x):\n    \n"
FAKE = {"backend": "fake", "fake": {"stepDelayMs": 100}, "sampler": {"steps": 1000}}  # ~100 s a request
REQUEST_CANCELLED = -32800
STOPS = {  # how the server is told to end -> the exit code docs/lsp.md gives for it
    "eof": 1, "exit": 1, "shutdown+exit": 0, "shutdown+eof": 0,
    "sigterm": 128 + signal.SIGTERM, "sigint": 128 + signal.SIGINT,
}


class RawClient:
    """Framed JSON-RPC over a subprocess's pipes, so the test controls stdin, signals and the exit code."""

    def __init__(self, proc: asyncio.subprocess.Process, reader: asyncio.StreamReader | None = None,
                 writer: asyncio.StreamWriter | None = None) -> None:
        self.proc = proc
        self.reader = reader or proc.stdout  # stdio, or a TCP connection
        self.writer = writer or proc.stdin
        self.seen: list[dict] = []  # every message read, in order
        self._ids = iter(range(1, 1 << 30))
        self._stderr = asyncio.ensure_future(proc.stderr.read())

    @classmethod
    async def start(cls, options: dict, tcp: bool = False) -> "RawClient":
        args, port = [], None
        if tcp:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            args = ["--tcp", "--port", str(port)]
        proc = await asyncio.create_subprocess_exec(*SERVER_COMMAND, *args, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        client = cls(proc, *(await connect(proc, port) if tcp else ()))
        await client.request("initialize", {"capabilities": {}, "initializationOptions": options})
        client.notify("initialized", {})
        return client

    def notify(self, method: str, params: dict | None = None) -> None:
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.writer.write(frame(message))

    def send_request(self, method: str, params: dict | None = None) -> int:
        msg_id = next(self._ids)
        message = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.writer.write(frame(message))
        return msg_id

    async def read(self) -> dict | None:
        """The next message, or None at the end of the server's output."""
        length = None
        while True:
            line = await self.reader.readline()
            if not line:
                return None
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            elif line == b"\r\n" and length is not None:
                message = json.loads(await self.reader.readexactly(length))
                self.seen.append(message)
                return message

    async def request(self, method: str, params: dict | None = None) -> dict:
        msg_id = self.send_request(method, params)
        while (message := await self.read()) is not None:
            if message.get("id") == msg_id and "method" not in message:
                return message
        raise AssertionError(f"the server ended before answering {method}: {self.seen}")

    async def wait_ready(self) -> None:
        while not any(m.get("method") == "dg/status" and m["params"]["state"] == "ready" for m in self.seen):
            assert await self.read() is not None, f"the server ended before its model was ready: {self.seen}"

    async def start_long_completion(self) -> int:
        """Send an inline completion and return its id once the worker is running it."""
        self.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1,
                                                              "text": SOURCE}})
        msg_id = self.send_request("textDocument/inlineCompletion", {
            "textDocument": {"uri": URI}, "position": {"line": 1, "character": 4}, "context": {"triggerKind": 1}})
        while (await self.request("dg/stats"))["result"]["started"] < 1:
            await asyncio.sleep(0.02)
        return msg_id

    async def stop(self, how: str) -> None:
        if how == "eof":
            self.writer.close()
        elif how == "exit":
            self.notify("exit")
        elif how in ("shutdown+exit", "shutdown+eof"):
            reply = await self.request("shutdown")
            assert reply.get("result", "missing") is None, reply
            if how == "shutdown+exit":
                self.notify("exit")
            else:
                self.writer.close()
        else:
            self.proc.send_signal({"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[how])

    async def finish(self) -> tuple[int, str]:
        """Read the server's output to its end; return its exit code and stderr."""
        while await self.read() is not None:
            pass
        code = await self.proc.wait()
        return code, (await self._stderr).decode(errors="replace")

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def connect(proc: asyncio.subprocess.Process, port: int):
    while True:  # until the server listens
        try:
            return await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert proc.returncode is None, "the server ended before it listened"
            await asyncio.sleep(0.05)


async def stop_while_running(options: dict, how: str, tcp: bool = False) -> tuple[int, str, list[dict], int]:
    client = await asyncio.wait_for(RawClient.start(options, tcp), SAFETY_S)
    try:
        async def scenario():
            await client.wait_ready()
            msg_id = await client.start_long_completion()
            await client.stop(how)
            return (*await client.finish(), msg_id)

        code, stderr, msg_id = await asyncio.wait_for(scenario(), SAFETY_S)
        return code, stderr, client.seen, msg_id
    finally:
        client.kill()


def check_orderly(how: str, code: int, stderr: str, seen: list[dict], msg_id: int) -> None:
    assert code == STOPS[how], f"{how}: exit code {code}, expected {STOPS[how]}; stderr:\n{stderr}"
    for bad in ("terminate called", "Traceback", "Abort"):
        assert bad not in stderr, f"{how}: stderr has {bad!r}:\n{stderr}"
    replies = [m for m in seen if m.get("id") == msg_id and "method" not in m]
    if how != "eof" or replies:  # at EOF the client is gone: a reply is a courtesy
        assert len(replies) == 1, f"{how}: the running completion got {len(replies)} replies: {seen}"
        assert replies[0].get("error", {}).get("code") == REQUEST_CANCELLED, replies[0]


@pytest.mark.parametrize("how", list(STOPS))
async def test_fake_backend_stops_in_order(how):
    check_orderly(how, *await stop_while_running(FAKE, how))


@pytest.mark.parametrize("how", ["sigterm", "sigint"])
async def test_tcp_session_stops_in_order_on_a_signal(how):
    check_orderly(how, *await stop_while_running(FAKE, how, tcp=True))


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory):
    """A tiny random checkpoint made slow enough that a 512-step completion outlasts every test."""
    testing = pytest.importorskip("dg_lsp.engine.testing", reason="dg_lsp.engine.testing is not available")
    return testing.write_tiny_checkpoint(tmp_path_factory.mktemp("slow") / "ckpt", family="dg", seed=0,
                                         hidden=256, layers=8, max_positions=1024)


def engine_options(checkpoint) -> dict:
    return {"backend": "engine", "model": {"device": "cpu", "path": str(checkpoint)}, "context": {"budget": 200},
            "inline": {"lineCanvas": 512, "blockCanvas": 512}, "cache": {"size": 0},
            "sampler": {"steps": 512, "haltWhenStable": False}}


@pytest.mark.parametrize("how", list(STOPS))
async def test_engine_stops_in_order_mid_step(how, slow_checkpoint):
    check_orderly(how, *await stop_while_running(engine_options(slow_checkpoint), how))


@pytest.mark.parametrize("attempt", range(5))
async def test_engine_eof_mid_step_never_aborts(attempt, slow_checkpoint):
    """EOF while torch runs aborted the process 6 times out of 6 before the worker was joined."""
    check_orderly("eof", *await stop_while_running(engine_options(slow_checkpoint), "eof"))


def test_exit_codes_follow_the_spec_and_the_shell():
    assert exit_code(shutdown_received=True) == 0
    assert exit_code(shutdown_received=False) == 1
    assert exit_code(shutdown_received=True, signum=signal.SIGTERM) == 143
    assert exit_code(shutdown_received=False, signum=signal.SIGINT) == 130

