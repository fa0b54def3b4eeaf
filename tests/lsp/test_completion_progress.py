"""CompletionProgress (dg_lsp/completion_progress.py) against a recording stand-in for pygls' `Progress`:
the messages on a client's token, and on a token the server creates, also when the completion ends before
the client has accepted the token. The client's answer is a future the test resolves; nothing is timed."""

from __future__ import annotations

import asyncio

from lsprotocol import types

from dg_lsp.completion_progress import CompletionProgress, asks_for_progress


class Recorder:
    """pygls' Progress as CompletionProgress uses it: `create_async` waits for `answer`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, object]] = []
        self.tokens: dict = {}
        self.answer: asyncio.Future | None = None

    async def create_async(self, token):
        self.sent.append(("create", token, None))
        self.answer = asyncio.get_running_loop().create_future()
        await self.answer
        self.tokens[token] = object()

    def begin(self, token, value):
        self.tokens.setdefault(token, object())
        self.sent.append(("begin", token, value.title))

    def report(self, token, value):
        self.sent.append(("report", token, value.message))

    def end(self, token, value):
        assert isinstance(value, types.WorkDoneProgressEnd)
        self.sent.append(("end", token, None))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_on_the_clients_token_every_canvas_is_reported():
    rec = Recorder()
    progress = CompletionProgress(rec, token="t")
    progress.partial("a\n", True)
    progress.partial("a\nb\n", False)
    progress.end()
    progress.end()  # once only
    assert rec.sent == [("begin", "t", "dg-lsp: completing"), ("report", "t", "a\n"), ("report", "t", "a\nb\n"),
                        ("end", "t", None)]
    assert rec.tokens == {}


async def test_a_created_token_starts_with_the_latest_text_once_the_client_accepts_it():
    rec = Recorder()
    progress = CompletionProgress(rec, create="c")
    progress.partial("a\n", True)
    await settle()
    progress.partial("a\nb\n", True)  # the client has not answered yet: kept
    rec.answer.set_result(None)
    await settle()
    progress.partial("a\nb\nc", False)
    progress.end()
    assert rec.sent == [("create", "c", None), ("begin", "c", "dg-lsp: completing"), ("report", "c", "a\nb\n"),
                        ("report", "c", "a\nb\nc"), ("end", "c", None)]
    assert rec.tokens == {}


async def test_a_completion_that_ends_before_the_token_exists_still_ends_it():
    rec = Recorder()
    progress = CompletionProgress(rec, create="c")
    progress.partial("a\n", True)
    await settle()
    progress.end()
    assert rec.sent == [("create", "c", None)]
    rec.answer.set_result(None)
    await settle()
    assert [kind for kind, *_ in rec.sent] == ["create", "begin", "report", "end"]


async def test_a_block_its_stop_rule_ended_creates_nothing():
    rec = Recorder()
    progress = CompletionProgress(rec, create="c")
    progress.partial("return a + b\n\nprint(1)", False)
    progress.end()
    await settle()
    assert rec.sent == []


def test_only_a_client_that_declares_the_capability_asks():
    assert asks_for_progress({"dgCompletionProgress": True})
    assert not asks_for_progress({"dgCompletionProgress": "yes"})
    assert not asks_for_progress(None) and not asks_for_progress({})
