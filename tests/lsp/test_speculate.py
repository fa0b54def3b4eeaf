"""Speculative next completion (dg_lsp/speculate.py): the accepted item's command, the scheduler's
speculative jobs (they give way to every request), and end to end: accept an item, the completion at the
new cursor is computed while idle and the next request there is a cache hit. Waiting polls dg/stats or
events; nothing is timed."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pytest_lsp import LanguageClient

from dg_lsp.backend import FakeBackend
from dg_lsp.scheduler import Scheduler, Superseded
from dg_lsp.speculate import Accepted, Accepts, accepted_argument, holds, parse_accepted
from dg_lsp.text import UTF8, UTF16, Document, Position

from .conftest import as_dict, change_doc, fake_options, initialize, inline_params, open_doc, settled_stats, stats
from .test_scheduler import GatedBackend, job, load

URI = "file:///work/calc.py"
SOURCE = "def add(a, b):\n    \n\nprint(add(1, 2))\n"
AFTER = "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"
RESPONSES = {"def add(a, b):\n    ": "return a + b", "return a + b": "  # the sum"}


# --- the command's argument -------------------------------------------------------------------------------

def test_the_argument_names_where_the_accepted_text_ends_in_the_client_encoding():
    one = accepted_argument(URI, 3, Position(1, 4), "return a + b", UTF16)
    assert one == {"uri": URI, "version": 3, "position": {"line": 1, "character": 16}, "text": "return a + b"}
    two = accepted_argument(URI, 3, Position(1, 4), "x = 1\n    y = '😀'", UTF16)
    assert two["position"] == {"line": 2, "character": 12}  # the emoji is two UTF-16 units
    assert accepted_argument(URI, 3, Position(1, 4), "y = '😀'", UTF8)["position"] == {"line": 1, "character": 14}
    assert parse_accepted([two]) == Accepted(URI, 3, Position(2, 12), "x = 1\n    y = '😀'")


@pytest.mark.parametrize("args, named", [
    ([], "got 0 arguments"),
    ([{"uri": URI, "version": "3", "position": {"line": 0, "character": 0}, "text": ""}], "version='3'"),
    ([{"uri": URI, "version": 3, "position": {"line": -1, "character": 0}, "text": ""}], "position="),
    ([{"uri": URI, "version": 3, "position": {"line": 0, "character": 0}, "text": None}], "text=None"),
    ([{"version": 3, "position": {"line": 0, "character": 0}, "text": ""}], "uri=None"),
])
def test_bad_arguments_are_refused_naming_the_argument(args, named):
    with pytest.raises(JsonRpcInvalidParams, match=named):
        parse_accepted(args)


def test_the_document_holds_the_accepted_text_only_where_the_item_put_it():
    accepted = Accepted(URI, 1, Position(1, 16), "return a + b")
    assert holds(Document(URI, AFTER, 2), accepted) == AFTER.index("return a + b") + len("return a + b")
    assert holds(Document(URI, SOURCE, 2), accepted) is None
    assert holds(Document(URI, AFTER.replace("a + b", "a - b"), 2), accepted) is None
    assert holds(Document(URI, AFTER, 2), Accepted(URI, 1, Position(1, 40), "return a + b")) is None
    two_lines = Accepted(URI, 1, Position(2, 16), "total = a + b\n    return total")
    text = "def add(a, b):\r\n    total = a + b\r\n    return total\r\n"  # VS Code writes the document's breaks
    assert holds(Document(URI, text, 2), two_lines) == text.index("total\r\n", 30) + len("total")
    assert holds(Document(URI, text.replace("a + b", "a - b"), 2), two_lines) is None
    above_the_top = Accepted(URI, 1, Position(0, 16), "x\n    return total")
    assert holds(Document(URI, "    return total\n", 2), above_the_top) is None


def test_accepts_settles_the_change_before_or_after_the_command_and_gives_up_elsewhere():
    accepted = Accepted(URI, 1, Position(1, 16), "return a + b")
    end = AFTER.index("return a + b") + len("return a + b")
    accepts = Accepts()
    assert accepts.accepted(accepted, Document(URI, AFTER, 2)) == end  # the didChange came first
    assert accepts.accepted(accepted, Document(URI, SOURCE, 1)) is None  # the command came first: it waits
    assert accepts.changed(Document(URI, AFTER, 2)) == end
    assert accepts.changed(Document(URI, AFTER, 3)) is None  # settled once
    assert accepts.accepted(accepted, Document(URI, SOURCE, 1)) is None
    assert accepts.changed(Document(URI, SOURCE + "x", 2)) is None  # the user typed something else: given up
    assert accepts.changed(Document(URI, AFTER, 3)) is None
    assert accepts.accepted(accepted, None) is None  # a closed document
    assert accepts.accepted(accepted, Document(URI, SOURCE, 1)) is None  # waits for its didChange ...
    accepts.closed(URI)  # ... but the document closes first: a reopened one is not taken for it
    assert accepts.changed(Document(URI, AFTER, 2)) is None


# --- the scheduler's speculative jobs ---------------------------------------------------------------------

@pytest.fixture
def scheduler():
    s = Scheduler(cache_size=16)
    yield s
    s.stop()


def speculative(**kw):
    j = job(**kw)
    j.speculative = j.low_priority = True
    return j


def test_a_request_stops_a_running_speculation_and_runs_at_once(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    guess = scheduler.submit(speculative(lane="spec", prefix="y = ", key="guess"))
    assert backend.in_step.wait(10)
    real = scheduler.submit(job(lane="doc", prefix="x = ", key="real"))
    with pytest.raises(Superseded):
        guess.future.result(timeout=10)  # it resolved when the request arrived, before the gate opened
    backend.gate.set()
    assert real.future.result(timeout=10).texts == ("fill_0",)
    assert (scheduler.stats.speculated, scheduler.stats.yielded, scheduler.stats.superseded) == (1, 1, 0)
    assert scheduler.stats.computed == 1 and scheduler.cache.get("guess") is None


def test_a_request_with_the_same_key_joins_the_speculation(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    guess = scheduler.submit(speculative(lane="spec", key="same"))
    assert backend.in_step.wait(10)
    real = scheduler.submit(job(lane="doc", key="same"))
    backend.gate.set()
    assert real.future.result(timeout=10) is guess.future.result(timeout=10)
    assert (scheduler.stats.shared, scheduler.stats.computed, scheduler.stats.yielded) == (1, 1, 0)


def test_a_speculation_a_request_joined_runs_as_that_request_would(scheduler):
    backend = GatedBackend()
    load(scheduler, backend)
    first = scheduler.submit(job(lane="a", prefix="a = ", key="a"))
    assert backend.in_step.wait(10)
    guess = scheduler.submit(speculative(lane="spec", prefix="s = ", key="s"))
    joined = scheduler.submit(job(lane="doc", prefix="s = ", key="s"))
    later = scheduler.submit(job(lane="other", prefix="n = ", key="n"))
    backend.gate.set()
    for j in (first, guess, joined, later):
        j.future.result(timeout=10)
    assert [r.segments[0] for r in backend.requests] == ["a = ", "s = ", "n = "]  # queue order, not put last
    assert scheduler.stats.yielded == 0


def test_a_queued_speculation_waits_for_requests_and_its_cache_hit_is_no_request_hit(scheduler):
    load(scheduler, FakeBackend({"x = ": "1"}))
    first = scheduler.submit(speculative(lane="spec", key="k"))
    first.future.result(timeout=10)
    assert scheduler.stats.last_latency_ms is None  # nobody waited: not the latency of a completion
    again = scheduler.submit(speculative(lane="spec", key="k"))
    assert again.future.result(timeout=10).texts == ("1",)
    assert scheduler.stats.cache_hits == 0 and scheduler.stats.computed == 1
    assert scheduler.submit(job(key="k")).future.result(timeout=10).texts == ("1",)
    assert scheduler.stats.cache_hits == 1


# --- end to end -------------------------------------------------------------------------------------------

async def accept(client: LanguageClient, item: types.InlineCompletionItem) -> None:
    await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=item.command.command, arguments=as_dict(item.command.arguments)))


async def speculation_done(client: LanguageClient, computed: int) -> dict:
    for _ in range(2000):  # polling the server's counters; no timing is asserted
        info = await stats(client)
        if info["computed"] >= computed and info["pending"] == 0:
            return info
        await asyncio.sleep(0.01)
    raise AssertionError(f"the speculation never finished: {info}")


@pytest.mark.parametrize("change_first", [True, False])
async def test_after_an_accept_the_next_completion_comes_from_the_cache(client: LanguageClient, change_first: bool):
    await initialize(client, fake_options(fake={"responses": RESPONSES}))
    open_doc(client, URI, SOURCE)
    (item,) = (await client.text_document_inline_completion_async(inline_params(URI, 1, 4))).items
    assert item.insert_text == "return a + b" and item.command.command == "dg-lsp.accepted"
    if change_first:  # Neovim: its pending didChange goes out before the command
        change_doc(client, URI, 2, (1, 4), (1, 4), item.insert_text)
        await accept(client, item)
    else:
        await accept(client, item)
        assert (await stats(client))["speculated"] == 0  # waits for the document to hold the item
        change_doc(client, URI, 2, (1, 4), (1, 4), item.insert_text)
    before = await speculation_done(client, 2)
    assert before["speculated"] == 1 and before["cacheHits"] == 0
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 16, automatic=True))
    assert [i.insert_text for i in result.items] == ["  # the sum"]
    after = await stats(client)
    assert after["cacheHits"] == 1 and after["started"] == before["started"] == 2


async def test_an_accept_the_user_typed_over_is_not_speculated(client: LanguageClient):
    await initialize(client, fake_options(fake={"responses": RESPONSES}))
    open_doc(client, URI, SOURCE)
    (item,) = (await client.text_document_inline_completion_async(inline_params(URI, 1, 4))).items
    await accept(client, item)
    change_doc(client, URI, 2, (1, 4), (1, 4), "pass")  # the document went elsewhere before the item arrived
    change_doc(client, URI, 3, (1, 4), (1, 8), item.insert_text)
    info = await settled_stats(client)
    assert info["speculated"] == 0 and info["started"] == 1


async def test_a_request_during_a_speculation_is_answered_with_its_own_text(client: LanguageClient):
    fake = {"responses": RESPONSES | {"print(add(1, 2))": "  # done"}, "stepDelayMs": 10}
    await initialize(client, fake_options(fake=fake, sampler={"steps": 100}, inline={"debounceMs": 0}))
    open_doc(client, URI, SOURCE)
    (item,) = (await client.text_document_inline_completion_async(inline_params(URI, 1, 4))).items
    change_doc(client, URI, 2, (1, 4), (1, 4), item.insert_text)
    await accept(client, item)
    while (await stats(client))["started"] < 2:  # the speculation is denoising (100 steps)
        await asyncio.sleep(0.01)
    result = await client.text_document_inline_completion_async(inline_params(URI, 3, 16, automatic=True))
    assert [i.insert_text for i in result.items] == ["  # done"]
    info = await settled_stats(client)
    assert (info["speculated"], info["yielded"], info["superseded"], info["cancelled"]) == (1, 1, 0, 0)
    assert info["computed"] == 2  # the first request and this one: the speculation stopped for it


async def test_with_speculate_off_items_carry_no_command_and_nothing_runs(client: LanguageClient):
    await initialize(client, fake_options(fake={"responses": RESPONSES}, inline={"speculate": False}))
    open_doc(client, URI, SOURCE)
    (item,) = (await client.text_document_inline_completion_async(inline_params(URI, 1, 4))).items
    assert item.command is None
    change_doc(client, URI, 2, (1, 4), (1, 4), item.insert_text)
    arg = accepted_argument(URI, 1, Position(1, 4), item.insert_text, UTF16)
    await client.workspace_execute_command_async(types.ExecuteCommandParams(command="dg-lsp.accepted",
                                                                            arguments=[arg]))
    info = await settled_stats(client)
    assert (info["speculated"], info["started"]) == (0, 1)


async def test_a_malformed_accept_is_answered_invalid_params(client: LanguageClient):
    await initialize(client, fake_options())
    with pytest.raises(JsonRpcException) as error:
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="dg-lsp.accepted", arguments=[{"uri": URI}]))
    assert error.value.code == types.ErrorCodes.InvalidParams and "version=None" in str(error.value)
