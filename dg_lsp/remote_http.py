"""HTTP for the remote backend: one JSON call, cancellable while it waits, with retries.

Standard library only (http.client), so the language server gains no HTTP dependency. The backend's
`complete` runs on the scheduler's worker thread and must notice at once when its request is superseded:
each attempt runs on a helper thread while the worker waits in short slices polling `cancel`; on cancel
(or when the attempt's time is up) the worker shuts the socket down, so the remote sees the connection
close and the helper thread's blocked read returns.

Retries: only where another attempt can help. A connection that could not be made or broke, 429 and 5xx
are retried, after an exponential back-off with jitter or the remote's `Retry-After`; any other 4xx means
the request or the token is wrong and is never retried. An attempt that connected but got no answer within
`timeout_s` is not retried either: the remote is busy, and by the time a second attempt ran out the user
has typed on.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from dg_lsp.engine.errors import EngineError, InfillCancelled

CancelCheck = Callable[[], bool]
Sleep = Callable[[float, "CancelCheck | None"], None]

POLL_S = 0.02  # how often a waiting worker looks at `cancel`: well under a keystroke's interval
RETRY_AFTER_MAX_S = 30.0  # a remote asking for a longer pause is reported, not waited for: the editor moved on


class RemoteError(EngineError):
    """The remote could not serve a request; the message names remote.url and what went wrong. (An
    `EngineError`: the server answers the completion empty and logs the message.)"""


class RemoteUnavailable(RemoteError):
    """Unreachable, timed out, or a 429/5xx answer that retries did not get past."""


class RemoteRejected(RemoteError):
    """A 4xx answer other than 429: the request, the model name or the token is wrong; retrying cannot help."""


def sleep_polling(seconds: float, cancel: CancelCheck | None = None) -> None:
    """Sleep `seconds`, raising `InfillCancelled` as soon as `cancel()` says so."""
    deadline = time.monotonic() + seconds
    pause = threading.Event()
    while (left := deadline - time.monotonic()) > 0:
        if cancel is not None and cancel():
            raise InfillCancelled("cancelled while backing off before a retry")
        pause.wait(min(POLL_S, left))


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_text(body: bytes) -> str:
    """The message of an error body: ours `{"error": {"code", "message"}}`, OpenAI/vLLM `{"error": {"message"}}`
    or `{"message"}`, FastAPI `{"detail"}`; otherwise the start of the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty body)"
    if isinstance(data, dict):
        inner = data.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            code = inner.get("code")
            return f"{code}: {inner['message']}" if isinstance(code, str) and code else str(inner["message"])
        for key in ("message", "detail", "error"):
            if data.get(key):
                return str(data[key])[:300]
    return text[:300]


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class _ConnectFailed(Exception):
    """No answer came back over a connection: refused, reset, closed early; retryable."""


class _TimedOut(Exception):
    """Connected, but no whole answer within the attempt's time."""


