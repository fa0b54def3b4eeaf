"""Shared pieces of the LSP tests: client capabilities built by hand, a pytest-lsp client fixture running
`python -m dg_lsp.cli` as a subprocess, and `RawPeer` (fixture `peer`) for raw JSON-RPC to the same server."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from typing import Any, Callable

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

SERVER_COMMAND = [sys.executable, "-m", "dg_lsp.cli"]


def capabilities(*, inline: bool = True, progress: bool = True, apply_edit: bool = True,
                 document_changes: bool = False, resolve_edit: bool = False,
                 encodings: list[str] | None = None) -> types.ClientCapabilities:
    """Client capabilities written out by hand (pytest-lsp ships none that declare inline completion)."""
    text_document = types.TextDocumentClientCapabilities(
        synchronization=types.TextDocumentSyncClientCapabilities(dynamic_registration=False),
        completion=types.CompletionClientCapabilities(
            completion_item=types.ClientCompletionItemOptions(snippet_support=False)),
        code_action=types.CodeActionClientCapabilities(
            code_action_literal_support=types.ClientCodeActionLiteralOptions(
                code_action_kind=types.ClientCodeActionKindOptions(value_set=[types.CodeActionKind.RefactorRewrite])),
            resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]) if resolve_edit else None,
            data_support=True,
        ),
        inline_completion=types.InlineCompletionClientCapabilities(dynamic_registration=False) if inline else None,
    )
    return types.ClientCapabilities(
        text_document=text_document,
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=apply_edit,
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=document_changes),
            configuration=False,
            did_change_configuration=types.DidChangeConfigurationClientCapabilities(dynamic_registration=False),
        ),
        window=types.WindowClientCapabilities(work_done_progress=progress),
        general=types.GeneralClientCapabilities(position_encodings=encodings) if encodings else None,
    )


def as_dict(value: Any) -> Any:
    """pygls hands untyped JSON objects over as namedtuples; turn them back into dicts."""
    if hasattr(value, "_asdict"):
        return {k: as_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: as_dict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_dict(v) for v in value]
    return value


def fake_options(**overrides: Any) -> dict:
    options: dict[str, Any] = {"backend": "fake", "fake": {"responses": {}}}
    for key, value in overrides.items():
        options[key] = value
    return options


async def initialize(client: LanguageClient, options: dict | None = None, caps: types.ClientCapabilities | None = None,
                     wait_ready: bool = True) -> types.InitializeResult:
    result = await client.initialize_session(types.InitializeParams(
        capabilities=caps or capabilities(), initialization_options=options, root_uri="file:///work"))
    if wait_ready:
        await wait_for_state(client, ("ready", "error"))
    return result


async def wait_for_state(client: LanguageClient, states: tuple[str, ...]) -> dict:
    for _ in range(2000):  # polling a list the client fills; no timing is asserted
        for status in reversed(client.statuses):
            if status.get("state") in states:
                return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"server never reached {states}: {client.statuses}")


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))


def change_doc(client: LanguageClient, uri: str, version: int, start: tuple[int, int], end: tuple[int, int],
               text: str) -> None:
    rng = types.Range(start=types.Position(*start), end=types.Position(*end))
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=rng, text=text)]))


def inline_params(uri: str, line: int, character: int, automatic: bool = False) -> types.InlineCompletionParams:
    kind = types.InlineCompletionTriggerKind.Automatic if automatic else types.InlineCompletionTriggerKind.Invoked
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character),
        context=types.InlineCompletionContext(trigger_kind=kind))


async def raw_request(client: LanguageClient, method: str, params: Any) -> Any:
    """Send a request and take its result as plain JSON, bypassing the client's result structuring
    (lsprotocol's client hook reads any code action that has a `command` as a bare `Command`)."""
    msg_id = f"raw-{id(params)}-{method}"
    future = client.protocol.send_request(method, params, msg_id=msg_id)
    client.protocol._result_types.pop(msg_id, None)
    return as_dict(await asyncio.wrap_future(future))


async def stats(client: LanguageClient) -> dict:
    return as_dict(await client.protocol.send_request_async("dg/stats", {}))


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient):
    lsp_client.statuses = []
    lsp_client.applied = []

    @lsp_client.feature("dg/status")
    def on_status(params: Any) -> None:
        lsp_client.statuses.append(as_dict(params))

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        lsp_client.applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    yield
    await lsp_client.shutdown_session()


async def cancel_once_started(client: LanguageClient, params: types.InlineCompletionParams) -> JsonRpcException:
    """Send an inline completion, send $/cancelRequest for it once the worker has started one more job
    than before, and return the error it is answered with (the caller checks the code)."""
    started = (await stats(client))["started"]
    future = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
    msg_id = next(k for k, v in client.protocol._request_futures.items() if v is future)
    while (await stats(client))["started"] <= started:
        await asyncio.sleep(0.01)
    client.protocol.notify("$/cancelRequest", types.CancelParams(id=msg_id))
    try:
        await asyncio.wrap_future(future)
    except JsonRpcException as error:
        return error
    raise AssertionError("the cancelled request was answered with a result")


