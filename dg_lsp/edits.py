"""Rewrite selection and fill holes: build the request, map the engine's texts back to edits. Pure.

Edits are `Completion`s (text + document offsets); the server turns them into a `WorkspaceEdit`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dg_lsp.engine.request import MAX_CANVAS, Hole, InfillRequest
from dg_lsp.context import canvas_room, context_reserve, holes_beyond_limit, window_end, window_start
from dg_lsp.options import ContextOptions, HolesOptions, RewriteOptions
from dg_lsp.postprocess import Completion, trim_special
from dg_lsp.text import Document


class EditError(ValueError):
    """The document or selection cannot be edited this way; the message says why."""


@dataclass(frozen=True)
class EditPlan:
    request: InfillRequest
    spans: tuple[tuple[int, int], ...]  # document offsets each hole replaces


def _char_budget(options: ContextOptions) -> int:
    return int(options.budget * options.chars_per_token)


def plan_rewrite(doc: Document, start: int, end: int, rewrite: RewriteOptions, context: ContextOptions,
                 context_limit: int | None = None) -> EditPlan:
    """The selection [start, end) becomes the canvas, initialised from its text; prefix/suffix stay fixed.
    With the model's `context_limit`, a selection whose canvas cannot fit it is refused."""
    start, end = sorted((min(max(0, start), len(doc.text)), min(max(0, end), len(doc.text))))
    selection = doc.text[start:end]
    if not selection.strip():
        raise EditError("the selection is empty: select the code to rewrite")
    if len(selection) > rewrite.max_chars:
        raise EditError(f"the selection has {len(selection)} characters: expected at most {rewrite.max_chars} "
                        f"(option rewrite.maxChars)")
    chars = _char_budget(context)
    suffix_chars = int(chars * context.suffix_share)
    a = window_start(doc.text, start, chars - suffix_chars)
    b = window_end(doc.text, end, suffix_chars)
    # canvas: the selection's estimated token count plus room to grow; the worker re-measures it exactly
    canvas = int(len(selection) / context.chars_per_token) + rewrite.extra_canvas + 1
    if context_limit is not None and canvas > (room := canvas_room(context, context_limit)):
        most = max(0, int((room - rewrite.extra_canvas - 1) * context.chars_per_token))
        raise EditError(f"the selection needs a canvas of about {canvas} tokens (with rewrite.extraCanvas "
                        f"{rewrite.extra_canvas}); with {context_reserve(context, context_limit)} tokens of context "
                        f"that exceeds the model's context of {context_limit} tokens: expected a selection of at "
                        f"most about {most} characters")
    request = InfillRequest(segments=(doc.text[a:start], doc.text[end:b]),
                            holes=(Hole(canvas=min(canvas, MAX_CANVAS), init=selection),))
    return EditPlan(request=request, spans=((start, end),))


def find_holes(text: str, marker: str, limit: int | None = None) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    i = text.find(marker)
    while i != -1 and (limit is None or len(spans) < limit):
        spans.append((i, i + len(marker)))
        i = text.find(marker, i + len(marker))
    return spans


def plan_holes(doc: Document, holes: HolesOptions, context: ContextOptions,
               context_limit: int | None = None) -> EditPlan:
    """Every marker in the document becomes a hole; all are filled jointly in one canvas. With the model's
    `context_limit`, a hole's canvas is at most `canvas_room`, and holes that cannot fit it are refused."""
    spans = find_holes(doc.text, holes.marker, limit=holes.max_holes + 1)
    if not spans:
        raise EditError(f"no hole marker {holes.marker!r} in the document (option holes.marker)")
    if len(spans) > holes.max_holes:
        raise EditError(f"the document has more than {holes.max_holes} hole markers: expected at most "
                        f"{holes.max_holes} (option holes.maxHoles)")
    canvas = holes.canvas
    if context_limit is not None:
        canvas = max(1, min(canvas, canvas_room(context, context_limit)))
        if (why := holes_beyond_limit(len(spans), canvas, context, context_limit)) is not None:
            raise EditError(why)
    chars = _char_budget(context)
    suffix_chars = int(chars * context.suffix_share)
    first, last = spans[0][0], spans[-1][1]
    a = window_start(doc.text, first, chars - suffix_chars)
    b = window_end(doc.text, last, suffix_chars)
    bounds = [a] + [x for span in spans for x in span] + [b]
    segments = tuple(doc.text[bounds[i]:bounds[i + 1]] for i in range(0, len(bounds), 2))
    request = InfillRequest(segments=segments, holes=tuple(Hole(canvas=canvas) for _ in spans))
    return EditPlan(request=request, spans=tuple(spans))


def clean_fill(text: str, eol: str) -> str:
    text = trim_special(text).replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", eol) if eol != "\n" else text


def plan_edits(plan: EditPlan, texts: tuple[str, ...], eol: str = "\n") -> list[Completion]:
    """One edit per hole; a rewrite that changes nothing yields no edit."""
    if len(texts) != len(plan.spans):
        raise EditError(f"the model returned {len(texts)} fills for {len(plan.spans)} holes: expected one per hole")
    edits = []
    for (start, end), hole, text in zip(plan.spans, plan.request.holes, texts):
        text = clean_fill(text, eol)
        if hole.init and text == hole.init:
            continue
        edits.append(Completion(text=text, start=start, end=end))
    return edits


def apply_edits(text: str, edits: list[Completion]) -> str:
    """Apply non-overlapping edits (tests and the fuzz oracle use this)."""
    out, last = [], 0
    for edit in sorted(edits, key=lambda e: e.start):
        if edit.start < last:
            raise EditError("overlapping edits")
        out.append(text[last:edit.start])
        out.append(edit.text)
        last = edit.end
    out.append(text[last:])
    return "".join(out)
