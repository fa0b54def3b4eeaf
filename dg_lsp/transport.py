"""Bytes on the wire -> JSON-RPC messages, for stdio and TCP (`dg_lsp/tcp.py`).

pygls keeps the protocol and the dispatch; only the byte stream -> message layer is ours, because pygls'
reader (`pygls.io_.run_async`, 2.1.1) has no extension point for it and gets framing wrong:

- It accepts only the exact line `Content-Length: <digits>\\r\\n` (regex `^Content-Length: (\\d+)\\r\\n$`).
  `content-length` in lower case (header names are case-insensitive), a trailing space, `:58` without a
  space, or `\\n` line ends are not recognised. The header block then ends without a length, the body is
  never read, and as a body has no line end it is glued to the next header line, which therefore never
  matches either: one malformed header leaves the server alive but deaf for good.
- A length that does not match the body desynchronises it the same way (too short: the rest of the body
  is glued to the next header; too long: the next message is swallowed). Nothing resynchronises.
- The length is unbounded: `Content-Length: 1000000000000000` ends the process with MemoryError, and
  `100000000000000000000` with OverflowError (from the read of that many bytes).
- A body that is not JSON is logged and dropped; JSON-RPC asks for a -32700 Parse error reply (id null).

Here (`Framer`, pure and fed bytes): header names in any case, spaces around values, `\\r\\n` or `\\n`;
lines that are not headers are skipped (logged) until the next `Content-Length` header, found anywhere in
a line; a header line longer than `max_header_bytes` is skipped; a body over `max_message_bytes` is
skipped without being kept, answered with -32600 (id null). A declared body that contains the start of a
new header (`Content-Length: N` then a line end, which valid JSON cannot contain) ends there; a header
block without a usable length takes the JSON value that follows as its body. `Channel` parses bodies
(-32700 on failure) and hands messages to the pygls protocol. `run_stdio` and `tcp.TcpHost` drive it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable

from lsprotocol import types

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
CHUNK = 65536
_TAIL = 64  # bytes kept when a long run is thrown away, so a header cut in two is still found
_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*([^ \t]*)[ \t]*$", re.IGNORECASE)
_NEXT_HEADER = re.compile(rb"content-length[ \t]*:[ \t]*\d+[ \t]*\r?\n", re.IGNORECASE)
_HEADER = re.compile(rb"[!-9;-~]+[ \t]*:.*")  # a token, a colon, a value
_DECODER = json.JSONDecoder()
_UNFRAMED_MAX = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 8192  # one header line


@dataclass(frozen=True)
class Body:
    data: bytes
    lenient: bool = False  # the framing did not hold: parse the first JSON value and ignore the rest


@dataclass(frozen=True)
class Dropped:
    reason: str  # a body that was not kept; answered with an error, id null


def _short(data: bytes) -> str:
    return repr(bytes(data[:60])) + ("..." if len(data) > 60 else "")


class Framer:
    """Splits a byte stream into bodies. `feed` never raises and keeps at most ~max_message_bytes."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._body = False  # reading a body (else header lines)
        self._want: int | None = None  # the body's declared length; None: the JSON value that follows
        self._length: int | None = None  # Content-Length of the header block being read
        self._in_block = False  # a header line was seen since the last body
        self._scanned = 0  # body bytes already searched for a new header
        self._dropped = 0  # body bytes thrown away (over the limit)
        self._long_line = False

    def feed(self, data: bytes) -> list[Body | Dropped]:
        self._buf += data
        events: list[Body | Dropped] = []
        while self._step_body(events) if self._body else self._step_header():
            pass
        return events

    # --- headers ----------------------------------------------------------------------------------------
    def _step_header(self) -> bool:
        end = self._buf.find(b"\n")
        limit = self.limits.max_header_bytes
        if end < 0 or end > limit:
            if len(self._buf) > limit:
                if not self._long_line:
                    log.warning("skipping a header line longer than %d bytes: %s", limit, _short(self._buf))
                self._long_line = True
                self._reset_block()
                cut = (end if end >= 0 else len(self._buf)) - _TAIL
                del self._buf[:cut]
                return end >= 0
            return False
        line = bytes(self._buf[:end]).rstrip(b"\r")
        del self._buf[:end + 1]
        was_long, self._long_line = self._long_line, False
        self._header_line(line, was_long)
        return True

    def _header_line(self, line: bytes, was_long: bool) -> None:
        match = _LENGTH.search(line)
        if match:
            if line[:match.start()].strip() and not was_long:
                log.warning("resynchronised: skipped %d bytes before a Content-Length header: %s",
                            match.start(), _short(line))
            value = match.group(1)
            self._in_block = True
            if value.isdigit():
                self._length = int(value) if len(value) <= 30 else 10 ** 30
            else:
                log.warning("Content-Length %s is not a number; the body is taken as the JSON value "
                            "that follows", _short(value))
                self._length = None
            return
        if not line.strip():
            if self._length is not None:
                self._start_body(self._length)
            elif self._in_block:
                log.warning("a header block without a usable Content-Length; the body is taken as the "
                            "JSON value that follows")
                self._start_body(None)
            return  # a blank line between messages
        if _HEADER.fullmatch(line):
            self._in_block = True  # Content-Type or another header: not needed
            return
        if not was_long:
            log.warning("skipped a line that is not a header: %s", _short(line))
        self._reset_block()

    def _reset_block(self) -> None:
        self._length, self._in_block = None, False

    def _start_body(self, want: int | None) -> None:
        if want is not None and want > self.limits.max_message_bytes:
            log.warning("Content-Length %d exceeds the limit of %d bytes (--max-message-bytes); that body is "
                        "skipped (unless a new header begins inside it)", want, self.limits.max_message_bytes)
        self._reset_block()
        self._body, self._want, self._scanned, self._dropped = True, want, 0, 0

    # --- bodies -----------------------------------------------------------------------------------------
    def _step_body(self, events: list) -> bool:
        buf, want = self._buf, self._want
        room = len(buf) if want is None else min(len(buf), want - self._dropped)
        found = _NEXT_HEADER.search(buf, max(0, self._scanned - _TAIL))
        if found and found.start() >= room:
            found = None  # a header after the declared body: the next message
        if want is None and self._dropped == 0:
            end = _json_end(buf, found.start() if found else len(buf))
            if end is not None:
                return self._end_body(events, end, lenient=False)
        if found:
            if want is not None:
                log.warning("Content-Length said %d bytes, but a new header began after %d; the body ends there",
                            want, self._dropped + found.start())
            return self._end_body(events, found.start(), lenient=True)
        self._scanned = room
        if want is not None and self._dropped + len(buf) >= want:
            return self._end_body(events, want - self._dropped, lenient=False)
        if len(buf) > self.limits.max_message_bytes:
            drop = len(buf) - _TAIL
            del buf[:drop]
            self._dropped += drop
            self._scanned -= drop
        return False

    def _end_body(self, events: list, end: int, lenient: bool) -> bool:
        data = bytes(self._buf[:end])
        del self._buf[:end]
        if self._dropped or end > self.limits.max_message_bytes:
            size = "unknown" if self._want is None else self._want
            events.append(Dropped(f"a message of {size} bytes (received {self._dropped + end}) exceeds the limit "
                                  f"of {self.limits.max_message_bytes} bytes; it was skipped"))
        else:
            events.append(Body(data, lenient))
        self._body, self._want = False, None
        return True


