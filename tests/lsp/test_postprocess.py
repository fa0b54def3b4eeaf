"""Golden tests of post-processing: (document with cursor, trigger, raw model text) -> offered text."""

from __future__ import annotations

import pytest

from dg_lsp.options import ContextOptions
from dg_lsp.postprocess import (C_LIKE, PYTHON, Completion, as_item_edit, block_ended, continue_shown, line_ended,
                                postprocess,
                                remember, scan, stop_at_dedent, trim_special)

from .test_context import ctx_at

# (name, document with █ at the cursor, automatic trigger, raw engine text, expected text or None)
GOLDEN = [
    ("line: stop at the end of the line", "x = █\n", True, "compute(1)\ny = 2", "compute(1)"),
    ("line: auto-closed bracket", "print(█)\n", True, '"hi")', '"hi"'),
    ("line: auto-closed quote", 's = "█"\n', True, 'hello"', "hello"),
    ("line: re-typed rest of line", "f(█, b)\n", True, "a, b)", "a"),
    ("line: closers plus colon", "if ok(█):\n", True, "x):", "x"),
    ("line: only repeats the suffix", "foo(█)\n", True, ")", None),
    ("line: starts with a line break", "x = 1█ + 2\n", True, "\nfoo", None),
    ("empty", "x = █\n", True, "", None),
    ("whitespace only", "x = █\n", True, "   \t", None),
    ("pad/EOS leftovers end the text", "x = █\n", True, "abc<|endoftext|>zzz", "abc"),
    ("mask leftovers end the text", "x = █\n", True, "ab<|mask|><|mask|>", "ab"),
    ("block: stop at dedent", "def add(a, b):\n    █\n\nprint(add(1, 2))\n", False,
     "return a + b\n\ndef sub(a, b):\n    return a - b", "return a + b"),
    ("block: after an opener, stop at the opener's indentation", "def f():█\n", True,
     "\n    x = 1\n    return x\nclass A:\n    pass", "\n    x = 1\n    return x"),
    ("block: keep the closing bracket line", "int f() {█\n", True,
     "\n    return 1;\n}\nint g() {", "\n    return 1;\n}"),
    ("block: drop lines that already follow the cursor", "if x:\n    █\n    return y\n", False,
     "y = 2\n    return y", "y = 2"),
    ("block: only repeats the following line", "█\nprint(1)\n", False, "print(1)", None),
    ("block: sibling statements stay", "def f():\n    a = 1\n    █\n", False,
     "b = 2\n    c = 3\n\nf()", "b = 2\n    c = 3"),
    ("block: trailing blank lines trimmed", "█", False, "import os\nimport sys\n\n\n", "import os\nimport sys"),
    ("block: CRLF document gets CRLF", "def f():\r\n    █\r\n", False, "a = 1\n    b = 2", "a = 1\r\n    b = 2"),
    ("block: CR LF from the model normalised", "def f():\n    █\n", False, "a = 1\r\n    b = 2", "a = 1\n    b = 2"),
    ("lone surrogate survives", "x = █\n", True, "'\ud800'", "'\ud800'"),
    ("tabs count as indentation", "def f():\n\t█\n", False, "a = 1\n\tb = 2\nc = 3", "a = 1\n\tb = 2"),
]

