"""From the engine's filled text to what the editor shows. Pure.

Steps, in order: cut leftover special tokens (the engine already trims pad/EOS; a `<|...|>` piece that
slips through ends the text), apply the stop rule of the mode (line: end of the statement, i.e. the first
line end with no bracket or string open; block: dedent below the cursor's block, but not inside brackets),
remove what repeats the suffix (auto-closed brackets and quotes, or lines that already follow the cursor),
balance (cut at a closer the text did not open, or that closes a bracket the suffix closes; block mode cuts
back to the last line that leaves nothing open, line mode cuts a string left open), and drop items that are
empty or only repeat the suffix. Brackets and strings are tracked from the start of the cursor's statement,
with Python rules or C-like ones (`//` comments) by language id. The result carries the range of document
characters it replaces, as offsets.
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


@dataclass(frozen=True)
class Syntax:
    """What the bracket scanner needs to know of a language: its line comment and its quotes."""

    comment: str
    quotes: str
    triple: bool  # whether a tripled quote opens a string that may span lines


PYTHON = Syntax(comment="#", quotes="'\"", triple=True)
C_LIKE = Syntax(comment="//", quotes="'\"", triple=False)
_C_LIKE_IDS = {"c", "cpp", "csharp", "cuda-cpp", "objective-c", "objective-cpp", "java", "javascript",
               "javascriptreact", "typescript", "typescriptreact", "go", "rust", "kotlin", "swift", "scala",
               "dart", "php", "groovy"}
_PAIRS = {")": "(", "]": "[", "}": "{"}


def syntax_for(language_id: str) -> Syntax:
    return C_LIKE if language_id.lower() in _C_LIKE_IDS else PYTHON


@dataclass(frozen=True)
class Scan:
    """Scanner state: brackets still open (innermost last) and the string the text is inside, if any."""

    open: tuple[str, ...] = ()
    quote: str = ""  # the open string's delimiter; "" outside strings
    quote_at: int = -1  # where in the scanned text that string opened; -1: before it

    def in_own_string(self) -> bool:
        return bool(self.quote) and self.quote_at >= 0


@dataclass(frozen=True)
class Walk:
    lines: list[Scan]  # state at the end of each "\n"-separated line, before its line break
    stray: int  # offset of the first closer that matches no open bracket (or a kept one); -1: none
    low: int  # the fewest brackets open at any point
    first_open: int = -1  # offset of the earliest bracket this text opened that is still open; -1: none


def scan(text: str, syntax: Syntax = PYTHON, start: Scan = Scan(), keep: int = 0) -> Walk:
    """Track brackets and strings through `text` from `start`, ignoring brackets in strings and comments.

    The first `keep` open brackets are not the text's to close: a closer that would close one is stray
    (and, like any stray closer, changes nothing).
    """
    stack, quote, quote_at = list(start.open), start.quote, start.quote_at if start.quote else -1
    opened_at = [-1] * len(stack)  # where each open bracket was opened (-1: before the text)
    lines: list[Scan] = []
    stray, low, escaped_break, i, n = -1, len(stack), False, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            lines.append(Scan(tuple(stack), quote, quote_at))
            if len(quote) == 1 and not escaped_break:  # a one-quote string ends with its line
                quote, quote_at = "", -1
            escaped_break, i = False, i + 1
        elif quote:
            if ch == "\\":
                escaped_break = text.startswith("\n", i + 1)
                i += 1 if escaped_break else 2
            elif text.startswith(quote, i):
                quote, quote_at, i = "", -1, i + len(quote)
            else:
                i += 1
        elif text.startswith(syntax.comment, i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch in syntax.quotes:
            quote = ch * 3 if syntax.triple and text.startswith(ch * 3, i) else ch
            quote_at, i = i, i + len(quote)
        else:
            if ch in "([{":
                stack.append(ch)
                opened_at.append(i)
            elif ch in _PAIRS:
                if len(stack) > keep and stack[-1] == _PAIRS[ch]:
                    stack.pop()
                    opened_at.pop()
                    low = min(low, len(stack))
                elif stray < 0:
                    stray = i
            i += 1
    lines.append(Scan(tuple(stack), quote, quote_at))
    own = [at for at in opened_at if at >= 0]
    return Walk(lines, stray, low, own[0] if own else -1)


def statement_state(prefix: str, syntax: Syntax) -> Scan:
    """Brackets and string left open before the cursor, scanning from the last line at column 0 that can
    start a statement (not blank, not a closing bracket)."""
    lines = prefix.split("\n")
    head = 0
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line[:1].strip() and line[0] not in ")]}" and not line.startswith(syntax.comment):
            head = i
            break
    state = scan("\n".join(lines[head:]), syntax).lines[-1]
    return Scan(state.open, state.quote)


def suffix_closes(suffix: str, start: Scan, syntax: Syntax) -> int:
    """How many of the brackets open at the cursor the text after it closes."""
    return len(start.open) - scan(suffix, syntax, start).low


def _balanced(state: Scan, depth: int) -> bool:
    return len(state.open) <= depth and not state.in_own_string()


def _until_broken(lines: list[Scan]) -> list[Scan]:
    """The line states before the first line that ends inside a one-quote string it opened (a broken line:
    the scanner's string state after it means nothing)."""
    broken = [i for i, state in enumerate(lines) if state.in_own_string() and len(state.quote) == 1]
    return lines[:broken[0]] if broken else lines


def _cut_after_line(text: str, index: int) -> str:
    return "\n".join(text.split("\n")[:index + 1])


def stop_at_statement_end(text: str, start: Scan, syntax: Syntax, keep: int, max_lines: int) -> str:
    """Line mode: end after the line that ends the statement, i.e. closes the brackets the completion opened
    and those the prefix left open (less the `keep` the suffix closes). If none does within `max_lines`,
    the first line that closes the completion's own brackets; else nothing."""
    lines = _until_broken(scan(text, syntax, start, keep).lines[:max_lines])
    for depth in (keep, len(start.open)):
        ends = [i for i, state in enumerate(lines) if _balanced(state, depth)]
        if ends:
            return _cut_after_line(text, ends[0])
    return before_first_open(text.split("\n", 1)[0], start, syntax, keep)


def before_first_open(text: str, start: Scan, syntax: Syntax, keep: int) -> str:
    """What precedes the earliest bracket the text opens and never closes (all of it when there is none):
    a statement cut short shows its balanced beginning rather than nothing."""
    walk = scan(text, syntax, start, keep)
    cut = text if walk.first_open < 0 else text[:walk.first_open]
    last = scan(cut, syntax, start, keep).lines[-1]
    return (cut[:last.quote_at] if last.in_own_string() else cut).rstrip()


def balance(text: str, start: Scan, syntax: Syntax, keep: int, whole_lines: bool) -> str:
    """Cut before the first closer the text did not open (nor the prefix left open for it to close); then
    block mode (`whole_lines`) cuts back to the last line that leaves no bracket of its own or string open,
    and line mode cuts a string the text opened and did not close."""
    walk = scan(text, syntax, start, keep)
    if walk.stray >= 0:
        text = text[:walk.stray]
        walk = scan(text, syntax, start, keep)
    if whole_lines:
        ends = [i for i, state in enumerate(_until_broken(walk.lines)) if _balanced(state, len(start.open))]
        return _cut_after_line(text, ends[-1]) if ends else before_first_open(text.split("\n", 1)[0], start, syntax,
                                                                              keep)
    last = walk.lines[-1]
    return text[:last.quote_at] if last.in_own_string() else text


def stop_at_dedent(text: str, line_prefix: str, max_lines: int, inside: list[bool] | None = None) -> str:
    """Keep lines while they stay inside the block the cursor is in (or opens).

    The reference is the cursor line's indentation. If the cursor line (with the completion's first line)
    opens a block, the completion ends before the first line at or below that indentation, keeping a line
    of closing brackets at that indentation; otherwise it ends before the first line indented less.
    A line that starts inside brackets or a string (`inside[i]` for line i) never ends the block.
    """
    lines = text.split("\n")
    inside = inside or [False] * len(lines)
    first_line = line_prefix + lines[0]
    if first_line.strip():
        base = indent_width(first_line)
    else:  # blank so far: the completion's first real line sets the block
        first = next((ln for ln in lines[1:] if ln.strip()), "")
        base = indent_width(first)
    opens = first_line.rstrip().endswith(BLOCK_OPENERS)
    kept = [lines[0]]
    for index, line in enumerate(lines[1:], 1):
        if len(kept) >= max_lines:
            break
        if line.strip() and not inside[index]:
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
    syntax = syntax_for(ctx.language_id)
    start = statement_state(ctx.prefix, syntax)
    keep = suffix_closes(ctx.suffix, start, syntax)
    if ctx.mode == "line":
        text = stop_at_statement_end(text, start, syntax, keep, max_lines)
        text = remove_line_suffix_overlap(text, ctx.line_suffix)
        text = balance(text, start, syntax, keep, whole_lines=False)
        text = text.rstrip() if not ctx.line_suffix.strip() else text
    else:
        states = scan(text, syntax, start, keep).lines
        inside = [False] + [not _balanced(state, keep) for state in states[:-1]]
        text = stop_at_dedent(text, ctx.line_prefix, max_lines, inside).rstrip()
        text = remove_block_suffix_overlap(text, ctx.suffix).rstrip()
        text = balance(text, start, syntax, keep, whole_lines=True).rstrip()
    if not text.strip() or repeats_suffix(text, ctx.suffix):
        return None
    if ctx.eol != "\n":
        text = text.replace("\n", ctx.eol)
    return Completion(text=text, start=ctx.offset, end=ctx.offset)


def _open_so_far(raw: str, ctx: CursorContext, max_lines: int) -> tuple[str, int, Walk] | None:
    """Between the canvases of a long completion: the text so far (line breaks normalised), how many of the
    brackets open at the cursor the suffix closes, and the bracket walk from the statement's start; None
    when the text has ended whatever the mode: a special token, a closer it did not open, or more than
    `max_lines` lines."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    if trim_special(text) != text:
        return None
    syntax = syntax_for(ctx.language_id)
    start = statement_state(ctx.prefix, syntax)
    keep = suffix_closes(ctx.suffix, start, syntax)
    walk = scan(text, syntax, start, keep)
    if walk.stray >= 0 or text.count("\n") >= max_lines:
        return None
    return text, keep, walk


def block_ended(raw: str, ctx: CursorContext, *, max_lines: int = 12) -> bool:
    """Block mode, between the canvases of a long completion: has the text so far ended? True when it holds
    a special token, a closer it did not open (brackets), a line the dedent rule cuts (outside brackets),
    or more than `max_lines` lines; `postprocess` then cuts the text where this rule saw the end."""
    if (so_far := _open_so_far(raw, ctx, max_lines)) is None:
        return True
    text, keep, walk = so_far
    inside = [False] + [not _balanced(state, keep) for state in walk.lines[:-1]]
    return len(stop_at_dedent(text, ctx.line_prefix, max_lines, inside).split("\n")) < len(text.split("\n"))


def line_ended(raw: str, ctx: CursorContext, *, max_lines: int = 12) -> bool:
    """Line mode, between the canvases of a line longer than its canvas: has the text so far ended? True
    when it holds a special token, a closer it did not open, a line break after a line that ends the
    statement (the rule `stop_at_statement_end` cuts at) or after a line broken inside a string, or more
    than `max_lines` lines. A line still open (no break yet, or inside brackets) goes on."""
    if (so_far := _open_so_far(raw, ctx, max_lines)) is None:
        return True
    _, keep, walk = so_far
    finished = walk.lines[:-1]  # the lines a break already ended
    whole = _until_broken(finished)
    # only a line that closes everything open (as the final cut prefers) ends it early; max_lines bounds the rest
    return len(whole) < len(finished) or any(_balanced(s, keep) for s in whole)


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
