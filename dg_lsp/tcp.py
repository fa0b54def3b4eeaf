"""`dg-lsp --tcp`: one client at a time, each in a fresh session; loopback unless told; an optional token.

pygls' `start_tcp` shares one protocol (documents, options, writer) among all connections, points replies
at whichever socket connected last, and calls `shutdown()` (closing the listener, so the process exits)
when any connection ends (related upstream: openlawlibrary/pygls#219 asks for a protocol per connection).
`TcpHost` instead gives each connection a new server from `make_session()`, reads it with our
`transport.Channel`, refuses a second concurrent client, and keeps listening when a client leaves.
`KeepLoaded` lets the next session reuse the model the previous one loaded. docs/lsp.md tells the choice.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from lsprotocol import types

from dg_lsp.transport import (CHUNK, INVALID_REQUEST, Admit, Body, Channel, Framer, Limits, ParseError, frame,
                              parse_body, request_id)

log = logging.getLogger(__name__)

TOKEN_ENV = "DG_LSP_TOKEN"


def check_host(host: str, allow_remote: bool) -> str | None:
    """Why binding `host` is refused (None: it may be bound). Non-loopback needs --allow-remote."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        return f"cannot resolve --host {host!r}: {exc}"
    remote = sorted({info[4][0] for info in infos if not ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback})
    if not remote:
        return None
    if not allow_remote:
        return (f"--host {host} would accept connections from other machines ({', '.join(remote)}); "
                f"pass --allow-remote to do that (and consider --token-file)")
    print(f"dg-lsp: warning: listening on {host} ({', '.join(remote)}): any machine that can reach this port "
          f"can use the model and read the documents sent to it", file=sys.stderr)
    return None


def tcp_setup(host: str, allow_remote: bool, token_file: str | None) -> tuple[str | None, str | None]:
    """(token, problem): the TCP token from --token-file or DG_LSP_TOKEN, and why serving is refused."""
    if (problem := check_host(host, allow_remote)) is not None:
        return None, problem
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"cannot read --token-file {token_file}: {getattr(exc, 'strerror', None) or exc}"
        if not token:
            return None, f"--token-file {token_file} is empty"
        return token, None
    return os.environ.get(TOKEN_ENV) or None, None


def token_gate(token: str) -> Admit:
    """The first message must be `initialize` with initializationOptions.token equal to `token`."""
    expected = token.encode()

    def admit(value: Any) -> str | None:
        if not isinstance(value, dict) or value.get("method") != types.INITIALIZE or request_id(value) is None:
            return "this server needs a token: the first message must be the initialize request"
        params = value.get("params")
        options = params.get("initializationOptions") if isinstance(params, dict) else None
        given = options.pop("token", None) if isinstance(options, dict) else None
        if not isinstance(given, str) or not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected):
            return "wrong or missing token (initializationOptions.token)"
        return None

    return admit