# Stop at the end of the syntactic unit: brackets and strings, not just line breaks and indentation.
# (name, document with █ at the cursor, automatic trigger, raw engine text, expected text or None, language)
UNITS = [
    ("block: a call spanning lines is kept whole", "def f():\n    █\n", False,
     "x = g(1,\n2,\n)\n    return x\ny = 1", "x = g(1,\n2,\n)\n    return x", "python"),
    ("line: an opened bracket continues to its close", "x = █\n", True,
     "foo(a,\n      b)\ny = 2", "foo(a,\n      b)", "python"),
    ("line: a bracket left open before the cursor continues too", "x = foo(a, █\n", True,
     "b,\n    c)\ny = 2", "b,\n    c)", "python"),
    ("line: a closed statement still stops at its line", "x = █\n", True, "foo(a)\ny = 2", "foo(a)", "python"),
    ("line: a bracket never closed within max lines shows what precedes it", "x = █\n", True,
     "foo(" + "a,\n" * 20, "foo", "python"),
    ("line: nothing balanced before the unclosed bracket shows nothing", "x = █\n", True,
     "(" + "a,\n" * 20, None, "python"),
    ("block: out of canvas mid-call, cut back to the last statement", "def f():\n    █\n", False,
     "a = 1\n    b = g(1,\n          2", "a = 1", "python"),
    ("block: no complete statement, its balanced beginning", "def f():\n    █\n", False,
     "b = g(1,\n          2", "b = g", "python"),
    ("block: out of canvas in a string, cut back", "def f():\n    █\n", False,
     'a = 1\n    s = """doc\n    more', "a = 1", "python"),
    ("line: brackets in a string are ignored", "x = █\n", True, 'f("(", 1)\ny', 'f("(", 1)', "python"),
    ("line: brackets in a comment are ignored", "x = █\n", True, "f(1)  # g(\ny", "f(1)  # g(", "python"),
    ("line: a triple-quoted string spans lines", "x = █\n", True, '"""a (\nb"""\ny', '"""a (\nb"""', "python"),
    ("line: a string never closed is cut before it", "x = █\n", True, 'f(1) + "abc', "f(1) +", "python"),
    ("line: suffix closer is not closed again", "foo(█)\n", True, "a), b", "a", "python"),
    ("line: suffix closer, overlap still removed", "print(█)\n", True, '"hi")', '"hi"', "python"),
    ("line: a stray closer ends the text", "x = █\n", True, "a] + b", "a", "python"),
    ("block: suffix closing line respected", "x = [\n    1,\n    █\n]\n", False,
     "2,\n    3,\n]\ny = 1", "2,\n    3,", "python"),
    ("block: a bracket left open is closed by the completion", "x = [\n    1,\n    █\n", False,
     "2,\n]\ny = 1", "2,\n]", "python"),
    ("c: // comments hide brackets", "int f() {█\n", True,
     "\n    g(1); // (\n    return 1;\n}\nint g() {", "\n    g(1); // (\n    return 1;\n}", "c"),
    ("c: a '#' is not a comment", "int x = █\n", True, "h('#', '(');\nint y;", "h('#', '(');", "cpp"),
    ("python: '//' is not a comment", "x = █\n", True, "a // (b\n+ 1)\ny", "a // (b\n+ 1)", "python"),
]


@pytest.mark.parametrize("name, marked, automatic, raw, expected, language", UNITS, ids=[u[0] for u in UNITS])
def test_stops_at_the_end_of_the_syntactic_unit(name, marked, automatic, raw, expected, language):
    ctx = ctx_at(marked, automatic=automatic, options=ContextOptions(other_documents=False), language=language)
    result = postprocess(raw, ctx, max_lines=12)
    if expected is None:
        assert result is None
    else:
        assert result == Completion(expected, ctx.offset, ctx.offset)


@pytest.mark.parametrize("text, syntax, open_, quote", [
    ("f(a, [b", PYTHON, ("(", "["), ""),
    ("f(')', \"]\")", PYTHON, (), ""),
    ("x = '''(\n", PYTHON, (), "'''"),
    ("f(  # )", PYTHON, ("(",), ""),
    ("f(  // )", C_LIKE, ("(",), ""),
    ("s = 'it\\'s (", PYTHON, (), "'"),
])
def test_scan_tracks_brackets_outside_strings_and_comments(text, syntax, open_, quote):
    state = scan(text, syntax).lines[-1]
    assert (state.open, state.quote) == (open_, quote)


