"""From the engine's filled text to what the editor shows. Pure.

Steps, in order: cut leftover special tokens (the engine already trims pad/EOS; a `<|...|>` piece that
slips through ends the text), apply the stop rule of the mode (line: end of line; block: dedent below the
cursor's block), remove what repeats the suffix (auto-closed brackets and quotes, or lines that already
follow the cursor), and drop items that are empty or only repeat the suffix. The result carries the range
of document characters it replaces, as offsets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dg_lsp.context import BLOCK_OPENERS, CursorContext

_SPECIAL = re.compile(r"<\|[A-Za-z0-9_:.\-]{1,40}\|>|<(?:pad|eos|mask|/s|s|unk)>|\x00")
CLOSERS = set(")]}>\"'`;,:")


@dataclass(frozen=True)
class Completion:
    """Insert `text` in place of document[start:end] (offsets)."""

    text: str
    start: int
    end: int


def trim_special(text: str) -> str:
    match = _SPECIAL.search(text)
    return text[: match.start()] if match else text


def indent_width(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def _is_closer_line(line: str) -> bool:
    body = line.strip()
    return bool(body) and all(ch in CLOSERS for ch in body)


def stop_at_line_end(text: str) -> str:
    return text.split("\n", 1)[0]


def stop_at_dedent(text: str, line_prefix: str, max_lines: int) -> str:
    """Keep lines while they stay inside the block the cursor is in (or opens).

    The reference is the cursor line's indentation. If the cursor line (with the completion's first line)
    opens a block, the completion ends before the first line at or below that indentation, keeping a line
    of closing brackets at that indentation; otherwise it ends before the first line indented less.
    """
    lines = text.split("\n")
    first_line = line_prefix + lines[0]
    if first_line.strip():
        base = indent_width(first_line)
    else:  # blank so far: the completion's first real line sets the block
        first = next((ln for ln in lines[1:] if ln.strip()), "")
        base = indent_width(first)
    opens = first_line.rstrip().endswith(BLOCK_OPENERS)
    kept = [lines[0]]
    for line in lines[1:]:
        if len(kept) >= max_lines:
            break
        if line.strip():
            width = indent_width(line)
            if width < base:
                break
            if opens and width <= base:
                if _is_closer_line(line):
                    kept.append(line)
                break
        kept.append(line)
    return "\n".join(kept)


def remove_line_suffix_overlap(text: str, line_suffix: str) -> str:
    """Line mode: drop the end of `text` that the rest of the cursor line already holds."""
    rest = line_suffix.rstrip()
    if not rest:
        return text
    body = text.rstrip()
    if body.endswith(rest):  # the model re-typed the whole rest of the line
        return body[: len(body) - len(rest)]
    for k in range(min(len(rest), len(body)), 0, -1):
        piece = rest[:k]
        if all(ch in CLOSERS or ch == " " for ch in piece) and body.endswith(piece):
            return body[: len(body) - k]
    return text


def remove_block_suffix_overlap(text: str, suffix: str) -> str:
    """Block mode: drop trailing lines of `text` that are the first non-blank lines after the cursor."""
    lines = text.split("\n")
    following = [ln.strip() for ln in suffix.split("\n")[1:] if ln.strip()][:20]
    if not following:
        return text
    for m in range(min(len(lines), len(following)), 0, -1):
        tail = [ln.strip() for ln in lines[-m:]]
        if all(tail) and tail == following[:m]:
            return "\n".join(lines[:-m])
    return text


def repeats_suffix(text: str, suffix: str) -> bool:
    body = text.strip()
    return bool(body) and suffix.lstrip().startswith(body)


def postprocess(raw: str, ctx: CursorContext, *, max_lines: int = 12) -> Completion | None:
    """The completion to offer at the cursor, or None when there is nothing worth showing."""
    text = trim_special(raw).replace("\r\n", "\n").replace("\r", "\n")
    if ctx.mode == "line":
        text = stop_at_line_end(text)
        text = remove_line_suffix_overlap(text, ctx.line_suffix)
        text = text.rstrip() if not ctx.line_suffix.strip() else text
    else:
        text = stop_at_dedent(text, ctx.line_prefix, max_lines).rstrip()
        text = remove_block_suffix_overlap(text, ctx.suffix).rstrip()
    if not text.strip() or repeats_suffix(text, ctx.suffix):
        return None
    if ctx.eol != "\n":
        text = text.replace("\n", ctx.eol)
    return Completion(text=text, start=ctx.offset, end=ctx.offset)


def as_item_edit(completion: Completion, word_start: int, document_text: str) -> Completion:
    """For completion items: replace the word being typed, so the client's filter matches the label."""
    word = document_text[word_start:completion.start]
    return Completion(text=word + completion.text, start=word_start, end=completion.end)


@dataclass(frozen=True)
class Shown:
    """The last completion offered in a document, to keep offering while the user types into it."""

    offset: int
    before: str  # document text just before the original cursor
    after: str  # document text just after it
    text: str


def remember(ctx: CursorContext, completion: Completion, document_text: str, span: int = 256) -> Shown:
    before = document_text[max(0, ctx.offset - span):ctx.offset]
    after = document_text[ctx.offset:ctx.offset + span]
    return Shown(offset=ctx.offset, before=before, after=after, text=completion.text)


def continue_shown(shown: Shown | None, document_text: str, offset: int) -> Completion | None:
    """If the user typed the start of the shown completion, the rest of it; otherwise None."""
    if shown is None or offset <= shown.offset:
        return None
    typed = document_text[shown.offset:offset]
    if not shown.text.startswith(typed) or len(typed) >= len(shown.text):
        return None
    if document_text[max(0, shown.offset - len(shown.before)):shown.offset] != shown.before:
        return None
    if document_text[offset:offset + len(shown.after)] != shown.after:
        return None
    return Completion(text=shown.text[len(typed):], start=offset, end=offset)
