"""What the model sees for a cursor completion. Pure: (document, offset, options) -> CursorContext.

The prefix and suffix windows are cut at line boundaries within a character budget derived from the
token budget (`budget * chars_per_token`); the worker trims them to the exact token budget with the
backend's tokenizer (`fit_request`) before the engine runs. Chunks of recently edited and viewed other open
documents go in front of the prefix, each under a comment naming its file, within a part of the window
reserved for them (`other_files_tokens`) that `fit_request` trims apart from the prefix.

Mode: **line** (stop at the end of the line) when the cursor line has text after the cursor, or when the
trigger is automatic and the cursor is mid-statement; **block** (stop at dedent) when the cursor is on a
blank line, after a block opener (`:`, `{`, ...), or completion was invoked explicitly at the end of a line.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Callable, Literal, Sequence
from urllib.parse import unquote

from dg_lsp.engine.errors import RequestError
from dg_lsp.engine.request import MAX_CANVAS, InfillRequest
from dg_lsp.options import ContextOptions, Options
from dg_lsp.text import Document, Recent

Mode = Literal["line", "block"]

BLOCK_OPENERS = (":", "{", "(", "[", "=>", "->", "then", "do", "begin")

_LINE_COMMENT = {
    "python": "#", "ruby": "#", "shellscript": "#", "sh": "#", "bash": "#", "perl": "#", "r": "#",
    "yaml": "#", "toml": "#", "makefile": "#", "dockerfile": "#", "elixir": "#", "julia": "#",
    "lua": "--", "sql": "--", "haskell": "--",
    "lisp": ";", "clojure": ";", "scheme": ";",
}


def comment_prefix(language_id: str) -> str:
    return _LINE_COMMENT.get(language_id.lower(), "//")


def is_word_char(ch: str) -> bool:
    return ch == "_" or ch.isalnum()


def word_start_at(text: str, offset: int, line_start: int) -> int:
    """Where the identifier being typed at `offset` starts (`offset` when none; never before `line_start`)."""
    start = offset
    while start > line_start and is_word_char(text[start - 1]):
        start -= 1
    return start


@dataclass(frozen=True)
class CursorContext:
    uri: str
    version: int
    language_id: str
    offset: int  # cursor offset in the document
    prefix: str  # document text before the cursor, within the window
    suffix: str  # document text after the cursor, within the window
    extra: str  # chunks of other documents, in front of the prefix (fit_request's `other_chars`)
    mode: Mode
    line_prefix: str  # the cursor line up to the cursor
    line_suffix: str  # the cursor line after the cursor, without the line break
    word_start: int  # offset where the identifier being typed starts (== offset when none)
    canvas: int
    eol: str

    def request(self) -> InfillRequest:
        return InfillRequest.at_cursor(self.extra + self.prefix, self.suffix, self.canvas)


def choose_mode(line_prefix: str, line_suffix: str, automatic: bool) -> Mode:
    if line_suffix.strip():
        return "line"
    head = line_prefix.rstrip()
    if not head:
        return "block"
    if head.endswith(BLOCK_OPENERS):
        return "block"
    return "line" if automatic else "block"


def window_start(text: str, offset: int, chars: int) -> int:
    """Start of a window of at most `chars` characters ending at `offset`, moved forward to a line start."""
    start = max(0, offset - chars)
    if start == 0:
        return 0
    newline = text.find("\n", start, offset)
    return newline + 1 if newline != -1 else start  # a single line longer than the budget is cut mid-line


def window_end(text: str, offset: int, chars: int) -> int:
    end = min(len(text), offset + chars)
    if end == len(text):
        return end
    newline = text.rfind("\n", offset, end)
    return newline + 1 if newline != -1 else end


def other_files_tokens(options: ContextOptions) -> int:
    """Tokens of the window reserved for other open documents: option context.otherFilesBudget, at most
    half of context.budget (the code around the cursor keeps priority)."""
    return min(options.other_files_budget, options.budget // 2) if options.other_documents else 0


def relative_name(uri: str, roots: Sequence[str]) -> str:
    """The document's path relative to the first workspace root that holds it, else its file name."""
    for root in roots:
        root = root.rstrip("/") + "/"
        if uri.startswith(root):
            return unquote(uri[len(root):])
    return unquote(uri.rsplit("/", 1)[-1])


def recent_chunk(doc: Document, focus: int | None, chars: int) -> str:
    """Whole lines around `focus` (the top of the document when None), growing up and down alternately
    while they fit in `chars` characters; a first line longer than that is cut."""
    if chars <= 0 or not doc.text:
        return ""
    line = doc.line_at(min(focus, len(doc.text))) if focus is not None else 0
    first = last = line
    if doc.line_bounds(line)[1] - doc.line_starts[line] > chars:
        return doc.text[doc.line_starts[line]:doc.line_starts[line] + chars]
    def fits(a: int, b: int) -> bool:
        return a >= 0 and b < doc.line_count and doc.line_bounds(b)[1] - doc.line_starts[a] <= chars

    while fits(first - 1, last) or fits(first, last + 1):
        if fits(first - 1, last):
            first -= 1
        if fits(first, last + 1):
            last += 1
    return doc.text[doc.line_starts[first]:doc.line_bounds(last)[1]]


