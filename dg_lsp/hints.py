"""Confidence hints: the tokens of just-edited lines that the model finds unlikely, as hint diagnostics
with a quick fix that rewrites the token (the `rewrite` code action on the diagnostic's range).

Pure pieces only: which lines an edit touched, the text window a score request sends, diagnostics from
scores, and the quick fixes; `DgServer` schedules the scoring and publishes.
"""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types

from dg_lsp import convert
from dg_lsp.options import ContextOptions, HintsOptions
from dg_lsp.text import Document

SOURCE = "dg-lsp"
CODE = "unlikely-token"


@dataclass(frozen=True)
class Window:
    """`text` is the document from `offset`; `start`, `end` index the scored span inside `text`."""

    text: str
    offset: int
    start: int
    end: int


def edited_lines(changes: list[tuple[int, int, str] | None], line_count: int) -> tuple[int, int, bool]:
    """(first, last, shifted): the lines of the document after `changes` that hold new text, and whether
    lines below them may have moved. Each change is (start line, end line, new text) of its range, or None
    for a full replacement."""
    if not changes or any(c is None for c in changes):
        return 0, max(0, line_count - 1), True
    first = min(start for start, _, _ in changes)
    last = min(max(start + text.count("\n") for start, _, text in changes), max(0, line_count - 1))
    shifted = len(changes) > 1 or any(end != start or "\n" in text for start, end, text in changes)
    return min(first, last), last, shifted


def keep_after_edit(diagnostics: list[types.Diagnostic], first: int, last: int, shifted: bool
                    ) -> list[types.Diagnostic]:
    """Hints that still stand after an edit of lines first..last (below it too when lines moved)."""
    return [d for d in diagnostics
            if d.range.end.line < first or (not shifted and d.range.start.line > last)]


def window(doc: Document, first: int, last: int, context: ContextOptions) -> Window:
    """The scored span (lines first..last without the final line break) and context around it, cut to the
    context budget in characters (`suffix_share` of it after the span)."""
    start, _ = doc.line_bounds(first)
    _, end = doc.line_bounds(last)
    chars = int(context.budget * context.chars_per_token)
    before = max(0, start - int(chars * (1.0 - context.suffix_share)))
    after = min(len(doc.text), end + int(chars * context.suffix_share))
    return Window(doc.text[before:after], before, start - before, end - before)


def diagnostics(doc: Document, win: Window, scores: list[tuple[int, int, float]], options: HintsOptions
                ) -> list[types.Diagnostic]:
    """A hint per non-blank token scored under `options.threshold`."""
    found = []
    for a, b, prob in scores:
        if prob >= options.threshold or not win.text[a:b].strip():
            continue
        found.append(types.Diagnostic(
            range=convert.to_range(doc, win.offset + a, win.offset + b), severity=types.DiagnosticSeverity.Hint,
            source=SOURCE, code=CODE, message=f"unlikely here (model probability {prob:.2g})",
            data={"probability": prob}))
    return found


def quick_fixes(uri: str, diags: list[types.Diagnostic], converter, lazy_edit: bool) -> list[types.CodeAction]:
    """A quickfix per dg-lsp hint: the rewrite of its range (edit resolved, or the rewrite command)."""
    command, _ = convert.COMMANDS["rewrite"]
    actions = []
    for d in diags:
        if d.source != SOURCE or d.code != CODE:
            continue
        arg = {"uri": uri, "range": converter.unstructure(d.range)}
        title = "Rewrite the unlikely token (dg-lsp)"
        action = types.CodeAction(title=title, kind=types.CodeActionKind.QuickFix, diagnostics=[d],
                                  data={"kind": "rewrite", **arg})
        if not lazy_edit:
            action.command = types.Command(title=title, command=command, arguments=[arg])
        actions.append(action)
    return actions
