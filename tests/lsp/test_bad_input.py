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

from .conftest import change_doc, fake_options, initialize, inline_params, open_doc, settled_stats, stats

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
]


async def test_malformed_params_get_error_replies(client: LanguageClient):
    await initialize(client, fake_options())
    open_doc(client, URI, "x = 1\n")
    for i, (method, params) in enumerate(MALFORMED):
        with pytest.raises(JsonRpcException) as info:
            await send_raw_request(client, f"bad-{i}", method, params)
        assert info.value.code in (types.ErrorCodes.InvalidParams, types.ErrorCodes.MethodNotFound,
                                   types.ErrorCodes.InvalidRequest), (method, params, info.value)
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
