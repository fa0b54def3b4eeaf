"""Work-done progress of one inline completion: the raw text so far after each canvas of a long block, as
`$/progress` report messages, so an editor can show that a completion is still being written.

Two ways to get a token: the inlineCompletion request carries the client's `workDoneToken` (begin at
once, a report per canvas, end with the reply); or the client declared the experimental capability
`dgCompletionProgress` (with `window.workDoneProgress`), for editors that cannot put a token on their
inline requests (Neovim's `vim.lsp.inline_completion`). Then the server creates a token only once a block
goes on past a canvas, so that short completions cost no messages: create, begin, the text so far, a
report per further canvas, end.
"""

from __future__ import annotations

import asyncio
import logging

from lsprotocol import types
from pygls.progress import Progress

log = logging.getLogger(__name__)

TITLE = "dg-lsp: completing"
CAPABILITY = "dgCompletionProgress"  # in the client's `capabilities.experimental`


class CompletionProgress:
    """Progress of one completion, driven on the event loop: `partial` after each canvas, `end` once."""

    def __init__(self, progress: Progress, token: types.ProgressToken | None = None, create: str | None = None):
        self._progress = progress
        self._token = token  # the token reports go to, once the client has it
        self._create_name = create  # the token to create (no client token)
        self._creating: asyncio.Task | None = None
        self._latest: str | None = None
        self._ended = False
        if token is not None:
            self._begin()

    def _begin(self) -> None:
        self._progress.begin(self._token, types.WorkDoneProgressBegin(title=TITLE, cancellable=False))

    def partial(self, text: str, more: bool) -> None:
        """The text so far; `more`: the block goes on (its stop rule has not ended it)."""
        if self._ended:
            return
        self._latest = text
        if self._token is not None:
            self._progress.report(self._token, types.WorkDoneProgressReport(message=text))
        elif more and self._create_name is not None and self._creating is None:
            self._creating = asyncio.ensure_future(self._create(self._create_name))

    async def _create(self, name: str) -> None:
        try:
            await self._progress.create_async(name)
        except Exception:  # noqa: BLE001 - progress is a courtesy; the completion goes on
            log.exception("work done progress create failed")
            return
        self._token = name
        self._begin()
        if self._latest is not None:
            self._progress.report(name, types.WorkDoneProgressReport(message=self._latest))
        if self._ended:  # the completion finished while the client created the token: a client that
            self._finish()  # holds a token waits for its end

    def end(self) -> None:
        """The completion is answered (or failed, or was cancelled)."""
        if not self._ended:
            self._ended = True
            if self._token is not None:
                self._finish()

    def _finish(self) -> None:
        self._progress.end(self._token, types.WorkDoneProgressEnd())
        self._progress.tokens.pop(self._token, None)  # pygls keeps one future per token until told


def asks_for_progress(experimental: object) -> bool:
    """Whether the client's `capabilities.experimental` asks for progress without tokens of its own."""
    value = experimental.get(CAPABILITY) if isinstance(experimental, dict) else getattr(experimental, CAPABILITY, None)
    return value is True