def other_documents_context(others: Sequence[Recent], language_id: str, chars: int,
                            roots: Sequence[str] = ()) -> str:
    """Chunks of other documents within `chars` characters, most recently used first (each gets up to half
    of what is left; the last gets all of it), each under a comment line naming its file."""
    out: list[str] = []
    left = chars
    mark = comment_prefix(language_id)
    for i, recent in enumerate(others):
        header = f"{mark} {relative_name(recent.doc.uri, roots)}\n"
        share = left if i == len(others) - 1 else left // 2
        chunk = recent_chunk(recent.doc, recent.focus, share - len(header) - 2).rstrip()
        if not chunk.strip():
            continue
        piece = f"{header}{chunk}\n\n"
        out.append(piece)
        left -= len(piece)
    return "".join(out)


def build_cursor_context(
    doc: Document,
    offset: int,
    *,
    automatic: bool,
    options: ContextOptions,
    line_canvas: int,
    block_canvas: int,
    others: Sequence[Recent] = (),
    roots: Sequence[str] = (),
) -> CursorContext:
    text = doc.text
    offset = min(max(0, offset), len(text))
    line = doc.line_at(offset)
    line_start, line_end = doc.line_bounds(line)
    offset = min(offset, line_end)
    line_prefix, line_suffix = text[line_start:offset], text[offset:line_end]
    mode = choose_mode(line_prefix, line_suffix, automatic)

    chars = int(options.budget * options.chars_per_token)
    other_chars = int(other_files_tokens(options) * options.chars_per_token)
    if other_chars:  # what a short document leaves goes to them too
        other_chars += max(0, chars - other_chars - len(text))
    others = [r for r in others if r.doc.uri != doc.uri]  # never the document itself
    extra = other_documents_context(others, doc.language_id, other_chars, roots) if other_chars else ""
    chars -= len(extra)
    suffix_chars = int(chars * options.suffix_share)
    after = len(text) - offset
    if after < suffix_chars:  # unused suffix budget goes to the prefix
        suffix_chars = after
    prefix_chars = chars - suffix_chars
    if offset < prefix_chars:  # and unused prefix budget to the suffix
        suffix_chars += prefix_chars - offset
        prefix_chars = offset

    start = window_start(text, offset, prefix_chars)
    end = window_end(text, offset, suffix_chars)
    return CursorContext(
        uri=doc.uri, version=doc.version, language_id=doc.language_id, offset=offset,
        prefix=text[start:offset], suffix=text[offset:end], extra=extra, mode=mode,
        line_prefix=line_prefix, line_suffix=line_suffix, word_start=word_start_at(text, offset, line_start),
        canvas=line_canvas if mode == "line" else block_canvas, eol=doc.eol(),
    )


