"""Bad input against the live server: error replies or empty results, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Future

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient

from dg_lsp.text import Document, Position

from .conftest import RawPeer, change_doc, fake_options, initialize, inline_params, open_doc, settled_stats, stats

URI = "file:///work/bad.py"


async def raw_send(client: LanguageClient, message: dict | bytes) -> None:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    client.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)


def send_raw_request(client: LanguageClient, msg_id: str, method: str, params) -> asyncio.Future:
    """Send a request as raw JSON (the typed client cannot send malformed params) and await its reply."""
    future: Future = Future()
    client.protocol._request_futures[msg_id] = future
    message = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        message["params"] = params
    body = json.dumps(message).encode()
    client.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return asyncio.wrap_future(future)


async def still_serving(client: LanguageClient) -> None:
    open_doc(client, "file:///work/ok.py", "def ok():\n    \n", version=1)
    result = await client.text_document_inline_completion_async(inline_params("file:///work/ok.py", 1, 4))
    assert [i.insert_text for i in result.items] == ["fill_0"]


def range_inside(text: str, rng: types.Range) -> bool:
    doc = Document("u", text)
    for p in (rng.start, rng.end):
        if doc.position_at(doc.offset_at(Position(p.line, p.character))) != Position(p.line, p.character):
            return False
    return True


async def test_positions_past_the_end_are_clamped(client: LanguageClient):
    text = "x = 1\ny = \n"
    await initialize(client, fake_options())
    open_doc(client, URI, text)
    for line, character in [(1, 999), (50, 0), (2**31 - 1, 2**31 - 1)]:
        result = await client.text_document_inline_completion_async(inline_params(URI, line, character))
        for item in result.items:
            assert range_inside(text, item.range)
    completion = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(9, 9)))
    for item in completion.items:
        assert range_inside(text, item.text_edit.range)


async def test_unknown_uris(client: LanguageClient):
    await initialize(client, fake_options())
    result = await client.text_document_inline_completion_async(inline_params("file:///nope.py", 0, 0))
    assert not result.items
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri="file:///nope.py"),
        range=types.Range(start=types.Position(0, 0), end=types.Position(0, 1)),
        context=types.CodeActionContext(diagnostics=[])))
    assert not actions
    with pytest.raises(JsonRpcException) as info:
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="dg-lsp.fillHoles", arguments=[{"uri": "file:///nope.py"}]))
    assert info.value.code == types.ErrorCodes.InvalidParams and "unknown document" in info.value.message
    change_doc(client, "file:///nope.py", 2, (0, 0), (0, 0), "x")  # a change to a closed document is ignored
    await still_serving(client)


async def test_ten_megabyte_document(client: LanguageClient):
    line = "value_{:07d} = compute(alpha, beta)  # padding padding padding\n"
    text = "".join(line.format(i) for i in range(160_000))
    assert len(text) > 10_000_000
    await initialize(client, fake_options())
    open_doc(client, URI, text)
    result = await client.text_document_inline_completion_async(inline_params(URI, 80_000, 10, automatic=True))
    assert len(result.items) <= 1
    change_doc(client, URI, 2, (159_999, 0), (159_999, 5), "VALUE")
    result = await client.text_document_inline_completion_async(inline_params(URI, 159_999, 62))
    assert len(result.items) == 1
    with pytest.raises(JsonRpcException):  # no hole markers anywhere in 10 MB
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="dg-lsp.fillHoles", arguments=[URI]))
    info = await stats(client)
    assert info["documents"] == 1
    await still_serving(client)


async def test_lone_surrogates_in_documents_and_edits(client: LanguageClient):
    text = "s = '\ud800' + '\udfff'\nt = \n"
    await initialize(client, fake_options(fake={"responses": {"t = ": "'\udc00ok'"}}))
    open_doc(client, URI, text)
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4, automatic=True))
    assert [i.insert_text for i in result.items] == ["'\udc00ok'"]
    for character in range(0, 22):
        result = await client.text_document_inline_completion_async(inline_params(URI, 0, character, automatic=True))
        assert len(result.items) <= 1
    change_doc(client, URI, 2, (0, 5), (0, 6), "\ud83d")  # half of an emoji replaces the lone surrogate
    edit = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dg-lsp.rewriteSelection",
        arguments=[URI, {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 9}}, ]))
    assert edit is not None
    await still_serving(client)


MALFORMED = [
    ("textDocument/inlineCompletion", {"textDocument": 5}),
    ("textDocument/inlineCompletion", {"textDocument": {"uri": URI}, "position": {"line": -1, "character": 0},
                                       "context": {"triggerKind": 1}}),
    ("textDocument/inlineCompletion", {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0},
                                       "context": {"triggerKind": 99}}),
    ("textDocument/inlineCompletion", None),
    ("textDocument/completion", {"textDocument": {"uri": URI}, "position": {"line": "zero", "character": 0}}),
    ("textDocument/completion", [1, 2, 3]),
    ("textDocument/codeAction", {"textDocument": {"uri": URI}}),
    ("workspace/executeCommand", {"command": "dg-lsp.rewriteSelection", "arguments": [42]}),
    ("workspace/executeCommand", {"command": "dg-lsp.rewriteSelection", "arguments": [URI, {"start": 1}]}),
    ("workspace/executeCommand", {"command": "dg-lsp.fillHoles"}),
    ("workspace/executeCommand", {"command": "no.such.command", "arguments": []}),
    ("codeAction/resolve", {"title": "x", "data": {"kind": "explode"}}),
    ("codeAction/resolve", {"title": 3}),
    ("no/such/method", {}),
    ("no/such/method", None),
]
NOT_FOUND = {"no/such/method"}


async def test_malformed_params_get_error_replies(client: LanguageClient):
    await initialize(client, fake_options())
    open_doc(client, URI, "x = 1\n")
    for i, (method, params) in enumerate(MALFORMED):
        with pytest.raises(JsonRpcException) as info:
            await send_raw_request(client, f"bad-{i}", method, params)
        expected = types.ErrorCodes.MethodNotFound if method in NOT_FOUND else types.ErrorCodes.InvalidParams
        assert info.value.code == expected, (method, params, info.value)
    info = await settled_stats(client)
    assert info["replied"] == info["received"] - 1
    await still_serving(client)


async def test_garbage_on_the_wire_does_not_stop_the_server(client: LanguageClient):
    await initialize(client, fake_options())
    await raw_send(client, b"{not json")
    await raw_send(client, b"\xff\xfe\x00")
    await raw_send(client, [1, 2, 3] and b"[1, 2, 3]")
    await raw_send(client, {"jsonrpc": "2.0", "id": {"odd": 1}, "method": "textDocument/inlineCompletion"})
    await raw_send(client, {"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"oops": 1}})
    await raw_send(client, {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "never-sent"}})
    await still_serving(client)


# --- limits from the loaded model: a tiny real checkpoint whose context is 128 tokens --------------------

LIMIT = 128  # max_position_embeddings of the checkpoint; context.budget 200 keeps min(200, 128 // 4) = 32
ENGINE = {"backend": "engine", "model": {"device": "cpu"}, "context": {"budget": 200}, "sampler": {"steps": 2},
          "holes": {"canvas": 8}, "inline": {"lineCanvas": 4096}, "cache": {"size": 0}}


@pytest.fixture
async def small_model(peer: RawPeer, tmp_path) -> RawPeer:
    testing = pytest.importorskip("dg_lsp.engine.testing")
    checkpoint = testing.write_tiny_checkpoint(tmp_path / "ckpt", family="dg", max_positions=LIMIT)
    peer.options = {**ENGINE, "model": {**ENGINE["model"], "path": str(checkpoint)}}
    await peer.initialize(peer.options)
    status = await peer.notification("dg/status", lambda p: p["state"] in ("ready", "error"))
    assert status["state"] == "ready", peer.notifications
    return peer


async def test_holes_beyond_the_model_context_are_refused_with_the_numbers(small_model: RawPeer):
    peer = small_model
    text = "def f(x):\n" + "".join(f"    a{i} = <FILL>\n" for i in range(16))
    peer.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1,
                                                          "text": text}})
    reply = await peer.call("workspace/executeCommand", {"command": "dg-lsp.fillHoles", "arguments": [URI]})
    assert reply["error"]["code"] == types.ErrorCodes.InvalidParams, reply
    assert reply["error"]["message"] == (
        "16 holes x 8 tokens + 32 tokens of context exceed the model's context of 128 tokens: "
        "expected at most 11 holes (option holes.maxHoles) or a smaller holes.canvas")
    assert (await peer.stats())["submitted"] == 0  # refused before any work

    apart = "def f(x):\n" + "".join(f"    a{i} = <FILL>\n" for i in range(11))  # 11 fit, but not with the text between
    peer.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": 2},
                                           "contentChanges": [{"text": apart}]})
    reply = await peer.call("workspace/executeCommand", {"command": "dg-lsp.fillHoles", "arguments": [URI]})
    assert reply["error"]["code"] == -32803 and "of text between them exceed the model's context of 128 tokens" \
        in reply["error"]["message"], reply

    peer.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": 3},
                                           "contentChanges": [{"text": "a = <FILL>\nb = <FILL>\n"}]})
    reply = await peer.call("workspace/executeCommand", {"command": "dg-lsp.fillHoles", "arguments": [URI]})
    assert "error" not in reply, reply
    assert "changes" in reply["result"] or "documentChanges" in reply["result"], reply
    await peer.check_one_reply_each()


async def test_a_canvas_option_beyond_the_model_context_is_told_and_shortened(small_model: RawPeer):
    peer = small_model
    shown = await peer.notification("window/showMessage", lambda p: "inline.lineCanvas" in p["message"])
    assert shown["message"] == ("dg-lsp: option inline.lineCanvas = 4096 exceeds the model's context of 128 tokens "
                                "(with 32 tokens of context): expected at most 88; using 88")
    peer.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "python", "version": 1,
                                                          "text": "x = compute(1)\n"}})
    reply = await peer.call("textDocument/inlineCompletion", {
        "textDocument": {"uri": URI}, "position": {"line": 0, "character": 4}, "context": {"triggerKind": 1}})
    assert isinstance(reply["result"]["items"], list)  # served (random weights: any text, maybe none)
    info = await peer.stats()
    assert info["started"] == 1 and info.get("failed", 0) == 0, info

    peer.notify("workspace/didChangeConfiguration", {"settings": {**peer.options, "holes": {"canvas": 500}}})
    shown = await peer.notification("window/showMessage", lambda p: "holes.canvas" in p["message"])
    assert "option holes.canvas = 500 exceeds the model's context of 128 tokens" in shown["message"]
    await peer.check_one_reply_each()
