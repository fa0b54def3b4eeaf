"""The wire: raw bytes over a pipe (stdio) and TCP to `python -m dg_lsp.cli` with the fake backend.

Malformed headers, huge lengths, garbage and bodies that are not JSON must each cost at most the message
they broke: afterwards `initialize` and an inline completion still get their replies, and every request
gets exactly one. Over TCP: one client at a time, a fresh session per connection, loopback unless told,
and an optional token. Timeouts here are safety nets only; nothing is timed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dg_lsp.options import Options
from dg_lsp.server import build_server
from dg_lsp.tcp import KeepLoaded, TcpHost
from dg_lsp.transport import Body, Dropped, Framer, Limits

from .conftest import fake_options, frame

SERVER = [sys.executable, "-m", "dg_lsp.cli"]
WAIT = 30.0  # safety net for one reply
URI = "file:///work/ok.py"


def request(msg_id, method: str, params=None) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params if params is not None else {}}


class Wire:
    """A raw JSON-RPC client: writes bytes, a thread splits what comes back into messages."""

    def __init__(self, write, read) -> None:
        self._write, self._read = write, read
        self.inbox: queue.Queue = queue.Queue()
        self.received: list[dict] = []
        self.closed = threading.Event()
        self._ids = itertools.count(1)
        threading.Thread(target=self._reader, daemon=True).start()

    @classmethod
    def over_socket(cls, sock: socket.socket) -> "Wire":
        return cls(sock.sendall, lambda: sock.recv(65536))

    def _reader(self) -> None:
        buf = b""
        try:
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length"))
                    if len(rest) >= length:
                        self.inbox.put(json.loads(rest[:length]))
                        buf = rest[length:]
                        continue
                data = self._read()
                if not data:
                    break
                buf += data
        except OSError:
            pass
        finally:
            self.closed.set()

    def send(self, data: dict | bytes) -> None:
        self._write(data if isinstance(data, bytes) else frame(data))

    def next(self, timeout: float = WAIT) -> dict:
        message = self.inbox.get(timeout=timeout)
        self.received.append(message)
        return message

    def reply(self, msg_id, timeout: float = WAIT) -> dict:
        """The reply to `msg_id` (answering the server's own requests meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.1, deadline - time.monotonic()))
            if "method" in message and "id" in message:  # a request from the server
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            elif message.get("id") == msg_id and "method" not in message:
                return message

    def call(self, method: str, params=None) -> dict:
        msg_id = f"r{next(self._ids)}"
        self.send(request(msg_id, method, params))
        return self.reply(msg_id)

    def replies(self) -> Counter:
        return Counter(json.dumps(m.get("id")) for m in self.received if "method" not in m)


def initialize_and_complete(wire: Wire, options: dict | None = None) -> None:
    """A normal session start and one inline completion, with correct replies."""
    init = wire.call("initialize", {"processId": None, "rootUri": None, "capabilities": {},
                                    "initializationOptions": options or fake_options()})
    assert init["result"]["serverInfo"]["name"] == "dg-lsp", init
    wire.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    wire.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": URI, "languageId": "python", "version": 1, "text": "def ok():\n    \n"}}})
    done = wire.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": URI}, "position": {"line": 1, "character": 4}, "context": {"triggerKind": 1}})
    assert [item["insertText"] for item in done["result"]["items"]] == ["fill_0"], done


# --- malformed frames ------------------------------------------------------------------------------------

BAD = request("bad", "dg/stats")
BODY = json.dumps(BAD).encode()
# name -> (bytes sent first, what answers them: the "bad" request's id or a null-id error code, extra args)
CASES = {
    "length not a number": (b"Content-Length: abc\r\n\r\n" + BODY, "bad", []),
    "lower-case header name": (frame(BAD, header=b"content-length: %d\r\n\r\n"), "bad", []),
    "trailing space": (frame(BAD, header=b"Content-Length: %d \r\n\r\n"), "bad", []),
    "no space, LF line ends": (frame(BAD, header=b"Content-Length:%d\n\n"), "bad", []),
    "length too short": (frame(BAD, len(BODY) - 5), -32700, []),
    "length too long": (frame(BAD, len(BODY) + 40), "bad", []),
    "length 10**15": (frame(BAD, 10**15), "bad", []),
    "length 10**20": (frame(BAD, 10**20), "bad", []),
    "garbage then a valid message": (b"garbage\r\n\x00\xff\xfe\r\n{\"id\": 1}\r\n" + frame(BAD), "bad", []),
    "header line over the limit": (b"X" * 20_000 + frame(BAD), "bad", []),
    "body that is not JSON": (frame(b"{not json"), -32700, []),
    "body that is not UTF-8": (frame(b"\xff\xfe\x00"), -32700, []),
    "empty body": (frame(b""), -32700, []),
    "body over --max-message-bytes": (frame(request("bad", "dg/stats", {"pad": "x" * 5000})), -32600,
                                      ["--max-message-bytes", "1000"]),
}


def check_answered_once(wire: Wire, expect) -> None:
    replies = wire.replies()
    assert all(n == 1 for n in replies.values()), replies
    nulls = [m for m in wire.received if "method" not in m and m.get("id") is None]
    if expect == "bad":
        assert replies['"bad"'] == 1 and not nulls, wire.received
    else:
        assert '"bad"' not in replies and [m["error"]["code"] for m in nulls] == [expect], wire.received


@pytest.fixture
def stdio_server(tmp_path):
    procs = []

    def start(*extra: str) -> tuple[subprocess.Popen, Wire]:
        proc = subprocess.Popen(SERVER + list(extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=open(tmp_path / f"stderr{len(procs)}.txt", "wb"))
        procs.append(proc)

        def write(data: bytes) -> None:
            proc.stdin.write(data)
            proc.stdin.flush()

        return proc, Wire(write, lambda: proc.stdout.read1(65536))

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


@pytest.mark.parametrize("name", list(CASES))
def test_stdio_survives_a_malformed_frame(stdio_server, name):
    sent, expect, extra = CASES[name]
    proc, wire = stdio_server(*extra)
    wire.send(sent)
    initialize_and_complete(wire)
    wire.call("dg/stats")
    check_answered_once(wire, expect)
    assert proc.poll() is None
    proc.stdin.close()  # EOF ends the server
    assert proc.wait(timeout=WAIT) is not None


# --- fuzz ------------------------------------------------------------------------------------------------

_names = st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"Content-Type", b"X"])
_values = st.one_of(st.integers(0, 300).map(lambda n: b"%d" % n), st.just(b"1" * 25), st.just(b"-1"),
                    st.binary(max_size=8))