@dataclass
class HttpClient:
    """JSON over HTTP to `url` (validated by the caller: http(s), a host, no query or fragment)."""

    url: str
    token: str | None = field(default=None, repr=False)  # never logged
    timeout_s: float = 10.0  # per attempt
    retries: int = 2  # attempts after the first
    sleep: Sleep = sleep_polling  # injectable: tests record the back-off instead of sleeping
    rng: random.Random = field(default_factory=random.Random)
    backoff_s: float = 0.25  # first back-off; doubles per attempt
    backoff_max_s: float = 4.0

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")  # a server mounted under a path: http://host/dg
        self.where = f"remote.url {self.url}"

    def backoff(self, attempt: int) -> float:
        """Exponential back-off with "equal jitter": half the step for sure, the other half random, so
        clients that failed together do not come back together."""
        step = min(self.backoff_max_s, self.backoff_s * 2 ** attempt)
        return step / 2 + self.rng.uniform(0, step / 2)

    def call(self, method: str, path: str, payload: Any = None, cancel: CancelCheck | None = None) -> Any:
        """The JSON body of a 2xx answer to `method path`; raises `RemoteUnavailable`, `RemoteRejected`,
        `RemoteError` (a 2xx body that is not JSON) or `InfillCancelled`."""
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        what = f"{method} {path}"
        for attempt in range(self.retries + 1):
            if cancel is not None and cancel():  # superseded while queued or backing off: send nothing
                raise InfillCancelled("superseded before the request was sent")
            try:
                reply = self._attempt(method, path, body, cancel)
            except _ConnectFailed as exc:
                error, delay = RemoteUnavailable(f"{self.where} is unreachable ({what}: {exc})"), self.backoff(attempt)
            except _TimedOut:
                raise RemoteUnavailable(f"{self.where} did not answer {what} within {self.timeout_s * 1000:.0f} ms "
                                        "(remote.timeoutMs)") from None
            else:
                if 200 <= reply.status < 300:
                    try:
                        return json.loads(reply.body)
                    except ValueError:
                        raise RemoteError(f"{self.where} answered {what} with a body that is not JSON: "
                                          f"{error_text(reply.body)}") from None
                message = f"{self.where} answered {what} with {reply.status}: {error_text(reply.body)}"
                if reply.status != 429 and reply.status < 500:
                    raise RemoteRejected(message)
                error = RemoteUnavailable(message)
                asked = retry_after_s(reply.headers.get("Retry-After"))
                delay = self.backoff(attempt) if asked is None else asked
                if delay > RETRY_AFTER_MAX_S:
                    raise RemoteUnavailable(f"{message} (it asks to retry after {delay:.0f} s)")
            if attempt == self.retries:
                raise error
            self.sleep(delay, cancel)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=self.timeout_s)

    def _headers(self, body: bytes | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "dg-lsp"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _attempt(self, method: str, path: str, body: bytes | None, cancel: CancelCheck | None) -> _Reply:
        """One request on a helper thread; this thread waits in slices, polling `cancel` and the deadline."""
        conn = self._connection()
        outcome: dict[str, Any] = {"stage": "connect"}
        done, abandoned = threading.Event(), threading.Event()

        def run() -> None:
            try:
                conn.connect()
                if abandoned.is_set():  # the waiter gave up while we connected: send nothing
                    conn.close()
                    return
                outcome["stage"] = "wait"
                conn.request(method, self._prefix + path, body=body, headers=self._headers(body))
                answer = conn.getresponse()
                outcome["reply"] = _Reply(answer.status, answer.headers, answer.read())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=run, name="dg-lsp-remote-http", daemon=True).start()
        deadline = time.monotonic() + self.timeout_s
        try:
            while not done.wait(POLL_S):
                if cancel is not None and cancel():
                    raise InfillCancelled("superseded while waiting for the remote")
                if time.monotonic() > deadline:
                    if outcome["stage"] == "connect":
                        raise _ConnectFailed(f"no connection within {self.timeout_s * 1000:.0f} ms")
                    raise _TimedOut()
        finally:
            if not done.is_set():
                abandoned.set()
                _shut(conn)
            conn.close()
        if "reply" in outcome:
            return outcome["reply"]
        error = outcome.get("error")
        if isinstance(error, (socket.timeout, TimeoutError)) and outcome["stage"] == "wait":
            raise _TimedOut()
        if isinstance(error, ssl.SSLCertVerificationError):  # a configuration problem: retrying cannot help
            raise RemoteRejected(f"{self.where}: the TLS certificate was not accepted ({error.verify_message})")
        if isinstance(error, (OSError, http.client.HTTPException)):
            raise _ConnectFailed(_reason(error))
        raise RemoteError(f"{self.where}: {type(error).__name__}: {error}")


def _shut(conn: http.client.HTTPConnection) -> None:
    """End a connection another thread is blocked on: its read returns, the remote sees the close."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the other side


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"host not found ({error.strerror or error})"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the remote closed the connection without answering"
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text
