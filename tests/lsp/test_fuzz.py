"""Hypothesis fuzzing: the pure request path (1,000 cases), request params through an in-process server
(1,000 cases: every request gets exactly one reply), and a smaller burst through the live server."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_lsp import LanguageClient

from dg_lsp import convert
from dg_lsp.context import build_cursor_context
from dg_lsp.options import ContextOptions
from dg_lsp.postprocess import postprocess, scan, statement_state, suffix_closes, syntax_for
from dg_lsp.server import build_server
from dg_lsp.text import Document, Position

from .conftest import fake_options, initialize, inline_params, open_doc, settled_stats
from .test_bad_input import send_raw_request

FUZZ = settings(max_examples=1000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CHARS = list("abc xyz_():{}[]\"'\t=+.,;") + ["\n", "\r", "\r\n", "😀", "🎉", "é", "\ud800", "\udfff", "\u2028",
                                             "\x0c", "<|endoftext|>", "<FILL>", "    "]
texts = st.lists(st.sampled_from(CHARS), max_size=60).map("".join)
big_ints = st.integers(min_value=0, max_value=2**31 - 1)
small_ints = st.integers(min_value=0, max_value=12)
positions = st.tuples(st.one_of(small_ints, big_ints), st.one_of(small_ints, big_ints))


def reference_offset(text: str, line: int, character: int) -> int:
    """Slow oracle: split at LSP line breaks, walk UTF-16 code units."""
    lines = re.split(r"(\r\n|\r|\n)", text)
    bodies, breaks = lines[0::2], lines[1::2]
    if line >= len(bodies):
        return len(text)
    start = sum(len(b) for b in bodies[:line]) + sum(len(b) for b in breaks[:line])
    units = 0
    for i, ch in enumerate(bodies[line]):
        width = len(ch.encode("utf-16-le", "surrogatepass")) // 2
        if units + width > character:
            return start + i
        units += width
    return start + len(bodies[line])


@FUZZ
@given(text=texts, position=positions, automatic=st.booleans(), raw=texts)
def test_pure_request_path_never_fails_and_stays_inside_the_document(text, position, automatic, raw):
    doc = Document("file:///f.py", text, 1, "python")
    offset = doc.offset_at(Position(*position))
    assert offset == reference_offset(text, *position)
    ctx = build_cursor_context(doc, offset, automatic=automatic, options=ContextOptions(budget=64),
                               line_canvas=8, block_canvas=16)
    assert ctx.prefix == text[offset - len(ctx.prefix):offset] and text.startswith(ctx.suffix, offset)
    completion = postprocess(raw, ctx)
    if completion is not None:
        assert completion.text.strip() and "<|" not in completion.text
        assert 0 <= completion.start <= completion.end <= len(text)
        for item in convert.inline_items(doc, completion).items:
            for p in (item.range.start, item.range.end):
                assert doc.position_at(doc.offset_at(Position(p.line, p.character))) == Position(p.line, p.character)


@settings(max_examples=300, deadline=None, database=None)
@given(text=texts, edits=st.lists(st.tuples(positions, positions, texts), max_size=4))
def test_incremental_edits_match_the_oracle(text, edits):
    doc = Document("u", text)
    for version, (start, end, new) in enumerate(edits, 2):
        a, b = reference_offset(doc.text, *start), reference_offset(doc.text, *end)
        expected = doc.text[:min(a, b)] + new + doc.text[max(a, b):]
        doc = doc.replace(Position(*start), Position(*end), new, version)
        assert doc.text == expected


# --- in-process server ----------------------------------------------------------------------------------

class InProcessServer:
    """The real server object, fed JSON-RPC messages the way pygls' reader would, with replies captured."""

    def __init__(self) -> None:
        self.server = build_server()
        self.server.protocol.set_writer(self, include_headers=False)
        self.loop = asyncio.new_event_loop()
        self.replies: dict = defaultdict(list)
        self.next_id = 0

    def write(self, data: bytes) -> None:
        message = json.loads(data)
        if "id" in message and ("result" in message or "error" in message):
            self.replies[message["id"]].append(message)

    def close(self) -> None:
        pass

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def send(self, message: dict) -> dict | None:
        protocol = self.server.protocol
        try:  # what pygls' reader does with each body
            protocol.handle_message(json.loads(json.dumps(message), object_hook=protocol.structure_message))
        except Exception:  # noqa: BLE001 - logged and dropped by pygls too; only requests must be answered
            pass
        if "id" not in message:
            await asyncio.sleep(0)
            return None
        for _ in range(20_000):
            if self.replies.get(message["id"]):
                return self.replies[message["id"]][0]
            await asyncio.sleep(0.0005)
        raise AssertionError(f"no reply to {message}")

    def request(self, method: str, params) -> dict:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        reply = self.run(self.send(message))
        assert len(self.replies[self.next_id]) == 1
        return reply

    def notify(self, method: str, params) -> None:
        self.run(self.send({"jsonrpc": "2.0", "method": method, "params": params}))


