"""Documents as the server sees them: immutable snapshots, LSP positions, incremental edits. Pure.

LSP positions count code units of the negotiated encoding (UTF-16 unless the client asked otherwise) and
lines end at "\\n", "\\r\\n" or "\\r" only; Python's `str.splitlines` also splits at form feeds and U+2028,
so the line index here is built by hand. A position inside a surrogate pair rounds down to the start of
the character; a character past the end of its line means the end of the line; a line past the end of the
document means the end of the document (as the specification asks).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"


def code_units(text: str, encoding: str = UTF16) -> int:
    """Length of `text` in the code units of `encoding`; lone surrogates count as one UTF-16 unit."""
    if encoding == UTF32:
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _column_to_index(line: str, units: int, encoding: str) -> int:
    """Index into `line` of the character that starts at `units` code units (rounded down, clamped)."""
    if units <= 0:
        return 0
    if encoding == UTF32 or line.isascii():
        return min(units, len(line))
    count = 0
    for i, ch in enumerate(line):
        width = code_units(ch, encoding)
        if count + width > units:
            return i
        count += width
    return len(line)


def changed_end(old: str, new: str) -> int | None:
    """Offset in `new` just after the part that differs from `old` (common prefix and suffix left out);
    None when the texts are equal."""
    if old == new:
        return None
    lo, hi = 0, min(len(old), len(new))
    while lo < hi:  # longest common prefix, by halving (slice comparisons run in C)
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if old[:mid] == new[:mid] else (lo, mid - 1)
    head = lo
    lo, hi = 0, min(len(old), len(new)) - head
    while lo < hi:  # longest common suffix that does not overlap the prefix
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if old[len(old) - mid:] == new[len(new) - mid:] else (lo, mid - 1)
    return len(new) - lo


@dataclass(frozen=True)
class Recent:
    """An open document as context for another one: where the user last was in it (its latest edit, or
    the cursor of its latest completion; None when it was only opened)."""

    doc: Document
    focus: int | None


@dataclass(frozen=True)
class Position:
    line: int
    character: int


@dataclass(frozen=True, eq=False)
class Document:
    """One version of one open document. Offsets are indices into `text` (code points)."""

    uri: str
    text: str
    version: int = 0
    language_id: str = ""
    encoding: str = UTF16
    last_edit: int | None = None  # offset of the most recent change, for cross-file context
    _starts: list[int] = field(default_factory=list, repr=False, compare=False)

    # --- line index -------------------------------------------------------------------------------------
    @property
    def line_starts(self) -> list[int]:
        if not self._starts:
            self._starts.append(0)
            self._starts.extend(m.end() for m in _LINE_BREAK.finditer(self.text))
        return self._starts

    @property
    def line_count(self) -> int:
        return len(self.line_starts)

    def line_bounds(self, line: int) -> tuple[int, int]:
        """(start, end) offsets of `line` without its line break."""
        starts = self.line_starts
        start = starts[line]
        end = starts[line + 1] if line + 1 < len(starts) else len(self.text)
        while end > start and self.text[end - 1] in "\r\n":
            end -= 1
        return start, end

    def line_at(self, offset: int) -> int:
        return bisect.bisect_right(self.line_starts, offset) - 1

    # --- conversions ------------------------------------------------------------------------------------
    def offset_at(self, position: Position) -> int:
        """Offset of an LSP position, clamped into the document."""
        line, character = max(0, position.line), max(0, position.character)
        if line >= self.line_count:
            return len(self.text)
        start, end = self.line_bounds(line)
        return start + _column_to_index(self.text[start:end], character, self.encoding)

    def position_at(self, offset: int) -> Position:
        offset = min(max(0, offset), len(self.text))
        line = self.line_at(offset)
        start, end = self.line_bounds(line)
        offset = min(offset, end)  # between "\r" and "\n" means the end of the line
        return Position(line, code_units(self.text[start:offset], self.encoding))

    def end_position(self) -> Position:
        return self.position_at(len(self.text))

    def eol(self) -> str:
        """The document's line ending, judged by its first line break ("\\n" when it has none)."""
        match = _LINE_BREAK.search(self.text, 0, 100_000)
        return match.group(0) if match else "\n"

    # --- edits ------------------------------------------------------------------------------------------
    def replace(self, start: Position | None, end: Position | None, new_text: str, version: int) -> "Document":
        """The next version: `new_text` replaces [start, end), or the whole text when no range is given."""
        if start is None or end is None:  # a whole-document change: the edit is where the texts differ
            edit = changed_end(self.text, new_text)
            return Document(self.uri, new_text, version, self.language_id, self.encoding,
                            self.last_edit if edit is None else edit)
        a, b = self.offset_at(start), self.offset_at(end)
        a, b = min(a, b), max(a, b)
        text = self.text[:a] + new_text + self.text[b:]
        return Document(self.uri, text, version, self.language_id, self.encoding, a + len(new_text))


class DocumentStore:
    """The open documents, latest version each, in order of most recent use (last = newest): opened,
    changed (incrementally or whole) or completed in.

    Lives on the server object and is only touched on the event loop; workers get `Document` snapshots.
    """

    def __init__(self, encoding: str = UTF16) -> None:
        self.encoding = encoding
        self._docs: dict[str, Document] = {}
        self._focus: dict[str, int] = {}  # uri -> offset of the latest edit or completion

    def __contains__(self, uri: object) -> bool:
        return uri in self._docs

    def __len__(self) -> int:
        return len(self._docs)

    def get(self, uri: str) -> Document | None:
        return self._docs.get(uri)

    def open(self, uri: str, text: str, version: int, language_id: str) -> Document:
        doc = Document(uri, text, version, language_id, self.encoding)
        self._docs.pop(uri, None)
        self._docs[uri] = doc
        self._focus.pop(uri, None)
        return doc

    def change(self, uri: str, version: int,
               changes: list[tuple[Position | None, Position | None, str]]) -> Document | None:
        doc = self._docs.pop(uri, None)
        if doc is None:
            return None
        for start, end, new_text in changes:
            doc = doc.replace(start, end, new_text, version)
        if not changes:
            doc = Document(doc.uri, doc.text, version, doc.language_id, doc.encoding, doc.last_edit)
        self._docs[uri] = doc  # re-inserted: most recently used last
        if changes and doc.last_edit is not None:
            self._focus[uri] = doc.last_edit
        return doc

    def viewed(self, uri: str, offset: int) -> None:
        """A completion was asked at `offset`: the document becomes the most recently used."""
        doc = self._docs.pop(uri, None)
        if doc is not None:
            self._docs[uri] = doc
            self._focus[uri] = offset

    def close(self, uri: str) -> None:
        self._docs.pop(uri, None)
        self._focus.pop(uri, None)

    def recent(self, exclude: str, limit: int) -> list[Recent]:
        """Up to `limit` other documents, most recently used first, each with where the user was in it."""
        out = []
        for doc in reversed(self._docs.values()):
            if doc.uri != exclude:
                focus = self._focus.get(doc.uri)
                out.append(Recent(doc, None if focus is None else min(focus, len(doc.text))))
                if len(out) >= limit:
                    break
        return out
