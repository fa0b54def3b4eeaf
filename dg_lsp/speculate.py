"""Speculative next completion: after the user accepts an inline item, the completion at the new cursor is
computed while the worker is idle, so the request that follows is answered from the result cache.

Each inline item carries the command `dg-lsp.accepted` (`ACCEPTED_COMMAND`); VS Code and Neovim 0.12 run
it right after inserting the item, as `workspace/executeCommand`. Its one argument says which text went
where: `{uri, version, position, text}`, `position` being where `text` ends in the document once it holds
the item (the client's position encoding), `version` the document version the item was computed at.

The didChange that inserts the item may come before the command (Neovim flushes its changes before any
request) or after it. `Accepts` settles both orders: the offset to complete at once the document holds
`text` right before `position`; nothing when a later version does not (the user went elsewhere).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pygls.exceptions import JsonRpcInvalidParams

from dg_lsp.text import Document, Position, code_units

ACCEPTED_COMMAND = "dg-lsp.accepted"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # LSP's line breaks
_USAGE = "expected [{uri, version, position: {line, character}, text}]"


@dataclass(frozen=True)
class Accepted:
    uri: str
    version: int
    position: Position  # where the accepted text ends, in the document that holds it
    text: str


def accepted_argument(uri: str, version: int, start: Position, text: str, encoding: str) -> dict:
    """The command argument of an item that inserts `text` at `start` (in a document at `version`)."""
    lines = _LINE_BREAK.split(text)
    column = (start.character if len(lines) == 1 else 0) + code_units(lines[-1], encoding)
    return {"uri": uri, "version": version, "position": {"line": start.line + len(lines) - 1, "character": column},
            "text": text}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_accepted(args: tuple[Any, ...] | list[Any]) -> Accepted:
    """The command's arguments, or InvalidParams naming the bad one."""
    if len(args) != 1 or not isinstance(args[0], dict):
        raise JsonRpcInvalidParams(f"{ACCEPTED_COMMAND} got {len(args)} arguments: {_USAGE}")
    raw = args[0]
    uri, version, position, text = raw.get("uri"), raw.get("version"), raw.get("position"), raw.get("text")
    for name, value, ok in (("uri", uri, isinstance(uri, str) and bool(uri)),
                            ("version", version, _is_int(version)),
                            ("position", position, isinstance(position, dict)
                             and _is_int(position.get("line")) and _is_int(position.get("character"))
                             and position["line"] >= 0 and position["character"] >= 0),
                            ("text", text, isinstance(text, str))):
        if not ok:
            raise JsonRpcInvalidParams(f"{ACCEPTED_COMMAND} argument {name}={value!r} is invalid: {_USAGE}")
    return Accepted(uri, version, Position(position["line"], position["character"]), text)


def holds(doc: Document, accepted: Accepted) -> int | None:
    """Offset right after the accepted text when `doc` has it where the item put it, else None. Line
    breaks may differ (VS Code turns the item's "\n" into the document's "\r\n")."""
    end = doc.offset_at(accepted.position)
    if doc.position_at(end) != accepted.position:  # the position is past its line or the document
        return None
    lines = _LINE_BREAK.split(accepted.text)
    first = accepted.position.line - len(lines) + 1
    if first < 0:
        return None
    spans = [doc.line_bounds(line) for line in range(first, accepted.position.line)]
    spans.append((doc.line_starts[accepted.position.line], end))
    return end if "\n".join(doc.text[a:b] for a, b in spans).endswith("\n".join(lines)) else None


class Accepts:
    """Accepted items whose document does not show them yet: at most one per document (the latest)."""

    def __init__(self) -> None:
        self._waiting: dict[str, Accepted] = {}

    def accepted(self, accepted: Accepted, doc: Document | None) -> int | None:
        """The offset to complete at now; None while the item's didChange is still to come, or never."""
        self._waiting.pop(accepted.uri, None)
        if doc is None:
            return None
        if doc.version == accepted.version:
            self._waiting[accepted.uri] = accepted
            return None
        return holds(doc, accepted)

    def changed(self, doc: Document) -> int | None:
        """After a didChange of `doc`: the offset to complete at when it brought a waiting item; the first
        change after the item decides (one that does not hold it means the user went elsewhere)."""
        accepted = self._waiting.get(doc.uri)
        if accepted is None or doc.version == accepted.version:
            return None
        del self._waiting[doc.uri]
        return holds(doc, accepted)

    def closed(self, uri: str) -> None:
        """The document closed: an item still waiting for its didChange never gets one."""
        self._waiting.pop(uri, None)
