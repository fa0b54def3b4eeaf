"""The lifecycle and the message checks as the spec has them, in raw JSON-RPC against the server on stdio.

Each case checks the exact error code, that the message names what was wrong, that the server still
answers a normal request correctly afterwards, and that every request got exactly one reply.
"""

from __future__ import annotations

import pytest

from .conftest import LEAVE_OUT, RawPeer

URI = "file:///work/life.py"
SERVER_NOT_INITIALIZED, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32002, -32600, -32601, -32602
FAKE = {"backend": "fake", "fake": {"responses": {"y = ": "first"}}}


def inline(uri: str = URI, line: int = 0, character: int = 4, **position) -> dict:
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character, **position},
            "context": {"triggerKind": 1}}


def did_open(uri: str = URI, text: str = "y = \n", **item) -> dict:
    return {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text, **item}}


def error_of(reply: dict, code: int) -> str:
    assert "result" not in reply and reply["error"]["code"] == code, reply
    assert "Traceback" not in reply["error"]["message"] and "data" not in reply["error"], reply
    return reply["error"]["message"]


async def still_serving(peer: RawPeer, uri: str = "file:///work/ok.py") -> None:
    peer.notify("textDocument/didOpen", did_open(uri))
    reply = await peer.call("textDocument/inlineCompletion", inline(uri))
    assert [item["insertText"] for item in reply["result"]["items"]] == ["first"], reply


async def test_requests_before_initialize_get_server_not_initialized(peer: RawPeer):
    message = error_of(await peer.call("textDocument/inlineCompletion", inline()), SERVER_NOT_INITIALIZED)
    assert "textDocument/inlineCompletion" in message and "initialize" in message
    error_of(await peer.call("dg/stats"), SERVER_NOT_INITIALIZED)
    error_of(await peer.call("no/such/method"), SERVER_NOT_INITIALIZED)  # the lifecycle comes first
    error_of(await peer.call("textDocument/completion", {"position": "bad"}), SERVER_NOT_INITIALIZED)
    error_of(await peer.call("shutdown"), SERVER_NOT_INITIALIZED)
    peer.request("dg/stats", msg_id={"odd": 1})
    error_of(await peer.reply(None), INVALID_REQUEST)  # the message shape comes before the lifecycle
    peer.notify("textDocument/didOpen", did_open())  # dropped: notifications before initialize
    peer.notify("initialized", {})

    reply = await peer.initialize(FAKE)
    assert "capabilities" in reply["result"]
    assert (await peer.stats())["documents"] == 0
    await still_serving(peer)
    await peer.check_one_reply_each()


async def test_exit_before_initialize_ends_the_server(peer: RawPeer):
    peer.notify("exit")
    assert await peer.process.wait() == 1  # no shutdown before it


async def test_a_second_initialize_is_refused_and_changes_nothing(peer: RawPeer):
    first = await peer.initialize(FAKE, {"general": {"positionEncodings": ["utf-8"]}})
    assert first["result"]["capabilities"]["positionEncoding"] == "utf-8"
    again = await peer.call("initialize", {"processId": None, "rootUri": None,
                                           "capabilities": {"general": {"positionEncodings": ["utf-32"]}},
                                           "initializationOptions": {**FAKE, "fake": {"responses": {"y = ": "2nd"}}}})
    assert "initialize" in error_of(again, INVALID_REQUEST)

    line = "x = 'é'; y = "  # 14 bytes in UTF-8, 13 code points: the end of the line tells the encodings apart
    peer.notify("textDocument/didOpen", did_open(text=line + "\n"))
    reply = await peer.call("textDocument/inlineCompletion", inline(character=14))
    [item] = reply["result"]["items"]
    assert item["insertText"] == "first"  # the first initialize's options
    assert item["range"]["start"] == {"line": 0, "character": 14}  # still UTF-8 positions
    await peer.check_one_reply_each()


BAD_PARAMS = [  # method, params, words the message must hold
    ("textDocument/inlineCompletion", inline(line="0"), 'params.position.line: expected an integer, got "0"'),
    ("textDocument/inlineCompletion", inline(character=1.5), "params.position.character: expected an integer, got 1.5"),
    ("textDocument/inlineCompletion", inline(line=True), "params.position.line: expected an integer, got true"),
    ("textDocument/inlineCompletion", {**inline(), "context": {"triggerKind": 99}},
     "params.context.triggerKind: expected one of 1, 2"),
    ("textDocument/inlineCompletion", {**inline(), "context": {"triggerKind": True}},
     "params.context.triggerKind: expected one of 1, 2"),
    ("textDocument/inlineCompletion", {**inline(), "textDocument": {"uri": None}},
     "params.textDocument.uri: expected a string, got null"),
    ("textDocument/inlineCompletion", None, "params"),
    ("textDocument/completion", {"textDocument": {"uri": URI}}, "params.position: required"),
]


