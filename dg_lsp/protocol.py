"""pygls' LanguageServerProtocol, made to answer every request and to keep documents our way.

- A request whose params do not fit the method's type gets an InvalidParams reply naming what was wrong
  (pygls would log it and never reply); so does a request after `shutdown` (InvalidRequest).
- Requests received and replies sent are counted (`dg/stats` reports both).
- `$/cancelRequest` also cancels the engine job of a request (pygls alone cannot reach a job that a
  command handler started).
- Document sync goes into the server's `DocumentStore` (LSP line breaks, negotiated position encoding,
  edit positions for cross-file context) instead of pygls' workspace.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs
import cattrs
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidRequest
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import JsonRPCProtocol, RPCRequest

from dg_lsp.text import Position

if TYPE_CHECKING:
    from dg_lsp.server import DgServer

log = logging.getLogger(__name__)


@attrs.define
class MalformedRequest:
    """A request whose params could not be structured; answered with `error`."""

    id: int | str
    method: str
    error: types.ResponseError
    jsonrpc: str = JsonRPCProtocol.VERSION


def describe_structure_error(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    if isinstance(cause, cattrs.ClassValidationError):
        try:
            return "; ".join(cattrs.transform_error(cause, path="params")[:5])
        except Exception:  # noqa: BLE001 - fall back to the plain message
            pass
    return str(cause) or type(cause).__name__


def _reply_id(data: dict) -> int | str | None:
    msg_id = data.get("id")
    if isinstance(msg_id, bool) or not isinstance(msg_id, (int, str)):
        return None
    return msg_id


class DgProtocol(LanguageServerProtocol):
    _server: "DgServer"

    def __init__(self, server, converter) -> None:
        super().__init__(server, converter)
        self.received = 0
        self.replied = 0

    # --- every request gets a reply ---------------------------------------------------------------------
    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            is_request = isinstance(data, dict) and "method" in data and "error" not in data and "result" not in data
            msg_id = _reply_id(data) if is_request else None
            if msg_id is None:
                raise
            method = data.get("method") if isinstance(data.get("method"), str) else "?"
            message = f"invalid params for {method}: {describe_structure_error(exc)}"
            return MalformedRequest(id=msg_id, method=method,
                                    error=types.ResponseError(code=types.ErrorCodes.InvalidParams, message=message))

    def handle_message(self, message):
        if isinstance(message, MalformedRequest):
            self.received += 1
            log.warning("%s", message.error.message)
            self._send_response(message.id, error=message.error)
            return
        if isinstance(message, RPCRequest):
            self.received += 1
            if message.jsonrpc != JsonRPCProtocol.VERSION or (self._shutdown and message.method != types.EXIT):
                why = "the server is shutting down" if self._shutdown else "jsonrpc must be \"2.0\""
                error = JsonRpcInvalidRequest(f"request {message.method!r} refused: {why}")
                self._send_response(message.id, error=error.to_response_error())
                return
        super().handle_message(message)

    def _send_response(self, msg_id, result=None, error=None):
        self.replied += 1
        super()._send_response(msg_id, result=result, error=error)

    def _handle_cancel_notification(self, msg_id):
        self._server.cancel_request(msg_id)
        super()._handle_cancel_notification(msg_id)

    # --- documents ---------------------------------------------------------------------------------------
    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        self._server.documents.open(item.uri, item.text, item.version, item.language_id)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        changes = []
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                start = Position(change.range.start.line, change.range.start.character)
                end = Position(change.range.end.line, change.range.end.character)
                changes.append((start, end, change.text))
            else:
                changes.append((None, None, change.text))
        doc = self._server.documents.change(params.text_document.uri, params.text_document.version, changes)
        if doc is None:
            log.warning("didChange for a document that is not open: %s", params.text_document.uri)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self._server.documents.close(params.text_document.uri)
        self._server.shown.pop(params.text_document.uri, None)