def _json_end(buf: bytearray, stop: int) -> int | None:
    """Where the JSON value at the start of buf[:stop] ends (bytes), or None if there is none yet.

    Tried only on up to _UNFRAMED_MAX bytes (each try decodes them all); a longer body without a usable
    Content-Length ends at the next header instead."""
    if stop > _UNFRAMED_MAX:
        return None
    end = stop
    while end and buf[end - 1] in b" \t\r\n":
        end -= 1
    if not end or buf[end - 1] not in b"}]":
        return None  # cheap: a message can only have ended where an object or array closes
    text = bytes(buf[:end]).decode("utf-8", "surrogateescape")
    try:
        _, end = _DECODER.raw_decode(text, len(text) - len(text.lstrip()))
    except (ValueError, RecursionError):
        return None
    return len(text[:end].encode("utf-8", "surrogateescape"))


class ParseError(Exception):
    pass


def parse_body(body: Body) -> Any:
    try:
        text = body.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"the body is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        if not body.lenient:
            return json.loads(text)
        value, end = _DECODER.raw_decode(text, len(text) - len(text.lstrip()))
        if text[end:].strip():
            log.warning("ignored %d characters after the JSON value of a body", len(text[end:].strip()))
        return value
    except json.JSONDecodeError as exc:
        raise ParseError(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ParseError("the body nests JSON too deeply") from exc


Admit = Callable[[Any], "str | None"]


class Channel:
    """One connection's input: bytes -> framed bodies -> parsed -> the pygls protocol.

    `admit` (optional) sees the first parsed message before the protocol does and returns why it is refused
    (then the message is answered with an error and `feed` returns False: close the connection)."""

    def __init__(self, protocol, limits: Limits = Limits(), admit: Admit | None = None) -> None:
        self.protocol = protocol
        self.framer = Framer(limits)
        self.admit = admit

    def feed(self, data: bytes) -> bool:
        for event in self.framer.feed(data):
            if not self._deliver(event):
                return False
        return True

    def _deliver(self, event: Body | Dropped) -> bool:
        if isinstance(event, Dropped):
            log.warning("%s", event.reason)
            self._error(None, INVALID_REQUEST, event.reason)
            return self.admit is None
        try:
            value = parse_body(event)
        except ParseError as exc:
            log.warning("parse error: %s", exc)
            self._error(None, PARSE_ERROR, f"Parse error: {exc}")
            return self.admit is None
        if self.admit is not None:
            refused = self.admit(value)
            if refused is not None:
                log.warning("refused a client: %s", refused)
                self._error(request_id(value), INVALID_REQUEST, f"dg-lsp: {refused}")
                return False
            self.admit = None
        try:
            message = self.protocol.structure_message(value) if isinstance(value, dict) else value
            self.protocol.handle_message(message)
        except (SystemExit, KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad message must not end the connection
            log.exception("could not handle a message")
            self.protocol._server._report_server_error(exc, type(exc))
        return True

    def _error(self, msg_id: Any, code: int, message: str) -> None:
        error = types.ResponseError(code=code, message=message)
        reply = getattr(self.protocol, "reply_error", None)
        if reply is not None:
            reply(msg_id, error)
        else:
            self.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})


