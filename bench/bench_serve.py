"""Serving benchmark: simulated editors against the Ray Serve app (dg_lsp.serving.app), batching on and off.

Each editor sends single-line infill requests (POST /v1/infill, mode line) one after another, at cursors
in this repository's own Python files: the prefix is the text before a cursor halfway through a line, the
suffix the text after it, both cut to fit the model's context. For every (replicas, batching) pair the app
is deployed once, then 1, 8 and 32 editors run in turn; each run reports p50/p95 latency (client-side,
through Serve's HTTP proxy), throughput, errors, and the mean batch size the replicas saw.

    python -m bench.bench_serve                          # the embedded model, CPU replicas, ~5 minutes
    python -m bench.bench_serve --editors 1,8 --requests 40 --replicas 1
    python -m bench.bench_serve --report bench/results/serve.json --plot bench/results/serve.png

The client runs on the same machine as the replicas and competes with them for its cores. Not a test:
tests never time anything.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTEXT_TOKENS = 200  # prefix + suffix, leaving room for the 16-token canvas in the embedded model's 256


def cursors(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(prefix, suffix) at `n` cursors halfway through non-trivial lines of the repository's Python files,
    cut (by the embedded model's tokenizer) to CONTEXT_TOKENS with two thirds before the cursor."""
    from dg_lsp.engine import default_model_dir
    from dg_lsp.engine.tokenizer import read_tokenizer

    tok = read_tokenizer(default_model_dir())
    files = sorted(p for folder in ("dg_lsp", "engine") for p in (ROOT / folder).glob("*.py"))
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        text = rng.choice(files).read_text(encoding="utf-8")
        lines = text.split("\n")
        i = rng.randrange(len(lines))
        line = lines[i]
        if len(line.strip()) < 8:
            continue
        offset = sum(len(x) + 1 for x in lines[:i]) + len(line) - len(line.lstrip()) + len(line.strip()) // 2
        prefix, suffix = text[max(0, offset - 2000):offset], text[offset:offset + 1000]
        while len(tok.encode(prefix)) > 2 * CONTEXT_TOKENS // 3:
            prefix = prefix[len(prefix) // 8:]
        while len(tok.encode(suffix)) > CONTEXT_TOKENS // 3:
            suffix = suffix[: len(suffix) * 7 // 8]
        out.append((prefix, suffix))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def editors_run(url: str, editors: int, per_editor: int, spots: list[tuple[str, str]]) -> dict:
    import httpx

    latencies: list[float] = []
    on_replica: list[float] = []  # the reply's timings.total_ms: received to answered, on the replica
    queued: list[float] = []  # timings.queue_ms: waiting for a batch to start
    errors: dict[str, int] = {}

    async def editor(k: int, http) -> None:
        for j in range(per_editor):
            prefix, suffix = spots[(k * per_editor + j) % len(spots)]
            t0 = time.perf_counter()
            r = await http.post(f"{url}/v1/infill", json={"prefix": prefix, "suffix": suffix, "mode": "line"})
            if r.status_code == 200:
                latencies.append((time.perf_counter() - t0) * 1e3)
                timings = r.json()["timings"]
                on_replica.append(timings["total_ms"])
                queued.append(timings["queue_ms"])
            else:
                errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1

    limits = httpx.Limits(max_connections=editors + 4, max_keepalive_connections=editors + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(editor(k, http) for k in range(editors)))
        wall = time.perf_counter() - start
    return {"editors": editors, "requests": len(latencies), "errors": errors, "wall_s": wall,
            "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95),
            "mean_ms": statistics.fmean(latencies), "throughput_rps": len(latencies) / wall,
            "replica_p50_ms": percentile(on_replica, 0.5), "queue_p50_ms": percentile(queued, 0.5)}


async def replica_stats(url: str, replicas: int) -> dict[str, dict]:
    """Each replica's counters (idle replicas share the probes, so a few reach every one)."""
    import httpx

    view: dict[str, dict] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(200):
            body = (await http.get(f"{url}/v1/health")).json()
            view[body["replica"]] = body["stats"]
            if len(view) >= replicas:
                break
    return view


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args) -> dict:
    import ray
    from ray import serve

    from dg_lsp.serving.app import ServeArgs, application

    spots = cursors(256)
    editor_counts = [int(x) for x in args.editors.split(",")]
    port = free_port()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/bench"
    runs = []
    try:
        for replicas in [int(x) for x in args.replicas.split(",")]:
            for batch in (args.max_batch_size, 1):
                cfg = ServeArgs(replicas=replicas, threads=args.threads, max_batch_size=batch,
                                batch_wait_timeout_s=args.batch_wait_ms / 1000.0 if batch > 1 else 0.0)
                print(f"deploying {replicas} replica(s), max_batch_size {batch} ...", file=sys.stderr)
                serve.run(application(cfg), name="bench", route_prefix="/bench")
                asyncio.run(editors_run(url, 1, 3, spots))  # warm-up: first requests pay one-time costs
                for editors in editor_counts:
                    before = asyncio.run(replica_stats(url, replicas))
                    per_editor = max(2, args.requests // editors)
                    result = asyncio.run(editors_run(url, editors, per_editor, spots))
                    after = asyncio.run(replica_stats(url, replicas))
                    jobs = sum(after[r]["requests"] - before.get(r, {}).get("requests", 0) for r in after)
                    batches = sum(after[r]["batches"] - before.get(r, {}).get("batches", 0) for r in after)
                    result |= {"replicas": replicas, "max_batch_size": batch, "threads": args.threads,
                               "mean_batch": jobs / batches if batches else None,
                               "largest_batch": max(s["largest_batch"] for s in after.values())}
                    runs.append(result)
                    print(f"  {editors:>2} editors: p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, "
                          f"{result['throughput_rps']:.1f} req/s, mean batch {result['mean_batch']}, "
                          f"errors {result['errors']}", file=sys.stderr)
                serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()
    import torch

    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
            "model": "dg-coder-tiny (embedded)", "command": "python -m bench.bench_serve " + " ".join(sys.argv[1:]),
            "cpus": args.cpus, "runs": runs}


def report(data: dict) -> str:
    lines = ["| replicas | batching | editors | requests | p50 ms | p95 ms | on the replica, p50 ms (queued) | req/s "
             "| mean batch | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["runs"]:
        batching = f"on (≤{r['max_batch_size']})" if r["max_batch_size"] > 1 else "off"
        mean = f"{r['mean_batch']:.1f}" if r["mean_batch"] else "–"
        lines.append(f"| {r['replicas']} | {batching} | {r['editors']} | {r['requests']} | {r['p50_ms']:.0f} | "
                     f"{r['p95_ms']:.0f} | {r['replica_p50_ms']:.0f} ({r['queue_p50_ms']:.0f}) | "
                     f"{r['throughput_rps']:.1f} | {mean} | {sum(r['errors'].values())} |")
    return "\n".join(lines)


def plot(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    keys = sorted({(r["replicas"], r["max_batch_size"]) for r in data["runs"]})
    for replicas, batch in keys:
        runs = [r for r in data["runs"] if (r["replicas"], r["max_batch_size"]) == (replicas, batch)]
        label = f"{replicas} replica{'s' if replicas > 1 else ''}, batching {'on' if batch > 1 else 'off'}"
        xs = [r["editors"] for r in runs]
        ax1.plot(xs, [r["throughput_rps"] for r in runs], marker="o", label=label)
        ax2.plot(xs, [r["p95_ms"] for r in runs], marker="o", label=label)
    for ax, title in ((ax1, "throughput (requests/s)"), (ax2, "p95 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent editors")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.suptitle(f"dg-lsp on Ray Serve: {data['model']}, {data['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--editors", default="1,8,32")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--requests", type=int, default=64, help="requests per run (split among the editors)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (and Ray CPUs) per replica")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs Ray may place replicas on")
    parser.add_argument("--max-batch-size", type=int, default=32, help="batching on: at most this many per batch")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    parser.add_argument("--report", default=None, help="print the table of a results file instead of running")
    parser.add_argument("--plot", default=None, help="with --report: draw throughput and p95 latency here")
    args = parser.parse_args()
    if args.report:
        data = json.loads(Path(args.report).read_text())
        print(report(data))
        if args.plot:
            plot(data, args.plot)
        return 0
    data = run(args)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(report(data))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