def cache_key(request: InfillRequest, settings: object) -> str:
    """Hash of everything that determines the engine's output for a request."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(settings).encode("utf-8", "surrogatepass"))
    for segment in request.segments:
        h.update(b"\x00seg\x00" + segment.encode("utf-8", "surrogatepass"))
    for hole in request.holes:
        h.update(f"\x00hole{hole.canvas}\x00".encode() + hole.init.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _drop_head_lines(text: str, chars: int) -> str:
    """Drop at least `chars` characters from the front, then up to the next line start."""
    if chars >= len(text):
        return ""
    newline = text.find("\n", chars)
    return text[newline + 1:] if newline != -1 and newline - chars < 200 else text[chars:]


def _drop_tail_lines(text: str, chars: int) -> str:
    if chars >= len(text):
        return ""
    cut = len(text) - chars
    newline = text.rfind("\n", 0, cut)
    return text[:newline + 1] if newline != -1 and cut - newline < 200 else text[:cut]


# --- what fits the model -----------------------------------------------------------------------------

SPECIAL_TOKENS = 8  # room a request keeps for special tokens and BOS besides its context and canvases


def context_reserve(options: ContextOptions, limit: int) -> int:
    """Tokens of prefix/suffix context a request keeps at the least: the prompt budget (option
    context.budget), at most a quarter of the model's context."""
    return min(options.budget, limit // 4)


def canvas_room(options: ContextOptions, limit: int) -> int:
    """The most canvas tokens (all holes together) that one request may hold in a model of `limit` tokens."""
    return max(0, limit - context_reserve(options, limit) - SPECIAL_TOKENS)


def holes_beyond_limit(holes: int, canvas: int, options: ContextOptions, limit: int) -> str | None:
    """Why `holes` holes of `canvas` tokens do not fit the model (None when they do)."""
    room = canvas_room(options, limit)
    if holes * canvas <= room:
        return None
    fit = room // canvas
    expected = (f"expected at most {fit} holes (option holes.maxHoles) or a smaller holes.canvas" if fit else
                f"expected holes.canvas at most {room}")
    return (f"{holes} holes x {canvas} tokens + {context_reserve(options, limit)} tokens of context exceed the "
            f"model's context of {limit} tokens: {expected}")


def canvas_limit_problems(options: Options, limit: int) -> list[str]:
    """One message per canvas option that cannot fit the model; such a canvas is used at `canvas_room`."""
    room, reserve = canvas_room(options.context, limit), context_reserve(options.context, limit)
    return [f"option {name} = {value} exceeds the model's context of {limit} tokens (with {reserve} tokens of "
            f"context): expected at most {room}; using {room}"
            for name, value in (("inline.lineCanvas", options.inline.line_canvas),
                                ("inline.blockCanvas", options.inline.block_canvas),
                                ("holes.canvas", options.holes.canvas))
            if value > room]


def _fit_tail(text: str, count_tokens: Callable[[str], int], room: int) -> str:
    """`text` (whole lines) cut from its end at line starts to `room` tokens (other files: the least recent
    go first); nothing when no more than the first line (a file's name) would be left."""
    tokens = count_tokens(text)
    for _ in range(12):
        if tokens <= room or not text:
            break
        cut = text.rfind("\n", 0, max(0, len(text) - 1 - int(len(text) * (tokens - room) / max(tokens, 1))))
        text = text[:cut + 1]
        tokens = count_tokens(text)
    return text if tokens <= room and text.count("\n") >= 2 else ""


def fit_request(request: InfillRequest, count_tokens: Callable[[str], int], budget: int,
                suffix_share: float = 0.25, context_limit: int | None = None,
                other_chars: int = 0, other_tokens: int = 0) -> InfillRequest:
    """Trim the outer segments to `budget` tokens (measured by the backend's tokenizer) and give rewrite
    holes room for their initial text. Inner segments (between holes) are kept whole. With a
    `context_limit` (the model's positions), context plus canvases stay under it too.

    The first `other_chars` characters of the first segment are other files' context with `other_tokens`
    reserved for them: the code near the cursor is trimmed to the rest of the budget, then they take what
    it leaves (their tail goes first). When the model's context cuts the budget, the reserved part gives
    up those tokens first.
    """
    nominal = budget
    holes = tuple(
        dataclasses.replace(h, canvas=min(MAX_CANVAS, max(h.canvas, count_tokens(h.init) + 4))) if h.init else h
        for h in request.holes
    )
    if context_limit:
        budget = max(0, min(budget, context_limit - sum(h.canvas for h in holes) - SPECIAL_TOKENS))
    segments = list(request.segments)
    head, segments[0] = segments[0][:other_chars], segments[0][other_chars:]
    inner = sum(count_tokens(s) for s in segments[1:-1]) if len(segments) > 2 else 0
    canvases = sum(h.canvas for h in holes)
    if context_limit and inner + canvases + SPECIAL_TOKENS > context_limit:
        raise RequestError(f"the canvases ({canvases} tokens for {len(holes)} holes) + {inner} tokens of text between "
                           f"them exceed the model's context of {context_limit} tokens: expected fewer or shorter "
                           f"holes, or holes closer together")
    total = max(0, budget - inner)
    reserved = max(0, min(other_tokens, budget) - (nominal - budget))  # a short window shrinks it first
    head_tokens = count_tokens(head) if head else 0
    room = max(0, total - min(head_tokens, reserved))
    suffix_room = int(room * suffix_share)
    pre, suf = count_tokens(segments[0]), count_tokens(segments[-1])
    for _ in range(12):  # proportional cuts converge in two or three rounds
        if pre + suf <= room:
            break
        if suf > suffix_room and suf > room - pre:  # trim the suffix down to its share first
            excess = min(suf - suffix_room, pre + suf - room)
            segments[-1] = _drop_tail_lines(segments[-1], max(1, int(len(segments[-1]) * excess / max(suf, 1)) + 1))
            suf = count_tokens(segments[-1])
        else:
            excess = pre + suf - room
            segments[0] = _drop_head_lines(segments[0], max(1, int(len(segments[0]) * excess / max(pre, 1)) + 1))
            pre = count_tokens(segments[0])
    if head:
        segments[0] = _fit_tail(head, count_tokens, max(0, total - pre - suf)) + segments[0]
    if not any(segments) and not any(h.init for h in holes):
        return request  # nothing left to trim to; let the engine reject it with its own message
    return InfillRequest(segments=tuple(segments), holes=holes)
