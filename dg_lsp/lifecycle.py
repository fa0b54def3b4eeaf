"""How the server process ends: the same orderly stop from every state, and the exit code it reports.

`serve()` wraps its transport in `Lifecycle(server).run(start)`. However the server is told to end (EOF on
its input, the `exit` notification, SIGTERM or SIGINT), including while a denoising step runs:

1. the scheduler cancels the running job (it stops at its next denoising step) and every queued one;
2. requests still running are answered `RequestCancelled` (within `answer_timeout`);
3. the worker thread is joined within `join_timeout`;
4. the process exits with `exit_code`: 0 after `shutdown`, else 1; 128 + signal number after a signal.

Why the worker must be joined: at EOF `serve()` used to return while the (daemon) worker was still inside
a torch op, and the interpreter's finalisation tore down torch's native thread state under it: the process
aborted ("terminate called without an active exception", SIGABRT). After `exit` or a signal the process
ends with `os._exit` once steps 1-3 are done and the output is flushed, because the transport may still be
blocked reading its input (pygls' reader joins that thread at exit); the same hard exit covers a worker
that did not stop in time (e.g. inside a model load), so finalisation never runs beside it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Callable

from lsprotocol import types

if TYPE_CHECKING:
    from dg_lsp.server import DgServer

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(shutdown_received: bool, signum: int | None = None) -> int:
    """The code the process exits with: the LSP rule for `exit` (and EOF), or the shell's 128 + n."""
    if signum is not None:
        return 128 + signum
    return 0 if shutdown_received else 1


class Lifecycle:
    """Runs the transport and ends the process in order; one per process, created by `serve()`."""

    def __init__(self, server: "DgServer", answer_timeout: float = 2.0, join_timeout: float = 5.0) -> None:
        self.server = server
        self.answer_timeout = answer_timeout  # bounds, not expectations: a step normally ends far sooner
        self.join_timeout = join_timeout
        self._code: int | None = None  # set once a stop has begun
        self._sessions: weakref.WeakSet = weakref.WeakSet()  # TCP clients' servers (see `watch`)

        @server.feature(types.EXIT)
        async def on_exit(ls: "DgServer", params: None) -> None:
            """pygls would call sys.exit next, which ends the loop without the code; this never returns."""
            await self._stop(exit_code(self._shutdown_received()))

    # --- entry point -----------------------------------------------------------------------------------
    def run(self, start: Callable[[], None]) -> int:
        """Run the transport (`start` returns at EOF or when the connection ends) and return the exit code."""
        previous = self._install_signal_handlers()
        try:
            start()
        except (KeyboardInterrupt, SystemExit):  # pygls' own exit path; the code is decided here
            pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        code = self._code if self._code is not None else exit_code(self._shutdown_received())
        if not self.server.scheduler.stop(timeout=self.join_timeout):
            self._hard_exit(code, "the worker did not stop in time")
        return code

    def watch(self, session: "DgServer") -> "DgServer":
        """Stop `session` too (a TCP client's own server) when a signal ends the process. Its `exit` is left
        to the transport: over TCP it ends that client's session, not the server."""
        self._sessions.add(session)
        return session

    # --- ways to end -----------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame) -> None:  # main thread, between two bytecodes of the loop
        code = exit_code(self._shutdown_received(), signum)
        if self._code is not None:  # a second signal while stopping: stop waiting
            self._hard_exit(self._code, f"signal {signum} again")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or loop.is_closed():
            self._code = code
            for server in self._servers():
                server.scheduler.stop(timeout=self.join_timeout)
            self._hard_exit(code, f"signal {signum}")
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._stop(code)))

    async def _stop(self, code: int) -> None:
        if self._code is not None:
            return
        self._code = code
        # Like `shutdown`, cancel the handlers still running: pygls answers each with RequestCancelled and
        # each cancels its job; then end the worker (the running job stops at its next step) and join it.
        servers = self._servers()
        waiting = [f for server in servers for f in server.protocol._request_futures.values()
                   if isinstance(f, asyncio.Future) and not f.done() and f is not asyncio.current_task()]
        for future in waiting:
            future.cancel()
        if waiting:
            await asyncio.wait(waiting, timeout=self.answer_timeout)
        stopped = [await asyncio.to_thread(server.scheduler.stop, self.join_timeout) for server in servers]
        self._hard_exit(code, "exit" if all(stopped) else "exit; a worker did not stop in time")

    # --- helpers ---------------------------------------------------------------------------------------
    def _servers(self) -> list["DgServer"]:
        return [self.server, *self._sessions]

    def _shutdown_received(self) -> bool:
        return bool(getattr(self.server.protocol, "_shutdown", False))

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {signum: signal.signal(signum, self._on_signal) for signum in SIGNALS}

    @staticmethod
    def _hard_exit(code: int, why: str) -> None:
        log.info("exiting with %d (%s)", code, why)
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or the client went away
                pass
        os._exit(code)