_ends = st.sampled_from([b"\r\n", b"\n", b"\r", b""])
_header = st.builds(lambda n, s1, v, s2, e: n + b":" + s1 + v + s2 + e, _names,
                    st.sampled_from([b"", b" ", b"\t"]), _values, st.sampled_from([b"", b" "]), _ends)
_bodies = st.one_of(
    st.binary(max_size=200),
    st.just(json.dumps(request("fuzz-000000", "dg/stats")).encode()),  # the id is made unique when sent
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=10).map(lambda v: json.dumps(v).encode()),
)
_framed = _bodies.map(frame)
_broken = st.tuples(st.lists(_header, max_size=3), _ends, _bodies).map(lambda p: b"".join(p[0]) + p[1] + p[2])
_messages = st.lists(st.one_of(_framed, _broken), min_size=1, max_size=4).map(b"".join)


def test_fuzzed_headers_and_bodies_never_stop_the_server(stdio_server):
    proc, wire = stdio_server()
    initialize_and_complete(wire)
    probes, fuzz_ids = itertools.count(), itertools.count(1)

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(_messages)
    def one(data: bytes) -> None:
        probe = f"probe-{next(probes)}"
        data = re.sub(rb"fuzz-000000", lambda _: b"fuzz-%06d" % next(fuzz_ids), data)  # same length
        wire.send(data + frame(request(probe, "dg/stats")))  # one write: under PIPE_BUF, read at once
        assert wire.reply(probe)["result"]["modelState"] == "ready"
        assert proc.poll() is None

    one()
    wire.call("dg/stats")
    replies = wire.replies()
    assert all(n == 1 for key, n in replies.items() if key != "null"), replies
    done = wire.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": URI}, "position": {"line": 1, "character": 4}, "context": {"triggerKind": 1}})
    assert [i["insertText"] for i in done["result"]["items"]] == ["fill_0"]