@pytest.mark.parametrize("name, marked, automatic, raw, expected", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden(name, marked, automatic, raw, expected):
    ctx = ctx_at(marked, automatic=automatic, options=ContextOptions(other_documents=False))
    result = postprocess(raw, ctx, max_lines=12)
    if expected is None:
        assert result is None
    else:
        assert result == Completion(expected, ctx.offset, ctx.offset)


def test_block_mode_stops_at_max_lines():
    ctx = ctx_at("def f():\n    █\n", automatic=False)
    raw = "\n".join(f"    x{i} = {i}" for i in range(40)).lstrip()
    result = postprocess(raw, ctx, max_lines=5)
    assert result.text.count("\n") == 4


def test_stop_at_dedent_on_blank_prefix_uses_the_first_real_line():
    assert stop_at_dedent("\n    a\n    b\nc", "", 12) == "\n    a\n    b"


def test_trim_special_keeps_ordinary_angle_brackets():
    assert trim_special("a < b and c > d") == "a < b and c > d"
    assert trim_special("List<String> x") == "List<String> x"
    assert trim_special("x</s>y") == "x"


def test_item_edit_replaces_the_word_being_typed():
    marked = "    retu█\n"
    ctx = ctx_at(marked, automatic=True)
    completion = postprocess("rn x", ctx)
    item = as_item_edit(completion, ctx.word_start, marked.replace("█", ""))
    assert item == Completion("return x", ctx.offset - 4, ctx.offset)


def test_typing_into_a_shown_completion_offers_the_rest():
    text = "def f():\n    \n"
    ctx = ctx_at("def f():\n    █\n")
    shown = remember(ctx, Completion("return 42", ctx.offset, ctx.offset), text)
    typed = text[:ctx.offset] + "ret" + text[ctx.offset:]
    assert continue_shown(shown, typed, ctx.offset + 3) == Completion("urn 42", ctx.offset + 3, ctx.offset + 3)
    diverged = text[:ctx.offset] + "rex" + text[ctx.offset:]
    assert continue_shown(shown, diverged, ctx.offset + 3) is None
    assert continue_shown(shown, text, ctx.offset) is None  # nothing typed: ask the model again
    whole = text[:ctx.offset] + "return 42" + text[ctx.offset:]
    assert continue_shown(shown, whole, ctx.offset + 9) is None  # fully typed out
    moved = "# edit\n" + typed
    assert continue_shown(shown, moved, ctx.offset + 3) is None  # text before it changed


@pytest.mark.parametrize("marked, text, ended", [
    ("def add(a, b):\n    █\n", "total = a\n    total += b\n", False),  # still in the block: continue
    ("def add(a, b):\n    █\n", "return a\nprint(1)", True),  # dedent
    ("def add(a, b):\n    █\n", "x = f(\n1,\n", False),  # a line inside brackets never ends the block
    ("def add(a, b):\n    █\n", "return a)", True),  # a closer it did not open
    ("def add(a, b):\n    █\n", "x = 1<|endoftext|>", True),
    ("def add(a, b):\n    █\n", "a = 1\n" * 3, True),  # past max_lines=3
])
def test_block_ended_is_the_stop_rule_between_canvases(marked, text, ended):
    assert block_ended(text, ctx_at(marked), max_lines=3) is ended


@pytest.mark.parametrize("marked, text, ended", [
    ("x = █\n", "compute(1, 2", False),  # no break yet: the line goes on into the next canvas
    ("x = █\n", "compute(1, 2)\ny = 3", True),  # a break after a whole statement
    ("x = █\n", "compute(1,\n      2", False),  # a break inside the brackets it opened
    ("x = █\n", "compute(1,\n      2)\n", True),  # ... and the line that closes them
    ("f(█)\n", "a, b)", True),  # closes the bracket the suffix already closes: a closer it did not open
    ("x = █\n", "'abc\nd", True),  # a line broken inside a string
    ("x = █\n", "ab<|endoftext|>", True),
    ("x = [█\n", "1, 2,\n", False),  # inside the prefix's open bracket, not closed yet
    ("x = [█\n", "1, 2]\n", True),
])
def test_line_ended_is_the_stop_rule_between_a_lines_canvases(marked, text, ended):
    assert line_ended(text, ctx_at(marked), max_lines=3) is ended
