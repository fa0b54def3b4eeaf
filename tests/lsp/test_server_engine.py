"""End to end with the real engine on a tiny random-weight checkpoint, CPU, one server for the module.

Random weights write garbage, so these tests assert protocol behaviour only: well-formed replies, ranges
inside the document, edits that apply cleanly, cancellation answered with RequestCancelled.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from dg_lsp.text import Document, Position

from .conftest import (SERVER_COMMAND, as_dict, cancel_once_started, change_doc, initialize, inline_params, open_doc,
                       settled_stats, stats, wait_for_state)

testing = pytest.importorskip("dg_lsp.engine.testing", reason="dg_lsp.engine.testing (tiny checkpoints) is not available yet")

pytestmark = pytest.mark.asyncio(loop_scope="module")

URI = "file:///work/engine_demo.py"
SOURCE = ("import os\n\n\ndef add(a, b):\n    \n\n\ndef scale(xs, k):\n    return [x * k for x in xs]\n\n\n"
          "print(add(1, 2), scale([1, 2], 3))\n")
OPTIONS = {"backend": "engine", "model": {"device": "cpu"}, "context": {"budget": 200},
           "inline": {"lineCanvas": 8, "blockCanvas": 16}, "sampler": {"steps": 4}, "cache": {"size": 0}}


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def engine_client(lsp_client: LanguageClient, tmp_path_factory):
    checkpoint = testing.write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", family="dg", seed=0)
    lsp_client.statuses = []
    lsp_client.applied = []

    @lsp_client.feature("dg/status")
    def on_status(params) -> None:
        lsp_client.statuses.append(as_dict(params))

    options = {**OPTIONS, "model": {**OPTIONS["model"], "path": str(checkpoint)}}
    lsp_client.options = options
    await initialize(lsp_client, options)
    open_doc(lsp_client, URI, SOURCE)
    yield
    await lsp_client.shutdown_session()


async def test_model_path_may_be_a_hugging_face_repo_id(tmp_path):
    """model.path = "org/name" loads that checkpoint from the Hugging Face cache the server sees."""
    cache = tmp_path / "hub"
    testing.cache_checkpoint(cache, "org/tiny", testing.write_tiny_checkpoint(tmp_path / "ckpt", family="dg"))
    client = pytest_lsp.make_test_lsp_client()
    client.statuses = []

    @client.feature("dg/status")
    def on_status(params) -> None:
        client.statuses.append(as_dict(params))

    await client.start_io(*SERVER_COMMAND, env={**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    try:
        await initialize(client, {**OPTIONS, "model": {**OPTIONS["model"], "path": "org/tiny"}})
        status = await wait_for_state(client, ("ready", "error"))
        assert status["state"] == "ready", client.statuses
        assert status["model"] == "org/tiny"
    finally:
        await client.shutdown_session()


def inside(doc: Document, rng: types.Range) -> bool:
    for p in (rng.start, rng.end):
        pos = Position(p.line, p.character)
        if doc.position_at(doc.offset_at(pos)) != pos:
            return False
    return True


def apply(text: str, edits: list[dict]) -> str:
    doc = Document("u", text)
    spans = sorted(((doc.offset_at(Position(**e["range"]["start"])), doc.offset_at(Position(**e["range"]["end"])),
                     e["newText"]) for e in edits), reverse=True)
    for a, b, new in spans:
        assert a <= b
        text = text[:a] + new + text[b:]
    return text


async def test_model_loads_with_progress_and_status(engine_client: LanguageClient):
    status = await wait_for_state(engine_client, ("ready", "error"))
    assert status["state"] == "ready", engine_client.messages
    assert status["device"] == "cpu" and status["model"]
    reports = [r for token in engine_client.progress_reports.values() for r in token]
    assert isinstance(reports[0], types.WorkDoneProgressBegin) and isinstance(reports[-1], types.WorkDoneProgressEnd)
    info = await stats(engine_client)
    assert info["modelState"] == "ready" and info["torchLoaded"] is True


async def test_inline_completion_is_well_formed(engine_client: LanguageClient):
    doc = Document(URI, SOURCE)
    for line, character, automatic in [(4, 4, False), (8, 11, True), (11, 6, True), (0, 0, False), (99, 0, False)]:
        result = await engine_client.text_document_inline_completion_async(
            inline_params(URI, line, character, automatic))
        assert len(result.items) <= 1
        for item in result.items:
            assert isinstance(item.insert_text, str) and item.insert_text.strip()
            assert inside(doc, item.range)
            if automatic and SOURCE.split("\n")[line][character:].strip():
                assert "\n" not in item.insert_text  # line mode


async def test_completion_items_are_well_formed(engine_client: LanguageClient):
    doc = Document(URI, SOURCE)
    result = await engine_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(8, 11)))
    assert result.is_incomplete
    for item in result.items:
        rng = item.text_edit.range
        assert inside(doc, rng) and rng.start.line == rng.end.line == 8 and rng.end.character == 11


async def test_rewrite_selection_edit_applies_cleanly(engine_client: LanguageClient):
    start, end = types.Position(8, 4), types.Position(8, 30)
    edit = as_dict(await engine_client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dg-lsp.rewriteSelection",
        arguments=[{"uri": URI, "range": {"start": {"line": 8, "character": 4}, "end": {"line": 8, "character": 30}},
                    "apply": False}])))
    edits = edit.get("changes", {}).get(URI, [])
    assert len(edits) <= 1
    for e in edits:
        assert e["range"] == {"start": {"line": start.line, "character": start.character},
                              "end": {"line": end.line, "character": end.character}}
        rewritten = apply(SOURCE, edits)
        assert rewritten.startswith(SOURCE[:SOURCE.index("    return [x") + 4])
        assert rewritten.endswith(SOURCE[SOURCE.index("\n\n\nprint"):])


async def test_fill_holes_edits_replace_exactly_the_markers(engine_client: LanguageClient):
    uri = "file:///work/holes.py"
    text = "def area(w, h):\n    return <FILL>\n\n\ndef perimeter(w, h):\n    return <FILL>\n"
    open_doc(engine_client, uri, text)
    edit = as_dict(await engine_client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dg-lsp.fillHoles", arguments=[{"uri": uri, "apply": False}])))
    edits = edit["changes"][uri]
    assert len(edits) == 2
    markers = [{"start": {"line": 1, "character": 11}, "end": {"line": 1, "character": 17}},
               {"start": {"line": 5, "character": 11}, "end": {"line": 5, "character": 17}}]
    assert sorted((e["range"] for e in edits), key=lambda r: r["start"]["line"]) == markers
    filled = apply(text, edits)
    assert filled.startswith("def area(w, h):\n    return ") and "\n\n\ndef perimeter(w, h):\n    return " in filled


async def test_cancel_mid_denoise_and_superseded_requests(engine_client: LanguageClient):
    slow = {**engine_client.options, "sampler": {"steps": 200, "haltWhenStable": False},
            "inline": {"lineCanvas": 200, "blockCanvas": 200}}
    engine_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"dg-lsp": slow}))
    before = await stats(engine_client)
    error = await cancel_once_started(engine_client, inline_params(URI, 4, 4))
    assert error.code == types.LSPErrorCodes.RequestCancelled
    after = await settled_stats(engine_client)
    assert after["cancelled"] == before["cancelled"] + 1 and after["computed"] == before["computed"]

    # a burst on one document: every request answered (whether a request finished before the next one
    # arrived depends on the machine, so which ones come back empty is not asserted here; the fake-backend
    # tests pin that down)
    engine_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"dg-lsp": engine_client.options}))
    pending = []
    for i in range(5):
        change_doc(engine_client, URI, 10 + i, (4, 4 + i), (4, 4 + i), "x")
        pending.append(engine_client.text_document_inline_completion_async(inline_params(URI, 4, 5 + i, True)))
    results = await asyncio.gather(*pending)
    assert len(results) == 5 and all(len(r.items) <= 1 for r in results)
    final = await settled_stats(engine_client)
    assert final["replied"] == final["received"] - 1


async def test_diffusion_gemma_serves_every_mode(tmp_path):
    """A transformers-saved DiffusionGemma checkpoint, by path, with no conversion: inline (line and block
    mode), completion items, rewrite selection and fill holes all answer well-formed."""
    pytest.importorskip("transformers")
    checkpoint = testing.write_tiny_gemma_checkpoint(tmp_path / "gemma", seed=2)
    client = pytest_lsp.make_test_lsp_client()
    client.statuses = []

    @client.feature("dg/status")
    def on_status(params) -> None:
        client.statuses.append(as_dict(params))

    await client.start_io(*SERVER_COMMAND)
    try:
        options = {**OPTIONS, "model": {**OPTIONS["model"], "path": str(checkpoint)}, "sampler": {"maxSteps": 3}}
        await initialize(client, options)
        status = await wait_for_state(client, ("ready", "error"))
        assert status["state"] == "ready", client.statuses
        open_doc(client, URI, SOURCE)
        doc = Document(URI, SOURCE)
        for line, character, automatic in [(4, 4, False), (8, 11, True)]:
            result = await client.text_document_inline_completion_async(inline_params(URI, line, character, automatic))
            assert len(result.items) <= 1
            for item in result.items:
                assert inside(doc, item.range)
                if automatic:
                    assert "\n" not in item.insert_text  # line mode
        items = await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(8, 11)))
        assert all(inside(doc, item.text_edit.range) for item in items.items)
        edit = as_dict(await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="dg-lsp.rewriteSelection",
            arguments=[{"uri": URI, "range": {"start": {"line": 8, "character": 4}, "end": {"line": 8, "character": 30}},
                        "apply": False}])))
        for e in edit.get("changes", {}).get(URI, []):
            assert apply(SOURCE, [e]).endswith(SOURCE[SOURCE.index("\n\n\nprint"):])
        holes = "def area(w, h):\n    return <FILL>\n\n\ndef perimeter(w, h):\n    return <FILL>\n"
        open_doc(client, "file:///work/holes.py", holes)
        edit = as_dict(await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="dg-lsp.fillHoles", arguments=[{"uri": "file:///work/holes.py", "apply": False}])))
        assert len(edit["changes"]["file:///work/holes.py"]) == 2
        info = await stats(client)
        assert info["modelState"] == "ready"
    finally:
        await client.shutdown_session()
