"""Context building: windows within the budget, mode choice, other documents, token fitting."""

from __future__ import annotations

import pytest

from dg_lsp.engine.errors import RequestError
from dg_lsp.engine.request import Hole, InfillRequest
from dg_lsp.context import build_cursor_context, cache_key, choose_mode, fit_request, other_files_tokens
from dg_lsp.options import ContextOptions
from dg_lsp.text import Document, DocumentStore, Position, Recent

CURSOR = "█"


def ctx_at(marked: str, automatic: bool = False, options: ContextOptions | None = None, others=(), language="python",
           roots=()):
    offset = marked.index(CURSOR)
    doc = Document("file:///a.py", marked.replace(CURSOR, ""), 3, language)
    return build_cursor_context(doc, offset, automatic=automatic, options=options or ContextOptions(),
                                line_canvas=16, block_canvas=48, others=others, roots=roots)


@pytest.mark.parametrize("line_prefix, line_suffix, automatic, mode", [
    ("x = foo(", ")", True, "line"),  # text after the cursor: finish this line
    ("x = foo(", ")", False, "line"),
    ("    ", "", True, "block"),  # blank line: a block
    ("def f():", "", True, "block"),  # after a block opener
    ("if (x) {", "", True, "block"),
    ("x = compu", "", True, "line"),  # typing mid-statement
    ("x = compu", "", False, "block"),  # explicitly invoked at the end of a line
])
def test_choose_mode(line_prefix, line_suffix, automatic, mode):
    assert choose_mode(line_prefix, line_suffix, automatic) == mode


def test_context_splits_at_the_cursor_and_picks_the_canvas_by_mode():
    ctx = ctx_at("def f():\n    █\n\nprint(f())\n")
    assert ctx.prefix == "def f():\n    " and ctx.suffix == "\n\nprint(f())\n"
    assert ctx.mode == "block" and ctx.canvas == 48
    assert ctx.line_prefix == "    " and ctx.line_suffix == ""
    line = ctx_at("x = f(█)\n", automatic=True)
    assert line.mode == "line" and line.canvas == 16 and line.line_suffix == ")"


def test_windows_respect_the_character_budget_and_cut_at_line_starts():
    lines = [f"line_{i} = {i}\n" for i in range(2000)]
    text = "".join(lines[:1000]) + "█" + "".join(lines[1000:])
    options = ContextOptions(budget=100, chars_per_token=4.0, suffix_share=0.25, other_documents=False)
    ctx = ctx_at(text, options=options)
    assert len(ctx.prefix) <= 300 and len(ctx.suffix) <= 100
    assert ctx.prefix.startswith("line_") and ctx.prefix.endswith("\n")
    assert ctx.suffix.endswith("\n")
    assert ctx.request().prefix == ctx.prefix


def test_unused_suffix_budget_goes_to_the_prefix():
    text = "".join(f"v{i} = {i}\n" for i in range(500)) + "█"
    options = ContextOptions(budget=100, chars_per_token=4.0, other_documents=False)
    ctx = ctx_at(text, options=options)
    assert ctx.suffix == "" and 300 < len(ctx.prefix) <= 400


def test_a_single_long_line_is_cut_mid_line():
    ctx = ctx_at("x" * 10_000 + "█", options=ContextOptions(budget=16, chars_per_token=4.0))
    assert ctx.prefix == "x" * 64


def test_word_start_covers_the_identifier_being_typed():
    ctx = ctx_at("    retu█\n")
    assert ctx.offset - ctx.word_start == 4


UTIL, OTHER = "file:///w/lib/util.py", "file:///w/other.py"


def two_others() -> DocumentStore:
    """util.py edited on its last line, then other.py (200 lines) opened: other.py is the most recent."""
    store = DocumentStore()
    store.open(UTIL, "def helper(x):\n    return x * 2\n", 1, "python")
    store.change(UTIL, 2, [(Position(1, 15), Position(1, 16), "3")])
    store.open(OTHER, "".join(f"o{i} = {i}\n" for i in range(200)), 1, "python")
    return store


def test_other_documents_come_most_recent_first_each_under_its_relative_path():
    store = two_others()
    ctx = ctx_at("y = █\n", others=store.recent("file:///a.py", 3), roots=["file:///w"])
    assert ctx.extra.startswith("# other.py\no0 = 0\n")  # only opened: its top
    assert ctx.extra.endswith("# lib/util.py\ndef helper(x):\n    return x * 3\n\n")
    assert ctx.request().prefix == ctx.extra + "y = "
    store.viewed(UTIL, 0)
    ctx = ctx_at("y = █\n", others=store.recent("file:///a.py", 3), roots=["file:///w"])
    assert ctx.extra.startswith("# lib/util.py\n") and "\n# other.py\n" in ctx.extra
    js = ctx_at("y = █\n", others=store.recent("file:///a.py", 3), language="typescript")
    assert js.extra.startswith("// util.py\n")  # outside every root: the file name
    off = ctx_at("y = █\n", others=store.recent("file:///a.py", 3), options=ContextOptions(other_documents=False))
    assert off.extra == ""


def test_a_chunk_is_centred_on_where_the_user_was_and_never_the_document_itself():
    store = two_others()
    store.viewed(OTHER, store.get(OTHER).offset_at(Position(150, 0)))
    itself = Recent(Document("file:///a.py", "SELF = 1\n", 1, "python"), 0)
    ctx = ctx_at("y = █\n", others=[itself, *store.recent("file:///a.py", 3)])
    assert "SELF" not in ctx.extra
    other = ctx.extra[:ctx.extra.index("# util.py")]
    assert "o150 = 150\n" in other and "o140 = 140\n" in other and "o0 = 0\n" not in other


