"""End to end through a real LSP client against `python -m dg_lsp.cli` with the deterministic fake backend."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from dg_lsp.edits import apply_edits
from dg_lsp.postprocess import Completion
from dg_lsp.text import Document, Position

from .conftest import (as_dict, cancel_once_started, capabilities, change_doc, fake_options, initialize, inline_params,
                       open_doc, raw_request, settled_stats, stats, wait_for_state)

URI = "file:///work/calc.py"
SOURCE = "def add(a, b):\n    \n\nprint(add(1, 2))\n"


def apply_text_edits(text: str, edits: list[types.TextEdit]) -> str:
    doc = Document("x", text)
    spans = [Completion(e.new_text, doc.offset_at(Position(e.range.start.line, e.range.start.character)),
                        doc.offset_at(Position(e.range.end.line, e.range.end.character))) for e in edits]
    return apply_edits(text, spans)


async def test_initialize_advertises_features_and_reports_loading(client: LanguageClient):
    result = await initialize(client, fake_options())
    caps = result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.code_action_provider is not None
    assert set(caps.execute_command_provider.commands) == {"dg-lsp.rewriteSelection", "dg-lsp.fillHoles",
                                                          "dg-lsp.accepted"}
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    status = await wait_for_state(client, ("ready",))
    assert status["model"] == "fake" and status["device"] == "cpu"
    reports = [r for token in client.progress_reports.values() for r in token]
    assert isinstance(reports[0], types.WorkDoneProgressBegin)
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    assert any(isinstance(r, types.WorkDoneProgressReport) for r in reports)
    info = await stats(client)
    assert info["torchLoaded"] is False  # the fake backend never imports torch


async def test_inline_completion_block_mode(client: LanguageClient):
    await initialize(client, fake_options(fake={"responses": {"def add(a, b):\n    ": "return a + b\n\nprint(1)"}}))
    open_doc(client, URI, SOURCE)
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert len(result.items) == 1
    item = result.items[0]
    assert item.insert_text == "return a + b"  # stopped at the dedent
    assert item.range == types.Range(start=types.Position(1, 4), end=types.Position(1, 4))
    for _ in range(2000):  # the status after a computed completion carries its latency
        if any(s.get("lastLatencyMs") is not None for s in client.statuses):
            break
        await asyncio.sleep(0.01)
    status = next(s for s in client.statuses if s.get("lastLatencyMs") is not None)
    assert status["state"] == "ready" and status["lastLatencyMs"] >= 0


async def test_inline_completion_line_mode_removes_auto_closed_bracket(client: LanguageClient):
    text = "x = compute()\n"
    await initialize(client, fake_options(fake={"responses": {"x = compute(": "1, 2)\ny = 3"}}))
    open_doc(client, URI, text)
    result = await client.text_document_inline_completion_async(inline_params(URI, 0, 12, automatic=True))
    assert [i.insert_text for i in result.items] == ["1, 2"]


async def test_typing_into_a_shown_completion_reuses_it(client: LanguageClient):
    await initialize(client, fake_options(fake={"responses": {"def add(a, b):\n    ": "return a + b"}}))
    open_doc(client, URI, SOURCE)
    first = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert first.items[0].insert_text == "return a + b"
    change_doc(client, URI, 2, (1, 4), (1, 4), "ret")
    second = await client.text_document_inline_completion_async(inline_params(URI, 1, 7, automatic=True))
    assert [i.insert_text for i in second.items] == ["urn a + b"]
    info = await stats(client)
    assert info["computed"] == 1  # the second answer came from the shown completion


async def test_completion_items_replace_the_word_being_typed(client: LanguageClient):
    await initialize(client, fake_options(fake={"responses": {"    re": "turn a + b"}}))
    open_doc(client, URI, "def add(a, b):\n    re\n")
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(1, 6)))
    assert result.is_incomplete
    (item,) = result.items
    assert item.text_edit.new_text == "return a + b"
    assert item.text_edit.range == types.Range(start=types.Position(1, 4), end=types.Position(1, 6))
    assert item.label == "return a + b"


async def test_utf16_positions_with_surrogate_pairs(client: LanguageClient):
    text = 's = "😀😀" + f()\n'
    await initialize(client, fake_options(fake={"responses": {'s = "😀😀" + f(': "z)"}}))
    open_doc(client, URI, text)
    # "😀" is two UTF-16 code units: the cursor between the parentheses is at character 15
    result = await client.text_document_inline_completion_async(inline_params(URI, 0, 15, automatic=True))
    assert [i.insert_text for i in result.items] == ["z"]
    assert result.items[0].range.start == types.Position(0, 15)


async def test_rewrite_selection_command_returns_and_applies_edit(client: LanguageClient):
    await initialize(client, fake_options())
    open_doc(client, URI, SOURCE)
    rng = types.Range(start=types.Position(3, 0), end=types.Position(3, 16))
    actions = await raw_request(client, "textDocument/codeAction", types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), range=rng,
        context=types.CodeActionContext(diagnostics=[])))
    (action,) = actions
    assert action["title"] == "Rewrite selection (dg-lsp)"
    assert action["command"]["command"] == "dg-lsp.rewriteSelection"
    edit = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=action["command"]["command"], arguments=action["command"]["arguments"]))
    edit = as_dict(edit)
    edits = edit["changes"][URI]
    assert len(edits) == 1 and edits[0]["newText"] == "PRINT(ADD(1, 2))"  # the fake upper-cases rewrites
    assert len(client.applied) == 1
    applied = client.applied[0].edit.changes[URI]
    assert apply_text_edits(SOURCE, applied) == SOURCE.replace("print(add(1, 2))", "PRINT(ADD(1, 2))")


async def test_fill_holes_fills_every_marker_jointly(client: LanguageClient):
    text = "def f(x):\n    y = <FILL>\n    return <FILL>\n"
    await initialize(client, fake_options(fake={"responses": {"y = ": "x * 2", "return ": "y"}}))
    open_doc(client, URI, text)
    edit = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dg-lsp.fillHoles", arguments=[{"uri": URI, "apply": False}]))
    edits = [types.TextEdit(range=types.Range(start=types.Position(**e["range"]["start"]),
                                              end=types.Position(**e["range"]["end"])), new_text=e["newText"])
             for e in edit["changes"][URI]]
    assert apply_text_edits(text, edits) == "def f(x):\n    y = x * 2\n    return y\n"
    assert client.applied == []
    info = await stats(client)
    assert info["computed"] == 1  # both holes in one canvas


async def test_code_action_resolve_computes_the_edit_lazily(client: LanguageClient):
    text = "a = <FILL>\n"
    await initialize(client, fake_options(), caps=capabilities(resolve_edit=True, document_changes=True))
    open_doc(client, URI, text, version=7)
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI),
        range=types.Range(start=types.Position(0, 0), end=types.Position(0, 0)),
        context=types.CodeActionContext(diagnostics=[])))
    (action,) = actions
    assert action.command is None and action.edit is None
    resolved = await client.code_action_resolve_async(action)
    (doc_edit,) = resolved.edit.document_changes
    assert doc_edit.text_document.version == 7
    assert doc_edit.edits[0].new_text == "fill_0"


async def test_cancel_request_mid_denoise_gets_request_cancelled(client: LanguageClient):
    await initialize(client, fake_options(fake={"stepDelayMs": 50}, sampler={"steps": 400}))
    open_doc(client, URI, SOURCE)
    error = await cancel_once_started(client, inline_params(URI, 1, 4))
    assert error.code == types.LSPErrorCodes.RequestCancelled
    after = await settled_stats(client)
    assert after["cancelled"] == 1 and after["computed"] == 0
    # the worker is free again
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"dg-lsp": fake_options(fake={"stepDelayMs": 0}, sampler={"steps": 2})}))
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert [i.insert_text for i in result.items] == ["fill_0"]


async def test_latest_request_wins_and_every_request_is_answered(client: LanguageClient):
    await initialize(client, fake_options(fake={"stepDelayMs": 20}, sampler={"steps": 50}))
    open_doc(client, URI, SOURCE)
    pending = []
    for i in range(30):
        change_doc(client, URI, 2 + i, (1, 4 + i), (1, 4 + i), "x")
        pending.append(client.text_document_inline_completion_async(inline_params(URI, 1, 5 + i, automatic=True)))
    results = await asyncio.gather(*pending)
    assert all(not r.items for r in results[:-1])  # superseded: answered empty
    assert len(results[-1].items) == 1
    info = await settled_stats(client)
    assert info["computed"] == 1
    assert info["replied"] == info["received"] - 1  # every request but this stats call has its reply


def completion_params(uri: str, line: int, character: int) -> types.CompletionParams:
    return types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                  position=types.Position(line, character))


def send_keystroke_requests(client: LanguageClient, line: int, character: int, automatic_inline: bool = False):
    """The inline completion and completion requests an editor sends at one keystroke, sent back to back
    without awaiting: ((inline future, its id), (completion future, its id))."""
    sent = []
    for method, params in ((types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(URI, line, character,
                                                                                 automatic=automatic_inline)),
                           (types.TEXT_DOCUMENT_COMPLETION, completion_params(URI, line, character))):
        future = client.protocol.send_request(method, params)
        sent.append((future, next(k for k, v in client.protocol._request_futures.items() if v is future)))
    return sent


async def wait_started(client: LanguageClient, more_than: int) -> None:
    while (await stats(client))["started"] <= more_than:
        await asyncio.sleep(0.01)


async def test_inline_and_completion_at_one_keystroke_share_one_model_run(client: LanguageClient):
    # the inline request is automatic and debounced for 2 s; the invoked completion attaches to its run and
    # starts it at once, so the two meet in one run however the worker is timed
    await initialize(client, fake_options(fake={"responses": {"def add(a, b):\n    ": "return a + b"}},
                                          inline={"debounceMs": 2000}))
    open_doc(client, URI, SOURCE)
    before = await stats(client)
    (inline, _), (completion, _) = send_keystroke_requests(client, 1, 4, automatic_inline=True)
    inline_result, completion_result = await asyncio.wrap_future(inline), await asyncio.wrap_future(completion)
    assert [i.insert_text for i in inline_result.items] == ["return a + b"]
    assert [i.text_edit.new_text for i in completion_result.items] == ["return a + b"]
    after = await settled_stats(client)
    assert {k: after[k] - before[k] for k in ("submitted", "started", "computed", "shared", "superseded")} == {
        "submitted": 2, "started": 1, "computed": 1, "shared": 1, "superseded": 0}


async def test_cancelling_one_of_two_shared_requests_still_answers_the_other(client: LanguageClient):
    await initialize(client, fake_options(fake={"stepDelayMs": 20, "responses": {"(a, b):\n    ": "return a + b"}},
                                          sampler={"steps": 100}))
    open_doc(client, URI, SOURCE)
    (inline, inline_id), (completion, _) = send_keystroke_requests(client, 1, 4)
    await wait_started(client, 0)
    client.protocol.notify("$/cancelRequest", types.CancelParams(id=inline_id))
    with pytest.raises(JsonRpcException) as error:
        await asyncio.wrap_future(inline)
    assert error.value.code == types.LSPErrorCodes.RequestCancelled
    result = await asyncio.wrap_future(completion)
    assert [i.text_edit.new_text for i in result.items] == ["return a + b"]
    after = await settled_stats(client)
    assert (after["started"], after["computed"], after["shared"], after["cancelled"]) == (1, 1, 1, 1)


async def test_a_newer_keystroke_supersedes_both_kinds(client: LanguageClient):
    responses = {"(a, b):\n    ": "return a + b", "= 1\n    ": "return y"}
    await initialize(client, fake_options(fake={"stepDelayMs": 20, "responses": responses}, sampler={"steps": 100}))
    open_doc(client, URI, SOURCE)
    old = send_keystroke_requests(client, 1, 4)
    await wait_started(client, 0)
    change_doc(client, URI, 2, (1, 4), (1, 4), "y = 1\n    ")
    new = send_keystroke_requests(client, 2, 4)
    old_inline, old_completion, new_inline, new_completion = [
        await asyncio.wrap_future(future) for future, _ in old + new]
    assert not old_inline.items and not old_completion.items  # superseded: answered empty
    assert [i.insert_text for i in new_inline.items] == ["return y"]
    assert [i.text_edit.new_text for i in new_completion.items] == ["return y"]
    after = await settled_stats(client)
    assert (after["started"], after["computed"], after["shared"], after["superseded"]) == (2, 1, 2, 2)


async def test_bad_options_name_the_key_and_defaults_apply(client: LanguageClient):
    await initialize(client, fake_options(sampler={"steps": "many"}, inline={"lineCanvas": 0}, bogus=1))
    messages = [m.message for m in client.messages]
    assert any("sampler.steps" in m and "integer 1..1024" in m for m in messages)
    assert any("inline.lineCanvas" in m for m in messages)
    assert any("unknown option bogus" in m for m in messages)
    open_doc(client, URI, SOURCE)
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert [i.insert_text for i in result.items] == ["fill_0"]


async def test_engine_load_failure_is_reported_and_requests_answer_empty(client: LanguageClient, tmp_path):
    await initialize(client, {"backend": "engine", "model": {"path": str(tmp_path / "missing")}})
    status = await wait_for_state(client, ("error", "ready"))
    assert status["state"] == "error"
    assert any(m.type == types.MessageType.Error for m in client.messages)
    open_doc(client, URI, SOURCE)
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert not result.items


async def test_backend_exception_still_gets_replies(client: LanguageClient):
    await initialize(client, fake_options())
    open_doc(client, URI, "x = FAKE_ERROR\n")
    result = await client.text_document_inline_completion_async(inline_params(URI, 0, 4))
    assert not result.items
    with pytest.raises(JsonRpcException) as info:
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="dg-lsp.rewriteSelection",
            arguments=[URI, {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 5}}]))
    assert "fake backend failure" in info.value.message


UTIL_URI = "file:///work/lib/util.py"
UTIL = "".join(f"def helper_{i}(x):\n    return x + {i}\n\n" for i in range(60))  # 180 lines


def change_whole(client: LanguageClient, uri: str, version: int, text: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


def edit_util(client: LanguageClient, sync: str) -> None:
    """Open lib/util.py and edit its line 151 (`return x + 50`), incrementally or as a whole-document change."""
    open_doc(client, UTIL_URI, UTIL)
    if sync == "incremental":
        change_doc(client, UTIL_URI, 2, (151, 15), (151, 17), "EDITED")
    else:
        lines = UTIL.splitlines(keepends=True)
        lines[151] = lines[151].replace("50", "EDITED")
        change_whole(client, UTIL_URI, 2, "".join(lines))


def recorded(path) -> list[list[str]]:
    return [json.loads(line)["segments"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("sync", ["incremental", "whole"])
async def test_the_edited_chunk_of_another_file_reaches_the_model(client: LanguageClient, tmp_path, sync: str):
    record = tmp_path / "requests.jsonl"
    await initialize(client, fake_options(fake={"recordPath": str(record)}, context={"budget": 256}))
    edit_util(client, sync)
    open_doc(client, URI, SOURCE)
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert [i.insert_text for i in result.items] == ["fill_0"]
    (segments,) = recorded(record)
    prefix = segments[0]
    assert prefix.startswith("# lib/util.py\n") and "    return x + EDITED\n" in prefix
    assert "def helper_0(" not in prefix  # the chunk around the edit, not the top of the file
    assert prefix.endswith("\n\n" + SOURCE[:SOURCE.index("\n    ") + 5])


async def test_the_other_files_chunk_survives_the_window_at_line_61_of_inventory(client: LanguageClient, tmp_path):
    inventory = (Path(__file__).resolve().parents[2] / "examples" / "inventory.py").read_text()
    record = tmp_path / "requests.jsonl"
    # a window of 256 tokens (the fake counts 4 characters a token) is shorter than inventory.py
    await initialize(client, fake_options(fake={"recordPath": str(record)}, context={"budget": 256}))
    edit_util(client, "incremental")
    uri = "file:///work/examples/inventory.py"
    open_doc(client, uri, inventory)
    line = inventory.splitlines()[60]
    assert line == "    inventory = Inventory()"
    await client.text_document_inline_completion_async(inline_params(uri, 60, len(line)))
    (segments,) = recorded(record)
    prefix, suffix = segments
    assert prefix.startswith("# lib/util.py\n") and "    return x + EDITED\n" in prefix
    assert prefix.endswith("\n" + line) and suffix.startswith("\n    for path in args:")
    assert "import " not in prefix  # the window cut the top of inventory.py, not the other file
    assert (len(prefix) + len(suffix)) / 4 <= 256


# --- confidence hints ----------------------------------------------------------------------------------

HINTED = fake_options(fake={"responses": {}, "unlikely": ["qqq"]}, hints={"enable": True, "debounceMs": 0})


async def wait_for_diagnostics(client: LanguageClient, uri: str, count: int) -> list[types.Diagnostic]:
    for _ in range(2000):  # polling what the client received; no timing is asserted
        found = client.diagnostics.get(uri)
        if found is not None and len(found) == count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} diagnostics for {uri}, got {client.diagnostics.get(uri)}")


async def test_hint_on_an_unlikely_token_and_its_quick_fix_rewrites_exactly_it(client: LanguageClient):
    await initialize(client, HINTED, caps=capabilities(resolve_edit=True))
    open_doc(client, URI, SOURCE)
    change_doc(client, URI, 2, (1, 4), (1, 4), "return a qqq b")
    [hint] = await wait_for_diagnostics(client, URI, 1)
    assert hint.range == types.Range(start=types.Position(1, 13), end=types.Position(1, 16))
    assert hint.severity == types.DiagnosticSeverity.Hint and hint.source == "dg-lsp"
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), range=hint.range,
        context=types.CodeActionContext(diagnostics=[hint])))
    [fix] = [a for a in actions if a.kind == types.CodeActionKind.QuickFix]
    assert list(fix.diagnostics) == [hint]
    resolved = await client.code_action_resolve_async(fix)
    [edit] = resolved.edit.changes[URI]
    assert edit.range == hint.range and edit.new_text == "QQQ"  # the fake rewrites by upper-casing
    change_doc(client, URI, 3, (1, 13), (1, 16), "+")  # editing the line again clears its hint
    assert not await wait_for_diagnostics(client, URI, 0)


async def test_hints_are_off_by_default_and_skip_big_files(client: LanguageClient):
    await initialize(client, fake_options(fake={"responses": {}, "unlikely": ["qqq"]}))
    open_doc(client, URI, SOURCE)
    change_doc(client, URI, 2, (1, 4), (1, 4), "return a qqq b")
    big = "file:///work/big.py"
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"dg-lsp": HINTED | {"hints": {"enable": True, "debounceMs": 0, "maxFileChars": 20}}}))
    open_doc(client, big, SOURCE)
    change_doc(client, big, 2, (1, 4), (1, 4), "return a qqq b")
    info = await settled_stats(client)
    assert info["submitted"] == 0  # no scoring ran for either document
    assert client.diagnostics.get(URI) is None and client.diagnostics.get(big) is None


# a block of three canvases (the fake's form feeds split it); the third's dedent at `print` ends the block, so
# the fourth piece is never asked for
PIECES = ["total = a\n", "    total += b\n", "    return total\nprint(1)\n", "never"]
LONG_BLOCK = {"def add(a, b):\n    ": "\f".join(PIECES)}


def with_token(params: types.InlineCompletionParams, client: LanguageClient,
               token: str) -> types.InlineCompletionParams:
    client.progress_reports[token] = []  # the client creates the token it passes
    params.work_done_token = token
    return params


async def test_a_long_block_continues_canvas_after_canvas_and_reports_the_text_so_far(client: LanguageClient,
                                                                                      tmp_path):
    record = tmp_path / "requests.jsonl"
    await initialize(client, fake_options(fake={"responses": LONG_BLOCK, "recordPath": str(record)}))
    open_doc(client, URI, SOURCE)
    result = await client.text_document_inline_completion_async(with_token(inline_params(URI, 1, 4), client, "long"))
    assert [i.insert_text for i in result.items] == ["total = a\n    total += b\n    return total"]
    prefixes = [segments[0] for segments in recorded(record)]
    assert len(prefixes) == 3  # one request per canvas, each prefix holding the canvases before it
    assert prefixes[1] == prefixes[0] + PIECES[0] and prefixes[2] == prefixes[1] + PIECES[1]
    reports = client.progress_reports["long"]
    assert isinstance(reports[0], types.WorkDoneProgressBegin) and isinstance(reports[-1], types.WorkDoneProgressEnd)
    assert [r.message for r in reports[1:-1]] == ["".join(PIECES[:n]) for n in (1, 2, 3)]


async def test_without_a_token_only_the_answer_and_max_canvases_bounds_the_block(client: LanguageClient, tmp_path):
    record = tmp_path / "requests.jsonl"
    await initialize(client, fake_options(fake={"responses": LONG_BLOCK, "recordPath": str(record)},
                                          inline={"maxCanvases": 2}))
    open_doc(client, URI, SOURCE)
    tokens = set(client.progress_reports)  # the model load's
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert [i.insert_text for i in result.items] == ["total = a\n    total += b"]
    assert len(recorded(record)) == 2 and set(client.progress_reports) == tokens


async def test_a_long_block_cancelled_between_canvases_gets_request_cancelled(client: LanguageClient, tmp_path):
    # documented: a cancelled long completion is answered RequestCancelled (the partial text went out as progress)
    record = tmp_path / "requests.jsonl"
    fake = {"responses": LONG_BLOCK, "recordPath": str(record), "stepDelayMs": 20}
    await initialize(client, fake_options(fake=fake, sampler={"steps": 50}))
    open_doc(client, URI, SOURCE)
    future = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                          with_token(inline_params(URI, 1, 4), client, "cut"))
    msg_id = next(k for k, v in client.protocol._request_futures.items() if v is future)
    while not any(isinstance(r, types.WorkDoneProgressReport) for r in client.progress_reports["cut"]):
        await asyncio.sleep(0.01)  # the first canvas is done
    client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
    with pytest.raises(JsonRpcException) as error:
        await asyncio.wrap_future(future)
    assert error.value.code == types.LSPErrorCodes.RequestCancelled
    after = await settled_stats(client)
    assert (after["cancelled"], after["computed"]) == (1, 0)
    assert len(recorded(record)) >= 2  # the second canvas had started
    assert client.progress_reports["cut"][1].message == PIECES[0]


# a line of two canvases: the first ends inside the call's brackets, so the line goes on; the second closes
# them and breaks the line, which ends it (the third piece is never asked for)
LINE_PIECES = ["compute(alpha, beta,", " gamma)\nprint(1)\n", "never"]


async def test_a_line_longer_than_its_canvas_continues_to_the_end_of_its_statement(client: LanguageClient,
                                                                                   tmp_path):
    record = tmp_path / "requests.jsonl"
    text = "def add(a, b):\n    \n"
    await initialize(client, fake_options(fake={"responses": {"x = ": "\f".join(LINE_PIECES)},
                                                "recordPath": str(record)}))
    open_doc(client, URI, text)
    # automatic, at the end of a line that has text: line mode
    change_doc(client, URI, 2, (1, 4), (1, 4), "x = ")
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 8, automatic=True))
    assert len(recorded(record)) == 2  # two canvases, then the statement had ended
    assert [i.insert_text for i in result.items] == ["compute(alpha, beta, gamma)"]


async def test_a_line_that_never_closes_stops_after_two_canvases(client: LanguageClient, tmp_path):
    record = tmp_path / "requests.jsonl"
    await initialize(client, fake_options(fake={"responses": {"x = ": "\f".join(["f(a,", " b,", " c,", " d)"])},
                                                "recordPath": str(record)}))
    open_doc(client, URI, "def add(a, b):\n    x = \n")
    await client.text_document_inline_completion_async(inline_params(URI, 1, 8, automatic=True))
    assert len(recorded(record)) == 2  # a block would go on to maxCanvases (4); a line stops at two


def asking_for_progress() -> types.ClientCapabilities:
    """A client that puts no token on its inline requests but asks the server for completion progress
    (Neovim's plugin, the VS Code extension)."""
    caps = capabilities()
    caps.experimental = {"dgCompletionProgress": True}
    return caps


async def ended_progress(client: LanguageClient, known: set) -> list:
    """The reports of the one progress token the server created since `known`, once it has ended."""
    for _ in range(2000):  # polling what the client received; no timing is asserted
        fresh = [token for token in client.progress_reports if token not in known]
        reports = client.progress_reports[fresh[0]] if fresh else []
        if reports and isinstance(reports[-1], types.WorkDoneProgressEnd):
            assert len(fresh) == 1, fresh
            return reports
        await asyncio.sleep(0.01)
    raise AssertionError(f"no ended completion progress: {client.progress_reports}")


async def test_a_client_that_asks_gets_progress_on_a_token_the_server_creates(client: LanguageClient):
    await initialize(client, fake_options(fake={"responses": LONG_BLOCK}), caps=asking_for_progress())
    open_doc(client, URI, SOURCE)
    known = set(client.progress_reports)  # the model load's
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert [i.insert_text for i in result.items] == ["total = a\n    total += b\n    return total"]
    reports = await ended_progress(client, known)
    assert isinstance(reports[0], types.WorkDoneProgressBegin) and reports[0].title == "dg-lsp: completing"
    messages = [r.message for r in reports[1:-1]]
    so_far = ["".join(PIECES[:n]) for n in (1, 2, 3)]
    # the token exists once the client answered its creation: the latest text then, and each one after
    assert messages and messages[-1] == so_far[-1] and messages == so_far[so_far.index(messages[0]):]


async def test_a_block_done_in_one_canvas_creates_no_progress(client: LanguageClient):
    await initialize(client, fake_options(fake={"responses": {"def add(a, b):\n    ": "return a + b\n\nprint(1)"}}),
                     caps=asking_for_progress())
    open_doc(client, URI, SOURCE)
    known = set(client.progress_reports)
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert [i.insert_text for i in result.items] == ["return a + b"]
    await settled_stats(client)  # dg/stats is answered after anything the completion sent
    assert set(client.progress_reports) == known
