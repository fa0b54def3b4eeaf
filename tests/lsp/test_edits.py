"""Rewrite selection and fill holes: requests built from the document, texts mapped back to edits."""

from __future__ import annotations

import pytest

from dg_lsp.backend import FakeBackend
from dg_lsp.edits import EditError, apply_edits, find_holes, plan_edits, plan_holes, plan_rewrite
from dg_lsp.options import ContextOptions, HolesOptions, RewriteOptions
from dg_lsp.postprocess import Completion
from dg_lsp.text import Document
from dg_lsp.engine.request import SamplerConfig

SOURCE = "import os\n\ndef f(x):\n    y = x + 1\n    return y\n\nprint(f(2))\n"


def test_rewrite_plan_makes_the_selection_the_initialised_canvas():
    doc = Document("u", SOURCE)
    start = SOURCE.index("y = x + 1")
    end = start + len("y = x + 1")
    plan = plan_rewrite(doc, start, end, RewriteOptions(extra_canvas=8), ContextOptions())
    (hole,) = plan.request.holes
    assert hole.init == "y = x + 1" and hole.canvas >= 8
    assert plan.request.prefix == SOURCE[:start] and plan.request.suffix == SOURCE[end:]
    assert plan.spans == ((start, end),)


def test_rewrite_rejects_empty_and_oversized_selections():
    doc = Document("u", SOURCE)
    with pytest.raises(EditError, match="empty"):
        plan_rewrite(doc, 10, 11, RewriteOptions(), ContextOptions())  # just a line break
    with pytest.raises(EditError, match="rewrite.maxChars"):
        plan_rewrite(doc, 0, len(SOURCE), RewriteOptions(max_chars=10), ContextOptions())


def test_reversed_selection_is_normalised():
    doc = Document("u", SOURCE)
    plan = plan_rewrite(doc, 20, 11, RewriteOptions(), ContextOptions())
    assert plan.spans == ((11, 20),)


def test_find_holes_with_a_custom_marker():
    assert find_holes("a ?? b ?? c", "??") == [(2, 4), (7, 9)]
    assert find_holes("a ?? b ?? c", "??", limit=1) == [(2, 4)]
    assert find_holes("nothing", "??") == []


def test_holes_plan_has_the_code_between_markers_as_segments():
    text = "def f(x):\n    y = <FILL>\n    return <FILL>\n"
    plan = plan_holes(Document("u", text), HolesOptions(canvas=10), ContextOptions())
    assert plan.request.segments == ("def f(x):\n    y = ", "\n    return ", "\n")
    assert [h.canvas for h in plan.request.holes] == [10, 10]
    result = FakeBackend({"y = ": "x * 2", "return ": "y"}).complete(plan.request, SamplerConfig(steps=2))
    edits = plan_edits(plan, result.texts)
    assert apply_edits(text, edits) == "def f(x):\n    y = x * 2\n    return y\n"


def test_holes_errors_name_the_option():
    with pytest.raises(EditError, match="holes.marker"):
        plan_holes(Document("u", "no markers"), HolesOptions(), ContextOptions())
    with pytest.raises(EditError, match="holes.maxHoles"):
        plan_holes(Document("u", "<FILL>" * 5), HolesOptions(max_holes=4), ContextOptions())


def test_unchanged_rewrite_yields_no_edit_and_fill_texts_are_cleaned():
    doc = Document("u", "a = 1\r\nb = 2\r\n")
    plan = plan_rewrite(doc, 0, 5, RewriteOptions(), ContextOptions())
    assert plan_edits(plan, ("a = 1",), "\r\n") == []
    assert plan_edits(plan, ("a = 1\nc = 3<|endoftext|>",), "\r\n") == [Completion("a = 1\r\nc = 3", 0, 5)]
    with pytest.raises(EditError, match="one per hole"):
        plan_edits(plan, ("x", "y"))


def test_apply_edits_rejects_overlaps():
    with pytest.raises(EditError):
        apply_edits("abcdef", [Completion("x", 0, 3), Completion("y", 2, 4)])


def test_holes_and_selections_are_checked_against_the_model_context():
    context = ContextOptions(budget=200)  # keeps min(200, 256 // 4) = 64 tokens of context; room 256 - 64 - 8
    doc = Document("u", "a = <FILL>\n" * 16)
    with pytest.raises(EditError) as info:
        plan_holes(doc, HolesOptions(canvas=24), context, context_limit=256)
    assert str(info.value) == ("16 holes x 24 tokens + 64 tokens of context exceed the model's context of 256 "
                               "tokens: expected at most 7 holes (option holes.maxHoles) or a smaller holes.canvas")
    assert len(plan_holes(doc, HolesOptions(canvas=24), context).request.holes) == 16  # no limit: unchanged
    one = plan_holes(Document("u", "a = <FILL>\n"), HolesOptions(canvas=4000), context, context_limit=256)
    assert one.request.holes[0].canvas == 184  # a single hole's canvas is shortened to what fits

    text = "x = 1\n" * 200
    with pytest.raises(EditError, match="exceeds the model's context of 256 tokens: expected a selection of at most"):
        plan_rewrite(Document("u", text), 0, len(text), RewriteOptions(), context, context_limit=256)
    assert plan_rewrite(Document("u", text), 0, 60, RewriteOptions(), context, context_limit=256).request.holes