def tokens4(text: str) -> int:
    return -(-len(text) // 4)


def fitted_parts(text: str, budget: int, other_files_budget: int, context_limit: int | None = None):
    """(other files' part, near code before the cursor) of the fitted request at the end of `text`."""
    options = ContextOptions(budget=budget, other_files_budget=other_files_budget, chars_per_token=4.0)
    ctx = ctx_at(text, options=options, others=two_others().recent("file:///a.py", 3))
    fitted = fit_request(ctx.request(), tokens4, budget, options.suffix_share, context_limit, len(ctx.extra),
                         other_files_tokens(options))
    cut = fitted.prefix.find("line_")
    return fitted.prefix[:cut], fitted.prefix[cut:], ctx


LONG = "".join(f"line_{i} = {i}\n" for i in range(2000)) + "█"


def test_other_files_keep_their_reserved_tokens_when_the_code_around_the_cursor_is_long():
    other, near, ctx = fitted_parts(LONG, budget=200, other_files_budget=50)
    assert other.startswith("# other.py\n") and "# util.py\n" in other
    assert 30 <= tokens4(other) <= 50 and 150 <= tokens4(near) <= 200 - tokens4(other) + 1  # it gets what they leave
    assert near.endswith("line_1999 = 1999\n") and not near.startswith("line_0 =")


def test_a_short_window_shrinks_the_reserved_part_first():
    # the model's context leaves 170 of the 200 tokens (48 canvas + 8 special): the other files lose 30
    other, near, _ = fitted_parts(LONG, budget=200, other_files_budget=50, context_limit=170 + 48 + 8)
    assert tokens4(other) <= 21 and tokens4(near) >= 145 and tokens4(other + near) <= 170
    other, near, _ = fitted_parts(LONG, budget=200, other_files_budget=50, context_limit=100 + 48 + 8)
    assert other == "" and 90 <= tokens4(near) <= 100


def test_the_code_around_the_cursor_keeps_at_least_half_the_window():
    assert other_files_tokens(ContextOptions(budget=200, other_files_budget=16384)) == 100
    assert other_files_tokens(ContextOptions(budget=200, other_documents=False)) == 0
    other, near, _ = fitted_parts(LONG, budget=200, other_files_budget=16384)
    assert tokens4(other) <= 100 and tokens4(near) >= 100


def test_other_files_take_what_a_short_document_leaves():
    other, near, _ = fitted_parts("line_0 = 0\n█", budget=200, other_files_budget=50)
    assert near == "line_0 = 0\n" and tokens4(other) > 50


def test_crlf_documents_report_their_line_ending():
    ctx = ctx_at("a = 1\r\nb = █\r\n")
    assert ctx.eol == "\r\n" and ctx.line_prefix == "b = " and ctx.line_suffix == ""


def test_cache_key_depends_on_text_and_settings():
    a = InfillRequest.at_cursor("x = ", "\n", 16)
    assert cache_key(a, ("s", 1)) == cache_key(InfillRequest.at_cursor("x = ", "\n", 16), ("s", 1))
    assert cache_key(a, ("s", 1)) != cache_key(a, ("s", 2))
    assert cache_key(a, ("s", 1)) != cache_key(InfillRequest.at_cursor("x = ", "\n", 17), ("s", 1))
    assert cache_key(a, ("s", 1)) != cache_key(InfillRequest.at_cursor("x =", " \n", 16), ("s", 1))


def count_words(text: str) -> int:
    return len(text.split())


def test_fit_request_trims_outer_segments_to_the_token_budget():
    prefix = "".join(f"a{i} b{i}\n" for i in range(100))  # 200 words
    suffix = "".join(f"c{i} d{i}\n" for i in range(100))
    fitted = fit_request(InfillRequest.at_cursor(prefix, suffix, 8), count_words, budget=40, suffix_share=0.25)
    assert count_words(fitted.prefix) + count_words(fitted.suffix) <= 40
    assert prefix.endswith(fitted.prefix) and suffix.startswith(fitted.suffix)
    assert count_words(fitted.prefix) >= 20  # the prefix keeps the larger share


def test_fit_request_keeps_inner_segments_and_grows_rewrite_canvases():
    request = InfillRequest(segments=("pre " * 50, " mid ", " post" * 50), holes=(Hole(4), Hole(4)))
    fitted = fit_request(request, count_words, budget=30)
    assert fitted.segments[1] == " mid "
    rewrite = InfillRequest.rewrite("a\n", "one two three four five six", "\nb", canvas=2)
    assert fit_request(rewrite, count_words, budget=30).holes[0].canvas == 6 + 4


def test_fit_request_refuses_holes_whose_text_between_cannot_fit_the_model():
    between = " ".join(["w"] * 50)
    request = InfillRequest(segments=("a", between, between, "z"), holes=(Hole(canvas=8),) * 3)
    with pytest.raises(RequestError, match=r"the canvases \(24 tokens for 3 holes\) \+ 100 tokens of text between "
                                           r"them exceed the model's context of 128 tokens"):
        fit_request(request, count_words, budget=200, context_limit=128)
    assert fit_request(request, count_words, budget=200, context_limit=256).segments[1] == between
