"""pygls' LanguageServerProtocol, made to answer every request once, by the spec, and to keep documents our way.

Every message is checked before a handler sees it, in this order (the first failure wins):

- shape (-32600 InvalidRequest): a JSON object with `"jsonrpc": "2.0"`, an id that is an integer or a
  string, a string method. The reply has id null when the id could not be read (JSON-RPC 2.0, section 5):
  an id of another kind, or a message that is no JSON-RPC 2.0 object (no `"jsonrpc": "2.0"`).
- lifecycle: before `initialize`, requests get -32002 ServerNotInitialized and notifications other than
  `exit` are dropped; a second `initialize` gets -32600; after `shutdown`, requests get -32600.
- method (-32601 MethodNotFound): no handler for it, with or without params.
- params (-32602 InvalidParams): structured by a strict converter (no "1" -> 1, 1.5 -> 1, true -> 1, no null
  for a required string); the message names the field, e.g. `params.textDocument.text: expected a string,
  got null`. A notification that fails is logged and ignored.

Requests received and replies sent are counted (`dg/stats` reports both). `$/cancelRequest` also cancels
the engine job of a request (pygls alone cannot reach a job that a command handler started). Document sync
goes into the server's `DocumentStore` (LSP line breaks, negotiated position encoding, edit positions for
cross-file context) instead of pygls' workspace.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

import attrs
import cattrs
from lsprotocol import types
from pygls.protocol import LanguageServerProtocol, default_converter, lsp_method
from pygls.protocol.json_rpc import JsonRPCProtocol, RPCRequest

from dg_lsp.text import Position

if TYPE_CHECKING:
    from dg_lsp.server import DgServer

log = logging.getLogger(__name__)

SERVER_NOT_INITIALIZED = types.ErrorCodes.ServerNotInitialized
INVALID_REQUEST = types.ErrorCodes.InvalidRequest
METHOD_NOT_FOUND = types.ErrorCodes.MethodNotFound
INVALID_PARAMS = types.ErrorCodes.InvalidParams


# --- strict values ---------------------------------------------------------------------------------------

def json_value(value: Any) -> str:
    """A value as the client wrote it, shortened: null, true, 1.5, "text", an object, an array."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


class ValueRejected(ValueError):
    """A JSON value of the wrong kind; the message says what was expected and what came."""

    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"expected {expected}, got {json_value(value)}")


def _strict_int(value: Any, kind: type) -> int:
    if kind is not int and issubclass(kind, enum.Enum):  # IntEnums come here (they are ints)
        return _strict_enum(value, kind)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueRejected("an integer", value)
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueRejected("a number", value)
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise ValueRejected("true or false", value)
    return value


def _strict_str(value: Any, kind: type) -> str:
    if kind is not str and issubclass(kind, enum.Enum):
        return _strict_enum(value, kind)
    if not isinstance(value, str):
        raise ValueRejected("a string", value)
    return value


def _strict_int_or_str(value: Any, _: type) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueRejected("an integer or a string", value)
    return value


def _strict_optional_int_or_str(value: Any, _: type) -> int | str | None:
    return None if value is None else _strict_int_or_str(value, _)


def _strict_enum(value: Any, kind: type) -> enum.Enum:
    members = [m.value for m in kind]  # type: ignore[attr-defined]
    if isinstance(value, bool) or type(value) not in {type(m) for m in members} or value not in members:
        raise ValueRejected(f"one of {', '.join(json_value(m) for m in members)} ({kind.__name__})", value)
    return kind(value)


def strict_converter() -> cattrs.Converter:
    """lsprotocol's converter (through pygls) without cattrs' coercions: JSON values keep their kind."""
    conv = default_converter()
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(str, _strict_str)
    # lsprotocol passes these through unchecked (request ids, progress tokens, document versions)
    conv.register_structure_hook(Union[int, str], _strict_int_or_str)
    conv.register_structure_hook(Optional[Union[int, str]], _strict_optional_int_or_str)
    return conv


def _json_name(attribute: str) -> str:
    head, *rest = attribute.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_RANGE = re.compile(r"^\w+\.(\w+) should be in range \[(-?\d+):(-?\d+)\], but was (.*)\.$")  # lsprotocol's validators