@pytest.fixture(scope="module")
def harness():
    h = InProcessServer()
    caps = {"textDocument": {"inlineCompletion": {}}, "workspace": {"applyEdit": False}}
    h.request("initialize", {"processId": None, "rootUri": None, "capabilities": caps,
                             "initializationOptions": fake_options(fake={"responses": {"= ": "1"}})})
    h.notify("initialized", {})
    for _ in range(10_000):
        if h.server.model_state == "ready":
            break
        h.run(asyncio.sleep(0.001))
    h.notify("textDocument/didOpen", {"textDocument": {"uri": "file:///a.py", "languageId": "python", "version": 1,
                                                       "text": "x = \ny = <FILL>\n"}})
    yield h
    h.server.scheduler.stop()
    h.loop.close()


URIS = st.sampled_from(["file:///a.py", "file:///a.py", "file:///b.py", "file:///missing.py", "", "not a uri"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["uri", "line", "character", "start", "end", "range", "position", "textDocument", "context", "x"]),
        inner, max_size=3),
    max_leaves=8)
lsp_position = st.builds(lambda p: {"line": p[0], "character": p[1]}, positions)
lsp_range = st.builds(lambda a, b: {"start": a, "end": b}, lsp_position, lsp_position)
doc_id = st.builds(lambda u: {"uri": u}, URIS)
trigger = st.builds(lambda k: {"triggerKind": k}, st.integers(1, 2))
WELL_FORMED = st.one_of(  # the right shapes with hostile values: positions past the end, unknown documents
    st.tuples(st.just("textDocument/inlineCompletion"), st.fixed_dictionaries(
        {"textDocument": doc_id, "position": lsp_position, "context": trigger})),
    st.tuples(st.just("textDocument/completion"), st.fixed_dictionaries(
        {"textDocument": doc_id, "position": lsp_position})),
    st.tuples(st.just("textDocument/codeAction"), st.fixed_dictionaries(
        {"textDocument": doc_id, "range": lsp_range, "context": st.just({"diagnostics": []})})),
    st.tuples(st.just("workspace/executeCommand"), st.fixed_dictionaries(
        {"command": st.sampled_from([convert.REWRITE_COMMAND, convert.FILL_HOLES_COMMAND]),
         "arguments": st.one_of(
             st.tuples(st.fixed_dictionaries({"uri": URIS, "range": lsp_range, "apply": st.booleans()})).map(list),
             st.tuples(URIS, lsp_range).map(list))})),
    st.tuples(st.just("codeAction/resolve"), st.fixed_dictionaries(
        {"title": texts, "data": st.fixed_dictionaries({"kind": st.sampled_from(["rewrite", "holes"]),
                                                       "uri": URIS, "range": lsp_range})})),
)


def _corrupt(draw_params: dict, key: str, value) -> dict:
    out = dict(draw_params)
    out[key] = value
    return out


MALFORMED = st.one_of(  # one field replaced by arbitrary JSON, or params that are not an object at all
    st.builds(lambda req, key, value: (req[0], _corrupt(req[1], key, value)), WELL_FORMED,
              st.sampled_from(["textDocument", "position", "range", "context", "arguments", "data", "command"]),
              json_values),
    st.tuples(st.sampled_from(["textDocument/inlineCompletion", "textDocument/completion", "dg/stats",
                               "workspace/executeCommand", "codeAction/resolve", "nope"]), json_values),
)
REQUESTS = st.one_of(WELL_FORMED, WELL_FORMED, MALFORMED)
NOTIFICATIONS = st.one_of(
    st.tuples(st.just("textDocument/didChange"), st.fixed_dictionaries(
        {"textDocument": st.fixed_dictionaries({"uri": URIS, "version": st.integers(0, 100)}),
         "contentChanges": st.lists(st.fixed_dictionaries({"range": lsp_range, "text": texts}), max_size=2)})),
    st.tuples(st.just("textDocument/didOpen"), st.fixed_dictionaries({"textDocument": st.fixed_dictionaries(
        {"uri": URIS, "languageId": st.just("python"), "version": st.integers(0, 5), "text": texts})})),
    st.tuples(st.sampled_from(["textDocument/didChange", "textDocument/didClose", "$/cancelRequest",
                               "workspace/didChangeConfiguration"]), json_values),
)