class _Discard:
    """The writer of a session whose client has gone: late replies go nowhere."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class TcpHost:
    """Serves one client at a time, each in a fresh session from `make_session()`; a second concurrent
    client is told so and closed. A client that leaves ends its session, never the listener."""

    def __init__(self, make_session: Callable[[], Any], limits: Limits = Limits(), token: str | None = None,
                 refuse_wait_s: float = 5.0, reconnect_grace_s: float = 3.0, auth_timeout_s: float = 10.0) -> None:
        self.make_session = make_session
        self.limits = limits
        self.token = token
        self.refuse_wait_s = refuse_wait_s  # how long a refused client may take to send a request to answer
        self.reconnect_grace_s = reconnect_grace_s  # a second client waits this long for the first to leave
        self.auth_timeout_s = auth_timeout_s  # with a token: how long a client may take to send initialize
        self._busy = False
        self._lock: asyncio.Lock | None = None
        self._free: asyncio.Event | None = None

    def run(self, host: str, port: int) -> None:
        asyncio.run(self.serve(host, port))

    async def serve(self, host: str, port: int) -> None:
        self._lock, self._free = asyncio.Lock(), asyncio.Event()
        self._free.set()
        listener = await asyncio.start_server(self._connection, host, port)
        log.info("listening on %s", ", ".join(str(s.getsockname()) for s in listener.sockets))
        async with listener:
            await listener.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while self._busy:  # a client that reconnects at once may be ahead of the old connection's EOF
            try:
                await asyncio.wait_for(self._free.wait(), self.reconnect_grace_s)
            except asyncio.TimeoutError:
                await self._refuse(reader, writer)
                return
        self._busy = True
        self._free.clear()
        async with self._lock:  # the previous session may still be cleaning up
            try:
                session = self.make_session()
            except Exception:
                self._busy = False
                self._free.set()
                log.exception("could not start a session")
                writer.close()
                return
            try:
                await self._run_session(session, reader, writer)
            finally:
                self._busy = False
                self._free.set()
                session.protocol.set_writer(_Discard())
                writer.close()
                await self._end_session(session)

    async def _run_session(self, session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log.info("client connected: %s", writer.get_extra_info("peername"))
        session.protocol.set_writer(writer)
        channel = Channel(session.protocol, self.limits, token_gate(self.token) if self.token else None)
        try:
            while True:  # until authenticated, a silent client may not hold the one slot for long
                timeout = self.auth_timeout_s if channel.admit is not None else None
                data = await asyncio.wait_for(reader.read(CHUNK), timeout)
                if not data or not channel.feed(data):
                    break
            await writer.drain()
        except SystemExit:
            log.info("the client sent exit; its session ends, the server keeps listening")
        except asyncio.TimeoutError:
            log.warning("no initialize with the token within %s s; closing the connection", self.auth_timeout_s)
        except (ConnectionError, OSError) as exc:
            log.info("client connection lost: %s", exc)
        log.info("client disconnected")

    @staticmethod
    async def _end_session(session) -> None:
        scheduler = getattr(session, "scheduler", None)
        if scheduler is not None:
            await asyncio.to_thread(scheduler.stop, 5.0)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        why = "another client is connected to this server (one client at a time); closing this connection"
        log.warning("refused a second client %s: %s", writer.get_extra_info("peername"), why)
        try:
            writer.write(frame({"jsonrpc": "2.0", "method": types.WINDOW_SHOW_MESSAGE,
                                "params": {"type": 1, "message": f"dg-lsp: {why}"}}))
            framer = Framer(self.limits)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.refuse_wait_s
            answered = False
            while not answered and (left := deadline - loop.time()) > 0:
                data = await asyncio.wait_for(reader.read(CHUNK), left)
                if not data:
                    break
                for event in framer.feed(data):
                    value = parse_body(event) if isinstance(event, Body) else None
                    if (msg_id := request_id(value)) is not None and "method" in value:
                        writer.write(frame({"jsonrpc": "2.0", "id": msg_id,
                                            "error": {"code": INVALID_REQUEST, "message": f"dg-lsp: {why}"}}))
                        answered = True
                        break
            await writer.drain()
        except (asyncio.TimeoutError, ParseError, ConnectionError, OSError):
            pass
        finally:
            writer.close()


class KeepLoaded:
    """A backend factory for TCP sessions: a new session that asks for the backend already loaded gets it
    back without loading again (the old session's worker has stopped by then)."""

    def __init__(self, factory: Callable[[Any], Any]) -> None:
        self.factory = factory
        self._key: tuple | None = None
        self._backend: _LoadOnce | None = None

    def __call__(self, options) -> "_LoadOnce":
        key = options.backend_key()
        if self._backend is None or key != self._key:
            self._key, self._backend = key, _LoadOnce(self.factory(options))
        return self._backend


class _LoadOnce:
    def __init__(self, backend) -> None:
        self.backend = backend
        self.loaded = False

    def load(self, progress=None) -> None:
        if not self.loaded:
            self.backend.load(progress)
            self.loaded = True
        elif progress is not None:
            progress("model already loaded", 1, 1)

    def complete(self, request, sampler, cancel=None, seed: int = 0, **continuation):
        return self.backend.complete(request, sampler, cancel=cancel, seed=seed, **continuation)

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def context_limit(self) -> int | None:
        return self.backend.context_limit()

    def describe(self) -> dict:
        return self.backend.describe()
