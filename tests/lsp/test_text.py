"""Documents: LSP positions in UTF-16 (and UTF-8/32), LSP line breaks, incremental edits."""

from __future__ import annotations

import pytest

from dg_lsp.text import UTF8, UTF16, UTF32, Document, DocumentStore, Position, changed_end, code_units


def test_code_units_count_surrogate_pairs_twice_in_utf16():
    assert code_units("a😀b", UTF16) == 4
    assert code_units("a😀b", UTF32) == 3
    assert code_units("a😀b", UTF8) == 6
    assert code_units("\ud800", UTF16) == 1  # a lone surrogate is one UTF-16 unit


@pytest.mark.parametrize("character, offset", [(0, 0), (1, 1), (2, 1), (3, 2), (4, 3), (99, 3)])
def test_offset_rounds_down_inside_a_surrogate_pair_and_clamps_past_the_line(character, offset):
    doc = Document("u", "a😀b\nnext")
    assert doc.offset_at(Position(0, character)) == offset


def test_position_round_trip_through_astral_characters():
    text = "x = '😀'\n  🎉🎉 = 1\r\nlast"
    doc = Document("u", text)
    for offset in range(len(text) + 1):
        pos = doc.position_at(offset)
        back = doc.offset_at(pos)
        assert back == offset or text[offset - 1:offset + 1] == "\r\n"


def test_only_lsp_line_breaks_split_lines():
    doc = Document("u", "a\u2028b\x0cc\rd\r\ne\nf")
    assert doc.line_count == 4
    assert doc.offset_at(Position(1, 0)) == len("a\u2028b\x0cc\r")
    assert doc.offset_at(Position(2, 0)) == len("a\u2028b\x0cc\rd\r\n")
    assert doc.line_bounds(1) == (6, 7)


def test_line_past_the_end_means_the_end_of_the_document():
    doc = Document("u", "ab\ncd")
    assert doc.offset_at(Position(10, 3)) == 5
    assert doc.end_position() == Position(1, 2)


def test_utf8_encoding_positions():
    doc = Document("u", "é😀x", encoding=UTF8)
    assert doc.offset_at(Position(0, 2)) == 1
    assert doc.offset_at(Position(0, 6)) == 2
    assert doc.position_at(3) == Position(0, 7)


def test_incremental_edits_apply_in_order_and_track_the_edit_position():
    store = DocumentStore()
    store.open("u", "def f():\n    pass\n", 1, "python")
    doc = store.change("u", 2, [(Position(1, 4), Position(1, 8), "return 1"), (Position(0, 4), Position(0, 5), "g")])
    assert doc.text == "def g():\n    return 1\n"
    assert doc.version == 2
    assert doc.last_edit == 5
    doc = store.change("u", 3, [(None, None, "whole")])
    assert doc.text == "whole" and doc.last_edit == 5


@pytest.mark.parametrize("old, new, end", [
    ("abc\nxyz\n", "abc\nxYYz\n", 7),  # the edit ends after the inserted "YY"
    ("abc\n", "abc\nd\n", 6),  # appended
    ("abcdef", "abef", 2),  # a deletion ends where it was
    ("aaa", "aaaa", 4),  # prefix and suffix never overlap
    ("same", "same", None),
])
def test_whole_document_changes_find_the_edit_by_common_prefix_and_suffix(old, new, end):
    assert changed_end(old, new) == end


def test_edit_range_past_the_end_appends():
    doc = Document("u", "ab").replace(Position(5, 0), Position(9, 9), "!", 2)
    assert doc.text == "ab!"


def test_recent_lists_other_documents_most_recently_used_first_with_where_the_user_was():
    store = DocumentStore()
    for uri in ("a", "b", "c", "d"):
        store.open(uri, "x\ny\n", 1, "python")
    store.change("a", 2, [(Position(0, 0), Position(0, 0), "1")])  # edited incrementally
    store.change("c", 2, [(None, None, "x\nyz\n")])  # edited by a whole-document change
    store.viewed("d", 1)  # completed in
    assert [(r.doc.uri, r.focus) for r in store.recent("b", 5)] == [("d", 1), ("c", 4), ("a", 1)]
    assert [(r.doc.uri, r.focus) for r in store.recent("a", 5)] == [("d", 1), ("c", 4), ("b", None)]
    assert [r.doc.uri for r in store.recent("d", 2)] == ["c", "a"]
    assert store.change("missing", 1, []) is None


def test_eol_detection():
    assert Document("u", "a\r\nb").eol() == "\r\n"
    assert Document("u", "ab").eol() == "\n"