@FUZZ
@given(request=REQUESTS, before=st.lists(NOTIFICATIONS, max_size=2))
def test_fuzzed_params_always_get_exactly_one_reply(harness, request, before):
    for method, params in before:
        harness.notify(method, params)
    method, params = request
    reply = harness.request(method, params)
    assert ("result" in reply) != ("error" in reply)
    if "error" in reply:
        assert reply["error"]["code"] in (-32602, -32601, -32600, -32603, -32800, -32801, -32803), reply
        assert reply["error"]["code"] != -32603, reply  # no internal errors: bad input is named as such
    result = reply.get("result")
    if method == "textDocument/inlineCompletion" and result and result.get("items"):
        doc = harness.server.documents.get(params["textDocument"]["uri"])
        for item in result["items"]:
            for p in (item["range"]["start"], item["range"]["end"]):
                pos = Position(p["line"], p["character"])
                assert doc.position_at(doc.offset_at(pos)) == pos


async def test_live_server_survives_a_random_message_storm(client: LanguageClient):
    await initialize(client, fake_options())
    open_doc(client, "file:///a.py", "x = \n")
    rng = random.Random(1234)
    pending = []
    for i in range(150):
        method, params = _random_request(rng)
        pending.append(send_raw_request(client, f"storm-{i}", method, params))
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert len(results) == 150
    info = await settled_stats(client)
    assert info["replied"] == info["received"] - 1
    result = await client.text_document_inline_completion_async(inline_params("file:///a.py", 0, 4))
    assert [i.insert_text for i in result.items] == ["fill_0"]


def _random_request(rng: random.Random) -> tuple[str, dict]:
    method = rng.choice(["textDocument/inlineCompletion", "textDocument/completion", "textDocument/codeAction",
                         "workspace/executeCommand"])
    pos = {"line": rng.choice([0, 1, 2**31 - 1, -1, "x"]), "character": rng.choice([0, 3, 2**31 - 1, None])}
    uri = rng.choice(["file:///a.py", "file:///missing.py", 7])
    params = {"textDocument": {"uri": uri}, "position": pos, "context": {"triggerKind": rng.choice([1, 2, 9])},
              "range": {"start": pos, "end": pos}, "command": rng.choice([convert.FILL_HOLES_COMMAND, "x"]),
              "arguments": [uri]}
    return method, params


CODE = list("ab (){}[]\"'#/\\,:=") + ["\n", "\n    ", '"""', "'''", "//", "\r\n"]
code = st.lists(st.sampled_from(CODE), max_size=40).map("".join)


@settings(max_examples=500, deadline=None, database=None)
@given(before=code, after=code, automatic=st.booleans(), raw=code, language=st.sampled_from(["python", "c"]))
def test_shown_text_keeps_brackets_and_strings_balanced(before, after, automatic, raw, language):
    """The shown text never closes a bracket it did not open, unless the prefix left it open and the suffix
    does not close it, and never ends inside a string it opened."""
    doc = Document("file:///f", before + after, 1, language)
    ctx = build_cursor_context(doc, len(before), automatic=automatic, options=ContextOptions(budget=64),
                               line_canvas=8, block_canvas=16)
    completion = postprocess(raw, ctx)
    if completion is None:
        return
    syntax = syntax_for(language)
    start = statement_state(ctx.prefix, syntax)
    walk = scan(completion.text.replace(ctx.eol, "\n"), syntax, start, suffix_closes(ctx.suffix, start, syntax))
    assert walk.stray == -1, (completion.text, walk.stray)
    assert not walk.lines[-1].in_own_string(), completion.text
