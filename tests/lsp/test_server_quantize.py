"""`model.quantize` end to end: the real engine behind `python -m dg_lsp.cli`, a tiny random checkpoint."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from .conftest import initialize, inline_params, open_doc, wait_for_state

testing = pytest.importorskip("dg_lsp.engine.testing")

URI = "file:///work/quant.py"
SOURCE = "def add(a, b):\n    \n\nprint(add(1, 2))\n"


def engine_options(path, **model) -> dict:
    return {"backend": "engine", "model": {"device": "cpu", "path": str(path), **model}, "sampler": {"steps": 2},
            "inline": {"lineCanvas": 4, "blockCanvas": 4}, "cache": {"size": 0}}


async def test_int8_is_loaded_and_a_bad_scheme_is_named_while_still_serving(client: LanguageClient, tmp_path):
    checkpoint = testing.write_tiny_checkpoint(tmp_path / "ckpt", family="dg", seed=0)
    await initialize(client, engine_options(checkpoint, quantize="int3"))
    status = await wait_for_state(client, ("ready", "error"))
    assert status["state"] == "ready" and status["quantize"] == "none"  # the bad key fell back to its default
    messages = [m.message for m in client.messages]
    assert any("model.quantize = 'int3' is invalid: expected int8 or null" in m for m in messages), messages
    open_doc(client, URI, SOURCE)
    await client.text_document_inline_completion_async(inline_params(URI, 1, 4))  # answered, not an error

    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"dg-lsp": engine_options(checkpoint, quantize="int8")}))  # a model option: reloads
    for _ in range(2000):  # polling the statuses the client collects; no timing is asserted
        if any(s.get("quantize") == "int8" or s.get("state") == "error" for s in client.statuses):
            break
        await asyncio.sleep(0.01)
    status = client.statuses[-1]
    assert status["state"] == "ready" and status["quantize"] == "int8", (client.statuses, client.messages)
    result = await client.text_document_inline_completion_async(inline_params(URI, 1, 4))
    assert len(result.items) <= 1