def test_framer_splits_the_same_however_the_bytes_arrive():
    data = b"".join(sent for sent, _, extra in CASES.values() if not extra) + frame(BAD)
    whole = Framer(Limits()).feed(data)
    framer = Framer(Limits())
    single = [event for byte in data for event in framer.feed(bytes([byte]))]
    assert whole == single
    assert whole[-1] == Body(BODY)
    assert Framer(Limits(max_message_bytes=100)).feed(frame(b"x" * 500) + frame(BAD))[0] == Dropped(
        "a message of 500 bytes (received 500) exceeds the limit of 100 bytes; it was skipped")


# --- TCP -------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hang_up(sock: socket.socket) -> None:
    """Close a connection (shutdown first: a bare close() does not send FIN while a thread is in recv)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TcpServer:
    def __init__(self, tmp_path: Path, *extra: str, env: dict | None = None) -> None:
        self.port = _free_port()
        self.stderr = tmp_path / f"tcp-{self.port}.txt"
        self.proc = subprocess.Popen(SERVER + ["--tcp", "--port", str(self.port), *extra],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.stderr, "wb"), env={**os.environ, **(env or {})})
        self.sockets: list[socket.socket] = []

    def connect(self) -> Wire:
        for _ in range(1200):  # wait for the listener; nothing is timed
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
                break
            except OSError:
                assert self.proc.poll() is None, self.stderr.read_text()
                time.sleep(0.05)
        else:
            raise AssertionError("the TCP server never listened")
        self.sockets.append(sock)
        wire = Wire.over_socket(sock)
        wire.sock = sock
        return wire

    def stop(self) -> None:
        for sock in self.sockets:
            hang_up(sock)
        self.proc.terminate()
        self.proc.wait(timeout=WAIT)


@pytest.fixture
def tcp_server(tmp_path):
    servers: list[TcpServer] = []

    def start(*extra: str, env: dict | None = None) -> TcpServer:
        servers.append(TcpServer(tmp_path, *extra, env=env))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_tcp_survives_malformed_frames_with_a_fresh_session_per_connection(tcp_server):
    server = tcp_server()
    for name, (sent, expect, extra) in CASES.items():
        if extra:
            continue
        wire = server.connect()
        wire.send(sent)
        initialize_and_complete(wire)  # a second initialize on the same session would be refused
        wire.call("dg/stats")
        check_answered_once(wire, expect)
        hang_up(wire.sock)
    assert server.proc.poll() is None


def test_tcp_second_client_is_refused_and_the_first_is_unaffected(tcp_server):
    server = tcp_server()
    first = server.connect()
    initialize_and_complete(first)
    second = server.connect()
    shown = second.next()
    assert shown["method"] == "window/showMessage" and "another client" in shown["params"]["message"]
    second.send(request(1, "initialize", {"processId": None, "capabilities": {}}))
    refused = second.reply(1)
    assert refused["error"]["code"] == -32600 and "one client at a time" in refused["error"]["message"]
    assert second.closed.wait(WAIT)
    stats = first.call("dg/stats")["result"]
    assert stats["documents"] == 1
    done = first.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": URI}, "position": {"line": 1, "character": 4}, "context": {"triggerKind": 1}})
    assert done["result"]["items"][0]["insertText"] == "fill_0"

    hang_up(first.sock)  # the first client leaves: the server goes on, the next client gets a fresh session
    third = server.connect()
    third.call("initialize", {"processId": None, "capabilities": {},
                              "initializationOptions": fake_options(fake={"responses": {"    ": "third"}})})
    third.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    assert third.call("dg/stats")["result"]["documents"] == 0  # none of the first client's documents
    gone = third.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": URI}, "position": {"line": 1, "character": 4}, "context": {"triggerKind": 1}})
    assert gone["result"]["items"] == []
    third.send(b"Content-Length: 5\r\n\r\n{bad}")  # an error in this session is answered in this session
    assert third.reply(None)["error"]["code"] == -32700
    assert server.proc.poll() is None


def test_tcp_exit_ends_the_session_not_the_server(tcp_server):
    server = tcp_server()
    wire = server.connect()
    initialize_and_complete(wire)
    wire.call("shutdown")
    wire.send({"jsonrpc": "2.0", "method": "exit"})
    assert wire.closed.wait(WAIT)
    assert server.proc.poll() is None
    initialize_and_complete(server.connect())


def test_tcp_refuses_a_non_loopback_host_unless_allowed(tcp_server):
    out = subprocess.run(SERVER + ["--tcp", "--host", "0.0.0.0", "--port", str(_free_port())],
                         capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 2 and "--allow-remote" in out.stderr, out
    server = tcp_server("--host", "0.0.0.0", "--allow-remote")
    initialize_and_complete(server.connect())
    assert "warning" in server.stderr.read_text()


@pytest.mark.parametrize("how", ["env", "file"])
def test_tcp_token(tcp_server, tmp_path, how):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    server = (tcp_server(env={"DG_LSP_TOKEN": "s3cret"}) if how == "env"
              else tcp_server("--token-file", str(token_file)))
    for first in (request(1, "initialize", {"processId": None, "capabilities": {},
                                            "initializationOptions": {"token": "wr\ud800ng"}}),
                  request(1, "initialize", {"processId": None, "capabilities": {}}),
                  request(1, "dg/stats")):
        wire = server.connect()
        wire.send(first)
        reply = wire.reply(1)
        assert reply["error"]["code"] == -32600 and "token" in reply["error"]["message"], reply
        assert wire.closed.wait(WAIT)
    wire = server.connect()
    initialize_and_complete(wire, {**fake_options(), "token": "s3cret"})
    assert not [m for m in wire.received if m.get("method") == "window/showMessage"]  # "token" is not an option


def test_tcp_bad_token_file_is_refused(tmp_path):
    (tmp_path / "empty").write_text("")
    for args in (["--token-file", str(tmp_path / "missing")], ["--token-file", str(tmp_path / "empty")]):
        out = subprocess.run(SERVER + ["--tcp", "--port", str(_free_port()), *args],
                             capture_output=True, text=True, timeout=WAIT)
        assert out.returncode == 2 and "--token-file" in out.stderr, out


def test_keep_loaded_reuses_the_backend_a_new_session_asks_for_again():
    made = []

    class Backend:
        loads = 0

        def load(self, progress=None):
            Backend.loads += 1

    keep = KeepLoaded(lambda options: made.append(options) or Backend())
    first, again = keep(Options()), keep(Options())
    first.load()
    again.load()
    assert first is again and len(made) == 1 and Backend.loads == 1
    other = Options()
    other.backend = "fake"
    keep(other).load()
    assert len(made) == 2 and Backend.loads == 2


async def test_a_silent_client_does_not_hold_the_slot_when_a_token_is_set():
    port = _free_port()
    host = TcpHost(build_server, token="s3cret", auth_timeout_s=0.2)
    serving = asyncio.ensure_future(host.serve("127.0.0.1", port))
    try:
        for _ in range(1200):  # wait for the listener; nothing is timed
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed without a word: it sent nothing
        writer.close()
    finally:
        serving.cancel()
