"""`dg-lsp demo`: the real server, driven by a real LSP client, completing code in a sample file.

It starts `dg-lsp` as a subprocess over stdio, opens examples/inventory.py with the rest of a few lines
(and one whole block) deleted, asks for inline completions there, and prints each ghost text beside what
the file really had, with the round-trip latency. Then it rewrites a selection and fills a hole marker.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "inventory.py"
# (line that the cursor goes into, how many lines the middle spans): the cursor sits after the indentation
CASES = [
    ("        return self.price * self.quantity", 1),
    ("        self.items[item.name] = item", 1),
    ("            raise KeyError(name)", 1),
    ("        return len(self.items)", 1),
    ("        return iter(self.items.values())", 1),
    ("        return sum(item.total() for item in self.items.values())", 1),
    ("    inventory = Inventory()", 1),
    ("        if not os.path.exists(path):", 2),
]


def capabilities() -> types.ClientCapabilities:
    return types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(),
            inline_completion=types.InlineCompletionClientCapabilities(),
        ),
        workspace=types.WorkspaceClientCapabilities(apply_edit=False),
        window=types.WindowClientCapabilities(work_done_progress=True),
    )


def cut(text: str, line_text: str, n_lines: int) -> tuple[str, str, types.Position]:
    """The text with the middle removed, the middle, and the cursor position (line, UTF-16 column)."""
    lines = text.splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if line.rstrip("\n") == line_text)
    indent = len(line_text) - len(line_text.lstrip())
    middle = "".join(lines[i: i + n_lines])[indent:].rstrip("\n")
    remaining = lines[:i] + [line_text[:indent] + "\n"] + lines[i + n_lines:]
    return "".join(remaining), middle, types.Position(line=i, character=indent)


async def run(args: argparse.Namespace) -> int:
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("dg-lsp-demo", "v1")
    progress_shown: dict[str, float] = {}

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def _create(params):
        return None

    @client.feature(types.PROGRESS)
    def _progress(params):
        value = params.value
        message = getattr(value, "message", None) or (value.get("message") if isinstance(value, dict) else None)
        kind = getattr(value, "kind", None) or (value.get("kind") if isinstance(value, dict) else None)
        if message and time.perf_counter() - progress_shown.get("t", 0) > 0.5:
            progress_shown["t"] = time.perf_counter()
            print(f"  server: {message}", file=sys.stderr)
        if kind == "end":
            print("  server: model loaded", file=sys.stderr)

    status: dict = {}
    ready = asyncio.Event()

    @client.feature("dg/status")
    def _status(params):
        data = params._asdict() if hasattr(params, "_asdict") else dict(params)
        status.update(data)
        if data.get("state") in ("ready", "error"):
            ready.set()

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _message(params):
        print(f"  server says: {params.message}", file=sys.stderr)

    command = [sys.executable, "-m", "dg_lsp.cli"]
    print(f"starting the server: {' '.join(command)}", file=sys.stderr)
    await client.start_io(*command)
    options: dict = {"inline": {"debounceMs": 0}}
    if args.model:  # a directory as an absolute path; anything else (a Hugging Face repo id) as given
        path = Path(args.model).expanduser()
        options["model"] = {"path": str(path.resolve()) if path.exists() else args.model}
    if args.device:
        options.setdefault("model", {})["device"] = args.device
    if args.family:
        options.setdefault("model", {})["family"] = args.family
    t0 = time.perf_counter()
    await client.initialize_async(types.InitializeParams(capabilities=capabilities(), initialization_options=options))
    client.initialized(types.InitializedParams())
    await asyncio.wait_for(ready.wait(), timeout=300)
    load_s = time.perf_counter() - t0
    if status.get("state") != "ready":
        print(f"the server could not load the model: {status}", file=sys.stderr)
        return 1
    print(f"model {status.get('model')} on {status.get('device')} ({status.get('kernels')} kernels), "
          f"ready in {load_s:.2f} s\n")

    text = SAMPLE.read_text(encoding="utf-8")
    uri = SAMPLE.as_uri()
    latencies, hits = [], 0
    for version, (line_text, n_lines) in enumerate(CASES, start=1):
        doc, expected, position = cut(text, line_text, n_lines)
        if version == 1:
            client.text_document_did_open(types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=doc)))
        else:
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=doc)]))
        t = time.perf_counter()
        result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=position,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
        ms = (time.perf_counter() - t) * 1e3
        latencies.append(ms)
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        ghost = items[0].insert_text if items else ""
        ghost = ghost if isinstance(ghost, str) else ghost.value
        ok = ghost.rstrip() == expected.rstrip()
        hits += ok
        print(f"line {position.line + 1:3d} {'✓' if ok else '✗'} {ms:6.0f} ms")
        print(f"    file had: {expected!r}")
        print(f"    ghost   : {ghost!r}")

    # Rewrite a selection and fill a hole through the commands the editor clients use.
    doc = text.replace("        return self.price * self.quantity", "        return self.price*self.quantity")
    version = len(CASES) + 1
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=doc)]))
    line = doc.splitlines().index("        return self.price*self.quantity")
    selection = types.Range(start=types.Position(line=line, character=8), end=types.Position(line=line, character=39))
    t = time.perf_counter()
    edit = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dg-lsp.rewriteSelection", arguments=[{"uri": uri, "range": _range_json(selection), "apply": False}]))
    print(f"\nrewrite selection {doc.splitlines()[line][8:]!r} -> {_edit_text(edit)!r} "
          f"({(time.perf_counter() - t) * 1e3:.0f} ms)")
    doc = text.replace("        self.items = {}", "        self.items = <FILL>")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version + 1),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=doc)]))
    t = time.perf_counter()
    edit = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="dg-lsp.fillHoles", arguments=[{"uri": uri, "apply": False}]))
    print(f"fill holes 'self.items = <FILL>' -> {_edit_text(edit)!r} ({(time.perf_counter() - t) * 1e3:.0f} ms)")

    print(f"\n{hits}/{len(CASES)} completions match the file exactly; inline completion round trip "
          f"p50 {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms (server, real LSP client)")
    if not args.model:
        print("The embedded model is small and was trained on two CPU cores: it shows the path, not useful "
              "completions\n(models/dg-coder-tiny/MODEL_CARD.md). `dg-lsp demo --model DIR` (or ORG/NAME) runs "
              "this with a real checkpoint.")
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return 0


def _range_json(r: types.Range) -> dict:
    return {"start": {"line": r.start.line, "character": r.start.character},
            "end": {"line": r.end.line, "character": r.end.character}}


def _edit_text(edit) -> str:
    """The new text of a WorkspaceEdit as the client receives it (plain JSON objects)."""
    data = edit._asdict() if hasattr(edit, "_asdict") else edit
    changes = data.get("changes") if isinstance(data, dict) else None
    if not changes:
        return ""
    edits = next(iter(changes.values()))
    first = edits[0]
    return first["newText"] if isinstance(first, dict) else getattr(first, "newText", "")


def main(args: argparse.Namespace) -> int:
    return asyncio.run(run(args))
