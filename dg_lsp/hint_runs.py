"""Confidence hints over time: which lines an edit left unscored, the scoring run once the edits settle, and
the hint diagnostics published per document. What a hint is and how it is found: dg_lsp.hints.

Scoring is a low-priority job on the server's scheduler (lane ("hints", uri)): a newer edit of the same
document supersedes it, and any completion runs first. Results for a document that changed meanwhile are
dropped; the edited lines stay pending and the next scoring covers them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from lsprotocol import types

from dg_lsp import hints
from dg_lsp.engine.request import InfillRequest
from dg_lsp.scheduler import Cancelled, Job, Superseded
from dg_lsp.text import Document

if TYPE_CHECKING:
    from dg_lsp.server import DgServer

log = logging.getLogger(__name__)


class HintRuns:
    def __init__(self, server: "DgServer") -> None:
        self.server = server
        self.published: dict[str, list[types.Diagnostic]] = {}  # uri -> hints published
        self.pending: dict[str, tuple[int, int]] = {}  # uri -> edited lines not scored yet (first, last)
        self.tasks: dict[str, asyncio.Future] = {}  # uri -> its latest scoring, held until it ends

    def edited(self, uri: str, doc: Document, changes: list[tuple[int, int, str] | None]) -> None:
        """After a didChange: drop the hints the edit touched and (hints on) score its lines once the edits
        settle. `changes`: each change's (start line, end line, new text), None for the whole text."""
        first, last, shifted = hints.edited_lines(changes, doc.line_count)
        old = self.published.get(uri, [])
        kept = hints.keep_after_edit(old, first, last, shifted)
        if len(kept) != len(old):
            self.publish(uri, kept)
        options = self.server.options.hints
        if not options.enable or len(doc.text) > options.max_file_chars:
            self.pending.pop(uri, None)
            return
        if uri in self.pending and not shifted:
            a, b = self.pending[uri]
            first, last = min(a, first), max(b, last)
        self.pending[uri] = (first, min(last, doc.line_count - 1))
        self.tasks[uri] = asyncio.ensure_future(self.score(uri))

    async def score(self, uri: str) -> None:
        """Score the pending lines on the worker, then publish the hints they earn beside the kept ones."""
        server = self.server
        doc, lines, options = server.documents.get(uri), self.pending.get(uri), server.options
        if doc is None or lines is None:
            return
        win = hints.window(doc, *lines, options.context)
        if win.start == win.end:
            return
        text = win.text
        request = InfillRequest.rewrite(text[:win.start], text[win.start:win.end], text[win.end:], 1)
        job = Job(lane=("hints", uri), request=request, sampler=options.sampler_config(),
                  call=lambda backend, _req, _cancel: backend.score(text, win.start, win.end), low_priority=True,
                  not_before=time.monotonic() + options.hints.debounce_ms / 1000.0)
        server.scheduler.submit(job)
        try:
            scores = await asyncio.wrap_future(job.future)
        except (Superseded, Cancelled):
            return
        except Exception as exc:  # noqa: BLE001 - hints are best effort (e.g. a model that cannot score)
            log.info("no confidence hints: %s", exc)
            return
        current = server.documents.get(uri)
        if current is None or current.version != doc.version or not server.options.hints.enable:
            return
        self.pending.pop(uri, None)
        fresh = hints.diagnostics(doc, win, scores, server.options.hints)
        kept = hints.keep_after_edit(self.published.get(uri, []), lines[0], lines[1], False)
        self.publish(uri, kept + fresh)

    def publish(self, uri: str, diagnostics: list[types.Diagnostic]) -> None:
        self.published[uri] = diagnostics
        doc = self.server.documents.get(uri)
        self.server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, diagnostics=diagnostics, version=doc.version if doc is not None else None))

    def clear_all(self) -> None:
        """Hints were turned off: withdraw every published one."""
        for uri in [u for u, diagnostics in self.published.items() if diagnostics]:
            self.publish(uri, [])

    def closed(self, uri: str) -> None:
        """The document closed: forget its hints and pending lines (its scoring, if any, finds no document)."""
        self.published.pop(uri, None)
        self.pending.pop(uri, None)
        self.tasks.pop(uri, None)