@pytest.mark.parametrize("method, params, words", BAD_PARAMS)
async def test_values_are_not_coerced(peer: RawPeer, method: str, params: dict, words: str):
    await peer.initialize(FAKE)
    message = error_of(await peer.call(method, params), INVALID_PARAMS)
    assert words in message, message
    assert (await peer.stats())["submitted"] == 0
    await still_serving(peer)
    await peer.check_one_reply_each()


@pytest.mark.parametrize("field, value", [("text", None), ("uri", None), ("version", "1"), ("version", 1.5)])
async def test_a_bad_did_open_is_ignored(peer: RawPeer, field: str, value):
    await peer.initialize(FAKE)
    peer.notify("textDocument/didOpen", did_open(**{field: value}))
    assert (await peer.stats())["documents"] == 0  # never a document "None" nor the text "None"
    await still_serving(peer)
    await peer.check_one_reply_each()


async def test_a_bad_did_change_is_ignored(peer: RawPeer):
    await peer.initialize(FAKE)
    peer.notify("textDocument/didOpen", did_open())
    peer.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": 2},
                                           "contentChanges": [{"text": None}]})
    peer.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": 2}, "contentChanges": [
        {"range": {"start": {"line": "0", "character": 0}, "end": {"line": 0, "character": 0}}, "text": "z"}]})
    reply = await peer.call("textDocument/inlineCompletion", inline())
    assert [item["insertText"] for item in reply["result"]["items"]] == ["first"]  # the text is still "y = "
    await peer.check_one_reply_each()


@pytest.mark.parametrize("msg_id", [{"odd": 1}, [1], True, 1.5, None])
async def test_a_request_with_a_bad_id_is_answered_with_id_null(peer: RawPeer, msg_id):
    await peer.initialize(FAKE)
    peer.notify("textDocument/didOpen", did_open())
    peer.send({"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/inlineCompletion", "params": inline()})
    reply = await peer.reply(None)
    assert reply["id"] is None and "id must be an integer or a string" in error_of(reply, INVALID_REQUEST)
    info = await peer.stats()
    assert info["submitted"] == 0 and info["started"] == 0  # no job was ever started
    await still_serving(peer)
    await peer.check_one_reply_each()


@pytest.mark.parametrize("jsonrpc, words", [(LEAVE_OUT, "got none"), ("1.0", 'got "1.0"'), (2.0, "got 2.0")])
async def test_a_request_without_jsonrpc_2_is_answered_with_id_null(peer: RawPeer, jsonrpc, words: str):
    await peer.initialize(FAKE)
    peer.request("textDocument/inlineCompletion", inline(), msg_id=7, jsonrpc=jsonrpc)
    reply = await peer.reply(None)  # no JSON-RPC 2.0 request, so no id to echo
    message = error_of(reply, INVALID_REQUEST)
    assert 'jsonrpc must be "2.0"' in message and words in message, message
    assert (await peer.stats())["submitted"] == 0
    await still_serving(peer)
    await peer.check_one_reply_each()


@pytest.mark.parametrize("params", [None, {}, [1, 2]])
async def test_an_unknown_method_is_method_not_found(peer: RawPeer, params):
    await peer.initialize(FAKE)
    assert "no/such/method" in error_of(await peer.call("no/such/method", params), METHOD_NOT_FOUND)
    await still_serving(peer)
    await peer.check_one_reply_each()


@pytest.mark.parametrize("method", [42, None, ["a"], {"m": 1}])
async def test_a_method_that_is_not_a_string_is_invalid(peer: RawPeer, method):
    await peer.initialize(FAKE)
    message = error_of(await peer.call(method, {}, msg_id=9), INVALID_REQUEST)
    assert "method must be a string" in message, message
    await still_serving(peer)
    await peer.check_one_reply_each()


@pytest.mark.parametrize("message", [b"[1, 2, 3]", b"5", b'"text"', b"[]", b'{"jsonrpc": "2.0"}'])
async def test_messages_that_are_no_request_object(peer: RawPeer, message: bytes):
    await peer.initialize(FAKE)
    peer.send(message)
    reply = await peer.reply(None)
    error_of(reply, INVALID_REQUEST)
    await still_serving(peer)
    await peer.check_one_reply_each()


async def test_notifications_with_bad_shapes_are_dropped(peer: RawPeer):
    await peer.initialize(FAKE)
    peer.send({"method": "textDocument/didOpen", "params": did_open()})  # no jsonrpc
    peer.send({"jsonrpc": "2.0", "method": 42})
    peer.send({"jsonrpc": "2.0", "method": "no/such/notification"})
    peer.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": {"odd": 1}}})
    assert (await peer.stats())["documents"] == 0
    await still_serving(peer)
    await peer.check_one_reply_each()