async def settled_stats(client: LanguageClient) -> dict:
    """Stats once the worker has nothing queued or running (a cancelled job stops at its next step)."""
    for _ in range(2000):
        info = await stats(client)
        if info["pending"] == 0:
            return info
        await asyncio.sleep(0.01)
    raise AssertionError(f"the worker never went idle: {info}")


def frame(message: Any, length: int | None = None, header: bytes = b"Content-Length: %d\r\n\r\n") -> bytes:
    """One JSON-RPC frame: `message` as JSON (bytes as they are) behind a header (override to malform it)."""
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return header % (len(body) if length is None else length) + body


class RawPeer:
    """The server as a subprocess, spoken to in raw JSON-RPC frames: for the messages a typed client cannot
    send (odd ids, no `jsonrpc`, a number as method). Server notifications are kept in `notifications`;
    every reply in `replies`, so that a test can check that each request got exactly one."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.replies: list[dict] = []
        self.notifications: list[dict] = []
        self._ids = itertools.count(1)

    @classmethod
    async def start(cls) -> "RawPeer":
        process = await asyncio.create_subprocess_exec(
            *SERVER_COMMAND, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        return cls(process)

    def send(self, message: Any) -> None:
        self.process.stdin.write(frame(message))

    def request(self, method: Any, params: Any = None, msg_id: Any = None, **fields: Any) -> Any:
        """Send a request (params left out when None) and return its id."""
        msg_id = f"raw-{next(self._ids)}" if msg_id is None else msg_id
        message = {"jsonrpc": "2.0", "id": msg_id, "method": method, **fields}
        if params is not None:
            message["params"] = params
        self.send({k: v for k, v in message.items() if v is not LEAVE_OUT})
        return msg_id

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, **({} if params is None else {"params": params})})

    async def _read(self) -> dict:
        length = None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise AssertionError(f"the server closed its output (exit code {await self.process.wait()})")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        message = json.loads(await self.process.stdout.readexactly(length))
        if "method" in message and "id" in message:  # a request from the server: accept it
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
        elif "method" in message:
            self.notifications.append(message)
        else:
            self.replies.append(message)
        return message

    async def reply(self, msg_id: Any) -> dict:
        """The reply with `msg_id` (null for a request whose id could not be read)."""
        while True:
            for reply in self.replies:
                if "id" in reply and type(reply["id"]) is type(msg_id) and reply["id"] == msg_id:
                    self.replies.remove(reply)
                    return reply
            await asyncio.wait_for(self._read(), HANG_GUARD_S)

    async def notification(self, method: str, match: Callable[[Any], bool] = lambda params: True) -> dict:
        """The params of the first notification `method` (received so far or next) that `match` accepts."""
        seen = 0
        while True:
            for message in self.notifications[seen:]:
                if message["method"] == method and match(message.get("params")):
                    return message["params"]
            seen = len(self.notifications)
            await asyncio.wait_for(self._read(), HANG_GUARD_S)

    async def call(self, method: Any, params: Any = None, msg_id: Any = None, **fields: Any) -> dict:
        return await self.reply(self.request(method, params, msg_id, **fields))

    async def initialize(self, options: dict | None = None, capabilities: dict | None = None) -> dict:
        reply = await self.call("initialize", {"processId": None, "rootUri": None, "capabilities": capabilities or {},
                                               "initializationOptions": options})
        self.notify("initialized", {})
        return reply

    async def stats(self) -> dict:
        return (await self.call("dg/stats"))["result"]

    async def check_one_reply_each(self) -> None:
        """Every request so far was answered exactly once: no reply is left unclaimed, and the server
        counts as many replies as requests (dg/stats is answered after every earlier synchronous handler)."""
        info = await self.stats()
        assert self.replies == [], f"replies no request claimed (or a second reply): {self.replies}"
        assert info["replied"] == info["received"] - 1, info

    async def close(self) -> int:
        if self.process.returncode is None:
            try:
                self.send({"jsonrpc": "2.0", "id": "bye", "method": "shutdown"})
                self.notify("exit")
                self.process.stdin.close()
                return await asyncio.wait_for(self.process.wait(), HANG_GUARD_S)
            except (ConnectionError, asyncio.TimeoutError):
                self.process.kill()
        return await self.process.wait()


LEAVE_OUT = object()  # RawPeer.request(..., jsonrpc=LEAVE_OUT) sends a request without that field
HANG_GUARD_S = 60.0  # turns a server that never answers into a failure; no test asserts a duration


@pytest.fixture
async def peer():
    raw = await RawPeer.start()
    yield raw
    await raw.close()