def _failures(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    """(JSON path, what was wrong) for each leaf of a cattrs validation error."""
    if isinstance(exc, (cattrs.ClassValidationError, cattrs.IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            where = (f"[{note.index}]" if isinstance(note, cattrs.errors.IterableValidationNote)
                     else f".{_json_name(note.name)}")
            yield from _failures(inner, path + where)
        for inner in without:
            yield from _failures(inner, path)
    elif isinstance(exc, ValueRejected):
        yield path, str(exc)
    elif isinstance(exc, KeyError):
        yield path, "required, missing"
    elif isinstance(exc, ValueError) and (m := _RANGE.match(str(exc))):
        yield f"{path}.{_json_name(m[1])}", f"expected an integer in {m[2]}..{m[3]}, got {m[4]}"
    elif isinstance(exc, TypeError) and ("subscriptable" in str(exc) or "indices must be" in str(exc)):
        yield path.rpartition(".")[0], "expected an object"  # cattrs read a key of a non-object
    else:
        yield path, str(exc) or type(exc).__name__


def describe_structure_error(exc: BaseException) -> str:
    """The fields of a message that failed, by their JSON path (`params.position.line: expected an integer,
    got "0"`)."""
    cause = exc.__cause__ or exc
    failures = list(dict.fromkeys(_failures(cause, "")))
    return "; ".join(f"{where.lstrip('.') or 'the message'}: {what}" for where, what in failures[:5])


# --- messages that never reach a handler ----------------------------------------------------------------

@attrs.define
class Refused:
    """A message answered (a request) or dropped (a notification) without reaching a handler."""

    id: int | str | None
    method: str | None
    error: types.ResponseError
    is_request: bool
    jsonrpc: str = JsonRPCProtocol.VERSION


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def check_envelope(data: Any) -> Refused | None:
    """The message-level checks (JSON-RPC 2.0 shape): a Refused with -32600, or None when it is well formed.
    Responses from the client (an id with `result` or `error`, no method) pass."""
    if not isinstance(data, dict):
        return Refused(None, None, types.ResponseError(INVALID_REQUEST, (
            f"a message must be a JSON object, got {json_value(data)} (LSP sends no batches)")), True)
    has_id, method = "id" in data, data.get("method")
    is_request = has_id or "method" not in data
    msg_id = data["id"] if has_id and _is_id(data["id"]) else None
    name = method if isinstance(method, str) else None

    def refuse(why: str) -> Refused:
        return Refused(msg_id, name, types.ResponseError(INVALID_REQUEST, f"invalid request: {why}"), is_request)

    if "method" not in data and has_id and ("result" in data or "error" in data):
        return None  # a response
    if has_id and msg_id is None:
        return refuse(f"id must be an integer or a string, got {json_value(data['id'])}")
    if data.get("jsonrpc") != JsonRPCProtocol.VERSION:  # not a JSON-RPC 2.0 request: its "id" means nothing
        got = json_value(data["jsonrpc"]) if "jsonrpc" in data else "none"
        msg_id = None
        return refuse(f'jsonrpc must be "2.0", got {got}')
    if "method" not in data:
        return refuse("a request needs a method")
    if name is None:
        return refuse(f"method must be a string, got {json_value(method)}")
    return None


class DgProtocol(LanguageServerProtocol):
    _server: "DgServer"

    def __init__(self, server, converter) -> None:
        super().__init__(server, converter)
        self.received = 0
        self.replied = 0
        self.initialize_received = False

    # --- every request gets exactly one reply --------------------------------------------------------
    def structure_message(self, data: dict[str, Any]):
        if "jsonrpc" not in data:
            return data  # a nested object (pygls' reader hooks every one), or a message handle_message refuses
        if (refused := check_envelope(data)) is not None:
            return refused
        method = data.get("method")
        if method is None:
            return super().structure_message(data)  # a response
        is_request = "id" in data
        if self._handler(method) is None:
            return Refused(data.get("id"), method, types.ResponseError(
                METHOD_NOT_FOUND, f"unknown method {method!r}"), is_request)
        message_type = self.get_message_type(method)
        if message_type is None:  # our own methods (dg/stats): params are optional and stay plain JSON
            data = {k: data.get(k) for k in ("jsonrpc", "id", "method", "params") if k != "id" or is_request}
            return super().structure_message(data)
        try:
            return self._converter.structure(data, message_type)
        except Exception as exc:  # noqa: BLE001 - any structuring failure is a params failure, told by field
            message = f"invalid params for {method}: {describe_structure_error(exc)}"
            return Refused(data.get("id"), method, types.ResponseError(INVALID_PARAMS, message), is_request)

    def _handler(self, method: str) -> Any:
        if method == types.CANCEL_REQUEST:  # pygls handles it inline
            return self._handle_cancel_notification
        return self.fm.builtin_features.get(method) or self.fm.features.get(method)

    def _lifecycle_error(self, method: str | None) -> types.ResponseError | None:
        """Why a request may not run now (None when it may)."""
        if method == types.INITIALIZE and self.initialize_received:
            return types.ResponseError(INVALID_REQUEST, "initialize was already received: a server is "
                                                        "initialized once per session")
        if not self.initialize_received and method != types.INITIALIZE:
            return types.ResponseError(SERVER_NOT_INITIALIZED, f"request {method!r} before initialize: "
                                                               "send initialize first")
        if self._shutdown and method != types.EXIT:
            return types.ResponseError(INVALID_REQUEST, f"request {method!r} refused: the server is shutting down")
        return None

    def handle_message(self, message):
        if not hasattr(message, "jsonrpc"):  # not an object, or no "jsonrpc" (structure_message let it by)
            refused = check_envelope(message)
            if refused is None:
                log.warning("ignored a response without \"jsonrpc\": %s", json_value(message))
                return
            message = refused
        if isinstance(message, Refused):
            if not message.is_request:
                log.warning("ignored notification %s: %s", message.method, message.error.message)
                return
            self.received += 1
            error = message.error
            if error.code != INVALID_REQUEST:  # well formed: the lifecycle comes before method and params
                error = self._lifecycle_error(message.method) or error
            log.warning("%s", error.message)
            self.reply_error(message.id, error)
            return
        if isinstance(message, RPCRequest):
            self.received += 1
            if (error := self._lifecycle_error(message.method)) is not None:
                self.reply_error(message.id, error)
                return
            if message.method == types.INITIALIZE:
                self.initialize_received = True
        elif getattr(message, "method", types.EXIT) != types.EXIT and not self.initialize_received:
            log.warning("ignored notification %s before initialize", message.method)
            return
        super().handle_message(message)

    def reply_error(self, msg_id: int | str | None, error: types.ResponseError) -> None:
        if msg_id is not None:
            self._send_response(msg_id, error=error)
            return
        self.replied += 1  # lsprotocol's ResponseErrorMessage drops a null id; JSON-RPC needs "id": null
        self._send_data({"jsonrpc": JsonRPCProtocol.VERSION, "id": None,
                         "error": self._converter.unstructure(error)})

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
        else:
            self._server.edited(doc.uri, doc, [None if start is None else (start.line, end.line, text)
                                               for start, end, text in changes])

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self._server.closed(params.text_document.uri)
