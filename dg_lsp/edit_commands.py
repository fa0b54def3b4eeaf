"""The edit commands (rewrite selection, fill holes): plan the canvas, run it, turn the result into a
`WorkspaceEdit`, and apply it when the client can."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcException, JsonRpcInvalidParams

from dg_lsp import convert
from dg_lsp.edits import EditError, plan_edits, plan_holes, plan_rewrite
from dg_lsp.engine.errors import EngineError
from dg_lsp.text import Position

if TYPE_CHECKING:
    from dg_lsp.server import DgServer

log = logging.getLogger(__name__)
REQUEST_FAILED = -32803


class RequestFailed(JsonRpcException):
    CODE = REQUEST_FAILED
    MESSAGE = "Request Failed"


async def compute_edit(ls: DgServer, kind: str, uri: str, rng: types.Range | None) -> types.WorkspaceEdit:
    doc = ls.documents.get(uri)
    if doc is None:
        raise JsonRpcInvalidParams(f"unknown document {uri!r}: expected the uri of an open document")
    options, limit = ls.options, ls.context_limit()
    try:
        if kind == "rewrite":
            if not options.rewrite.enable:
                raise EditError("rewrite is disabled: set option rewrite.enable to true")
            start = doc.offset_at(Position(rng.start.line, rng.start.character))
            end = doc.offset_at(Position(rng.end.line, rng.end.character))
            plan = plan_rewrite(doc, start, end, options.rewrite, options.context, limit)
        else:
            if not options.holes.enable:
                raise EditError("fill holes is disabled: set option holes.enable to true")
            plan = plan_holes(doc, options.holes, options.context, limit)
    except (EditError, EngineError) as exc:
        raise JsonRpcInvalidParams(str(exc)) from exc
    try:
        result = await ls.infill(("edit", uri), plan.request)
    except (JsonRpcException, asyncio.CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - the reply names the failure
        log.exception("%s failed", kind)
        raise RequestFailed(f"{kind} failed: {type(exc).__name__}: {exc}") from exc
    if result is None:
        return types.WorkspaceEdit(changes={})  # superseded by a newer edit request on this document
    current = ls.documents.get(uri)
    if current is None or current.version != doc.version:
        raise JsonRpcContentModified(f"{uri} changed while the {kind} ran; run it again")
    try:
        edits = plan_edits(plan, result.texts, doc.eol())
    except EditError as exc:
        raise RequestFailed(str(exc)) from exc
    return convert.workspace_edit(doc, edits, ls.client_has("workspace", "workspace_edit", "document_changes"))

async def run_edit_command(ls: DgServer, kind: str, title: str, args: tuple, need_range: bool) -> types.WorkspaceEdit:
    parsed = convert.parse_edit_args(args, ls.protocol._converter, need_range=need_range)
    edit = await compute_edit(ls, kind, parsed.uri, parsed.range)
    if parsed.apply and (edit.changes or edit.document_changes) and ls.client_has("workspace", "apply_edit"):
        try:
            await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label=title))
        except Exception:  # noqa: BLE001 - the edit is still returned
            log.exception("workspace/applyEdit failed")
    return edit
