"""LSP benchmark: inline-completion round trips through a real client against `python -m dg_lsp.cli`.

1. latency: N sequential `textDocument/inlineCompletion` round trips (result cache off, so every request
   runs the model) at different cursors of a real source file, once mid-line (single-line completions)
   and once at line ends (invoked there: block completions); p50 / p95 / mean / max in milliseconds.
2. burst: B x (`didChange` + `inlineCompletion`) on one document without waiting; every reply is
   collected; reports the server's peak RSS (VmHWM) before and after, and how many requests the worker
   started and finished (latest-wins should finish only the last).

    python bench/bench_lsp.py                          # the embedded default model on CPU
    python bench/bench_lsp.py --model DIR --device cpu    # or --model ORG/NAME from the HF cache
    python bench/bench_lsp.py --backend fake           # protocol/scheduler overhead only
    python bench/bench_lsp.py --write BENCHMARKS.md    # append the results as a markdown section

Not a test: tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parent.parent
DOC_URI = "file:///bench/sample.py"


def sample_source() -> str:
    """A real Python file of this repository (the server module), as the document to complete in."""
    return (ROOT / "dg_lsp" / "context.py").read_text(encoding="utf-8")


def cursors(text: str, n: int, where: str) -> list[types.Position]:
    """Cursors spread over the non-blank lines of the file. where="end": at the end of the line (an invoked
    completion there is a block: the server's block canvas); "mid": halfway through the line's text, so
    the rest of the line stays after the cursor (a single-line completion: the line canvas)."""
    lines = text.split("\n")
    if where == "end":
        spots = [(i, len(line)) for i, line in enumerate(lines) if line.strip() and i > 5]
    else:
        spots = [(i, (len(line) - len(line.lstrip())) + len(line.strip()) // 2) for i, line in enumerate(lines)
                 if len(line.strip()) >= 4 and i > 5]
    step = max(1, len(spots) // n)
    picked = [spots[(k * step) % len(spots)] for k in range(n)]
    return [types.Position(line=i, character=c) for i, c in picked]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def rss_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = LanguageClient("dg-lsp-bench", "0.1")
        self.status: dict = {}
        self.ready = asyncio.Event()

        @self.client.feature("dg/status")
        def on_status(params) -> None:
            self.status = params._asdict() if hasattr(params, "_asdict") else dict(params)
            if self.status.get("state") in ("ready", "error"):
                self.ready.set()

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def on_message(params: types.ShowMessageParams) -> None:
            print(f"server: {params.message}", file=sys.stderr)

    async def start(self) -> None:
        a = self.args
        options: dict = {"backend": a.backend, "model": {"path": a.model, "device": a.device},
                         "cache": {"size": 0}, "sampler": {"steps": a.steps} if a.steps else {},
                         "inline": {"debounceMs": a.debounce_ms}}
        if a.backend == "fake":
            options["fake"] = {"stepDelayMs": a.fake_step_ms}
        await self.client.start_io(sys.executable, "-m", "dg_lsp.cli")
        caps = types.ClientCapabilities(
            text_document=types.TextDocumentClientCapabilities(
                inline_completion=types.InlineCompletionClientCapabilities()),
            window=types.WindowClientCapabilities(work_done_progress=False))
        await self.client.initialize_async(types.InitializeParams(
            capabilities=caps, initialization_options=options, process_id=os.getpid()))
        self.client.initialized(types.InitializedParams())
        await asyncio.wait_for(self.ready.wait(), timeout=600)
        if self.status.get("state") != "ready":
            raise SystemExit(f"model did not load: {self.status}")

    @property
    def pid(self) -> int:
        return self.client._server.pid  # the server subprocess

    async def stats(self) -> dict:
        result = await self.client.protocol.send_request_async("dg/stats", {})
        return result._asdict() if hasattr(result, "_asdict") else dict(result)

    def open(self, text: str, version: int = 1) -> None:
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=DOC_URI, language_id="python", version=version, text=text)))

    def inline(self, pos: types.Position, automatic: bool):
        kind = types.InlineCompletionTriggerKind.Automatic if automatic else types.InlineCompletionTriggerKind.Invoked
        return self.client.text_document_inline_completion_async(types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=DOC_URI), position=pos,
            context=types.InlineCompletionContext(trigger_kind=kind)))

    async def latency(self, n: int, warmup: int, where: str) -> dict:
        text = sample_source()
        self.open(text)
        spots = cursors(text, n + warmup, where)
        for pos in spots[:warmup]:
            await self.inline(pos, automatic=False)
        times, shown = [], 0
        for pos in spots[warmup:]:
            start = time.perf_counter()
            result = await self.inline(pos, automatic=False)
            times.append((time.perf_counter() - start) * 1000.0)
            shown += bool(result.items)
        return {"requests": n, "p50": percentile(times, 0.5), "p95": percentile(times, 0.95),
                "mean": statistics.fmean(times), "max": max(times), "shown": shown,
                "engine_ms": self.status.get("lastLatencyMs")}

    async def burst(self, n: int) -> dict:
        text = "def total(values):\n    result = 0\n    for v in values:\n        result += v\n    \n"
        uri_version = 100
        burst_uri = DOC_URI + ".burst"
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=burst_uri, language_id="python", version=uri_version, text=text)))
        before = await self.stats()
        rss_before = rss_kib(self.pid, "VmRSS")
        line, col = 4, 4
        pending = []
        start = time.perf_counter()
        for i in range(n):
            ch = "abcdefghij"[i % 10]
            rng = types.Range(start=types.Position(line, col), end=types.Position(line, col))
            self.client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=burst_uri, version=uri_version + 1 + i),
                content_changes=[types.TextDocumentContentChangePartial(range=rng, text=ch)]))
            col += 1
            pending.append(self.client.text_document_inline_completion_async(types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=burst_uri),
                position=types.Position(line, col),
                context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic))))
        results = await asyncio.gather(*pending, return_exceptions=True)
        wall = (time.perf_counter() - start) * 1000.0
        after = await self.stats()
        errors = sum(isinstance(r, BaseException) for r in results)
        return {
            "requests": n, "replies": len(results), "errors": errors,
            "nonempty": sum(bool(getattr(r, "items", None)) for r in results),
            "wall_ms": wall,
            "started": after["started"] - before["started"], "computed": after["computed"] - before["computed"],
            "superseded": after["superseded"] - before["superseded"],
            "rss_before_mib": (rss_before or 0) / 1024, "rss_after_mib": (rss_kib(self.pid, "VmRSS") or 0) / 1024,
            "peak_rss_mib": (rss_kib(self.pid, "VmHWM") or 0) / 1024,
            "received_minus_replied": after["received"] - after["replied"] - 1,
        }

    async def stop(self) -> None:
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()


def report(args: argparse.Namespace, status: dict, lats: dict[str, dict], burst: dict) -> str:
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    model = args.model or ("fake" if args.backend == "fake" else "embedded default")
    return "\n".join([
        f"### LSP round trip — {when}",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"python {platform.python_version()}",
        f"- backend: {args.backend}; model: {model} ({status.get('model')}); device: {status.get('device')}; "
        f"kernels: {status.get('kernels')}; sampler steps: {args.steps or 'default'}; "
        f"debounce: {args.debounce_ms:g} ms",
        "",
        "| inline completion, sequential | requests | p50 ms | p95 ms | mean ms | max ms | non-empty |",
        "|---|---|---|---|---|---|---|",
        *[f"| {label}, result cache off | {lat['requests']} | {lat['p50']:.1f} | {lat['p95']:.1f} | {lat['mean']:.1f} | "
          f"{lat['max']:.1f} | {lat['shown']} |" for label, lat in lats.items()],
        "",
        "| burst: didChange + inlineCompletion | requests | replies | started | computed | superseded | "
        "non-empty replies | peak RSS MiB | RSS before / after MiB | wall ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| one document | {burst['requests']} | {burst['replies']} | {burst['started']} | {burst['computed']} | "
        f"{burst['superseded']} | {burst['nonempty']} | {burst['peak_rss_mib']:.0f} | {burst['rss_before_mib']:.0f} / "
        f"{burst['rss_after_mib']:.0f} | {burst['wall_ms']:.0f} |",
        "",
    ])


async def main_async(args: argparse.Namespace) -> str:
    bench = Bench(args)
    await bench.start()
    try:
        lats = {"single-line (cursor mid-line, line canvas)": await bench.latency(args.requests, args.warmup, "mid"),
                "block (invoked at a line end, block canvas)": await bench.latency(args.requests, args.warmup, "end")}
        burst = await bench.burst(args.burst)
    finally:
        await bench.stop()
    return report(args, bench.status, lats, burst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="checkpoint directory or Hugging Face repo id org/name[@rev] (default: the embedded model)")
    p.add_argument("--backend", choices=("engine", "fake"), default="engine")
    p.add_argument("--device", default="cpu", help="cpu (the target), cuda, auto")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the server's)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--burst", type=int, default=1000)
    p.add_argument("--debounce-ms", type=float, default=20.0,
                   help="server-side debounce of automatic triggers (inline.debounceMs; the server's default)")
    p.add_argument("--fake-step-ms", type=float, default=2.0, help="per-step delay of the fake backend")
    p.add_argument("--write", default=None, help="append the markdown section to this file")
    args = p.parse_args(argv)
    text = asyncio.run(main_async(args))
    print(text)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
