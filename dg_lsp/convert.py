"""Pure conversions between our results and lsprotocol types, and parsing of command arguments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from dg_lsp.postprocess import Completion
from dg_lsp.speculate import ACCEPTED_COMMAND, accepted_argument
from dg_lsp.text import Document

REWRITE_COMMAND = "dg-lsp.rewriteSelection"
FILL_HOLES_COMMAND = "dg-lsp.fillHoles"
COMMANDS = {"rewrite": (REWRITE_COMMAND, "Rewrite selection (dg-lsp)"),
            "holes": (FILL_HOLES_COMMAND, "Fill holes (dg-lsp)")}


def to_range(doc: Document, start: int, end: int) -> types.Range:
    a, b = doc.position_at(start), doc.position_at(end)
    return types.Range(start=types.Position(a.line, a.character), end=types.Position(b.line, b.character))


def inline_items(doc: Document, completion: Completion | None, speculate: bool = False) -> types.InlineCompletionList:
    """The completion as one item; with `speculate`, the item carries the command editors run once it is
    accepted (dg_lsp/speculate.py: the server then computes the next completion in idle time)."""
    if completion is None:
        return types.InlineCompletionList(items=[])
    rng = to_range(doc, completion.start, completion.end)
    item = types.InlineCompletionItem(insert_text=completion.text, range=rng)
    if speculate:
        start = doc.position_at(completion.start)
        arg = accepted_argument(doc.uri, doc.version, start, completion.text, doc.encoding)
        item.command = types.Command(title="dg-lsp: accepted", command=ACCEPTED_COMMAND, arguments=[arg])
    return types.InlineCompletionList(items=[item])


def completion_items(doc: Document, completion: Completion | None) -> types.CompletionList:
    """One item whose text edit replaces the word being typed (is_incomplete: ask again as the user types)."""
    if completion is None:
        return types.CompletionList(is_incomplete=True, items=[])
    first_line = completion.text.strip().split("\n", 1)[0].strip()
    label = first_line if len(first_line) <= 60 else first_line[:57] + "..."
    multi = "\n" in completion.text.strip()
    item = types.CompletionItem(
        label=(label + " …") if multi else label,
        kind=types.CompletionItemKind.Snippet if multi else types.CompletionItemKind.Text,
        detail="dg-lsp",
        documentation=completion.text if multi else None,
        sort_text="0",
        filter_text=completion.text,
        insert_text_format=types.InsertTextFormat.PlainText,
        text_edit=types.TextEdit(range=to_range(doc, completion.start, completion.end), new_text=completion.text),
    )
    return types.CompletionList(is_incomplete=True, items=[item])


def code_actions(uri: str, rng: dict, kinds: list[str], lazy_edit: bool) -> list[types.CodeAction]:
    """Actions for `kinds` ("rewrite", "holes"). Nothing is computed here: a client that resolves `edit`
    gets it from `codeAction/resolve`; any other client runs the command, which applies the edit."""
    actions = []
    for kind in kinds:
        command, title = COMMANDS[kind]
        arg = {"uri": uri, "range": rng}
        action = types.CodeAction(title=title, kind=types.CodeActionKind.RefactorRewrite, data={"kind": kind, **arg})
        if not lazy_edit:
            action.command = types.Command(title=title, command=command, arguments=[arg])
        actions.append(action)
    return actions


def workspace_edit(doc: Document, edits: list[Completion], document_changes: bool) -> types.WorkspaceEdit:
    text_edits = [types.TextEdit(range=to_range(doc, e.start, e.end), new_text=e.text) for e in edits]
    if not text_edits:
        return types.WorkspaceEdit(changes={})
    if document_changes:  # versioned: the client refuses it if the document moved on
        ident = types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version)
        return types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(text_document=ident, edits=text_edits)])
    return types.WorkspaceEdit(changes={doc.uri: text_edits})


@dataclass(frozen=True)
class EditArgs:
    uri: str
    range: types.Range | None
    apply: bool = True


def parse_edit_args(args: tuple[Any, ...] | list[Any], converter, *, need_range: bool) -> EditArgs:
    """Arguments of the rewrite / fill-holes commands: `[{uri, range?, apply?}]` or `[uri, range?]`."""
    usage = ("expected [{uri, range, apply?}] or [uri, range]" if need_range
             else "expected [{uri, apply?}] or [uri]")
    if len(args) == 1 and isinstance(args[0], dict):
        raw = args[0]
        uri, rng, apply = raw.get("uri"), raw.get("range"), raw.get("apply", True)
    elif 1 <= len(args) <= 2:
        uri, rng, apply = args[0], args[1] if len(args) == 2 else None, True
    else:
        raise JsonRpcInvalidParams(f"command got {len(args)} arguments: {usage}")
    if not isinstance(uri, str) or not uri:
        raise JsonRpcInvalidParams(f"command argument uri={uri!r} is invalid: {usage}")
    if not isinstance(apply, bool):
        raise JsonRpcInvalidParams(f"command argument apply={apply!r} is invalid: expected true or false")
    parsed = None
    if rng is not None:
        try:
            parsed = converter.structure(rng, types.Range)
        except Exception as exc:  # noqa: BLE001 - any failure means a malformed range
            raise JsonRpcInvalidParams(f"command argument range={rng!r} is invalid: expected "
                                       "{start: {line, character}, end: {line, character}}") from exc
    if need_range and parsed is None:
        raise JsonRpcInvalidParams(f"command needs a range: {usage}")
    return EditArgs(uri=uri, range=parsed, apply=apply)