def request_id(value: Any) -> int | str | None:
    msg_id = value.get("id") if isinstance(value, dict) else None
    return msg_id if isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool) else None


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


# --- stdio -----------------------------------------------------------------------------------------------

def run_stdio(server, limits: Limits = Limits(), stdin=None, stdout=None) -> None:
    """pygls' `start_io` with our reader: returns at EOF; `exit` raises SystemExit as in pygls."""
    from pygls.io_ import StdoutWriter

    server._stop_event = threading.Event()  # pygls' shutdown() sets it
    server.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
    try:
        asyncio.run(_pump_stdio(server, stdin or sys.stdin.buffer, limits))
    except BrokenPipeError:
        log.error("the client closed its end of the pipe; stopping")
    finally:
        server.shutdown()


async def _pump_stdio(server, stdin, limits: Limits) -> None:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
    read = getattr(stdin, "read1", stdin.read)

    def reader() -> None:  # a daemon thread: a blocked read never holds the process at exit
        while True:
            try:
                data = read(CHUNK)
            except (OSError, ValueError):
                data = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
            except RuntimeError:  # the loop has ended
                return
            if not data:
                return

    threading.Thread(target=reader, name="dg-lsp-stdin", daemon=True).start()
    channel = Channel(server.protocol, limits)
    while not server._stop_event.is_set():
        data = await chunks.get()
        if not data:
            return
        channel.feed(data)
