"""Batched denoising (engine.batch.complete_batch) against one request after another (complete_sequential).

    python -m bench.bench_batch --repeat 7                  # embedded model, B = 1..16 -> results/batch.json
    python -m bench.bench_batch --shape 0.5b --dtype bf16 --batches 1,2,4,8 --repeat 3 --prefix-chars 300 \
        --suffix-chars 100 --steps 4 --canvases 16          # also --shape open-dcoder-0.5b (bidirectional)
    python -m bench.bench_batch --repeat 5 --halt --commit threshold --no-compact \
        --out bench/results/batch-threshold-halt.json      # requests finish apart: leave vs stay as padding

Requests are real code: windows of this repository's engine sources around distinct cursors, canvases of
16, 24 and 32 tokens in turn, one hole each. With --shape the weights are random at a real shape
(bench.bench_engine.SHAPES) and the embedded model's tokenizer serves the text (its ids are a subset).
Per batch size B, alternating the two paths, `--repeat` times:
- throughput: B requests / wall time, and canvas tokens / wall time;
- latency of each request from the moment the B requests are handed over: sequential, when its own
  `complete` returns (it waits for the ones before it); batched, when the batch returns (all at once);
- CPU time of the process (both threads); under other load OpenMP's spin-waiting inflates it as well.
Medians over repeats, and the fastest repeat (on a shared machine, the least disturbed one). Whether
the two paths gave the same texts is recorded too (expected at fp32; in bf16 a near-tie may differ).

On 2 CPU threads the batch pays in the denoising steps (one forward of B x 16-32 rows instead of B small
ones); the per-request context encode, half the time at 0.5B, is already compute-bound at ~120 rows:
encoding 8 contexts as one right-padded batch measured the same as one by one (2.4 s either way), which
is why engine.batch_forward keeps it per request.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from bench.bench_engine import DTYPES, device_line, random_model
from dg_lsp.engine import default_model_dir
from dg_lsp.engine.batch import complete_batch, complete_sequential, denoise
from dg_lsp.engine.batch_forward import Member
from dg_lsp.engine.engine import Engine, load
from dg_lsp.engine.errors import RequestError
from dg_lsp.engine.prompt import build_layout
from dg_lsp.engine.request import InfillRequest, SamplerConfig
from dg_lsp.engine.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["engine/sampler.py", "engine/engine.py", "engine/forward.py", "engine/model.py"]


def requests(eng, n: int, prefix_chars: int, suffix_chars: int, canvases: list[int]) -> list[InfillRequest]:
    """n distinct cursor completions: a cursor every ~400 characters through the sources; a prefix that
    would not fit the model's context is shortened from the left until it does."""
    text = "\n".join((ROOT / s).read_text() for s in SOURCES)
    out = []
    for i in range(n):
        cut = prefix_chars + 397 * i
        for start in range(cut - prefix_chars, cut, 20):
            request = InfillRequest.at_cursor(text[start: cut], text[cut: cut + suffix_chars],
                                              canvases[i % len(canvases)])
            try:
                build_layout(request, eng.tokenizer, eng.cfg)
                break
            except RequestError:
                continue
        out.append(request)
    return out


def engine_for(args) -> Engine:
    if args.shape is None:
        return load(args.model, device="cpu", dtype=args.dtype)
    model = random_model(args.shape, torch.device("cpu"), DTYPES[args.dtype or "bf16"])
    tokenizer, cfg = load_tokenizer(default_model_dir(), model.cfg)
    return Engine(model, tokenizer, cfg)


def run_sequential(eng, batch, sampler) -> tuple[float, list[float], list]:
    """Wall ms and each request's latency (ms since the batch was handed over)."""
    t0 = time.perf_counter()
    out, latencies = [], []
    for request in batch:
        out += complete_sequential(eng, [request], sampler)
        latencies.append((time.perf_counter() - t0) * 1e3)
    return latencies[-1], latencies, out


def run_batched(eng, batch, sampler, compact: bool = True) -> tuple[float, list[float], list]:
    t0 = time.perf_counter()
    if compact:
        out = complete_batch(eng, batch, sampler)
    else:  # the same members through the loop with finished requests left in as padding
        out = denoise(eng, [Member(eng, build_layout(r, eng.tokenizer, eng.cfg), sampler, None, None) for r in batch],
                      compact=False)
    wall = (time.perf_counter() - t0) * 1e3
    return wall, [wall] * len(batch), out


def measure(eng, batch, sampler, paths: dict, repeat: int) -> dict:
    runs = {name: {"wall": [], "cpu": [], "latency": []} for name in paths}
    texts = {}
    tokens = sum(h.canvas for r in batch for h in r.holes)
    for k in range(repeat):
        order = list(paths.items()) if k % 2 == 0 else list(paths.items())[::-1]  # alternate: drift hits both
        for name, fn in order:
            c0 = time.process_time()
            wall, latencies, out = fn(eng, batch, sampler)
            runs[name]["cpu"].append((time.process_time() - c0) * 1e3)
            runs[name]["wall"].append(wall)
            runs[name]["latency"] += latencies
            failed = [o for o in out if isinstance(o, Exception)]
            if failed:
                raise RuntimeError(f"{name}: {len(failed)} of {len(out)} requests failed, e.g. {failed[0]!r}")
            texts[name] = [o.texts for o in out]
    row = {}
    for name, r in runs.items():
        wall = statistics.median(r["wall"])
        lat = sorted(r["latency"])
        row[name] = {"wall_ms": wall, "walls_ms": r["wall"], "min_wall_ms": min(r["wall"]),
                     "cpu_ms": statistics.median(r["cpu"]),
                     "requests_per_s": len(batch) / wall * 1e3, "tokens_per_s": tokens / wall * 1e3,
                     "latency_p50_ms": statistics.median(lat), "latency_max_ms": lat[-1]}
    row["identical"] = all(t == texts["sequential"] for t in texts.values())
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    p.add_argument("--shape", default=None, help="random weights at this bench_engine shape instead (e.g. 0.5b)")
    p.add_argument("--dtype", default=None, help="float32, bf16, ... (default: the engine's choice; bf16 for --shape)")
    p.add_argument("--batches", default="1,2,4,8,16")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--halt", action="store_true", help="halt when stable (default: fixed work per request)")
    p.add_argument("--commit", default="schedule", choices=["schedule", "threshold"])
    p.add_argument("--canvases", default="16,24,32")
    p.add_argument("--prefix-chars", type=int, default=600)
    p.add_argument("--suffix-chars", type=int, default=200)
    p.add_argument("--no-compact", action="store_true", help="also measure finished requests kept as padding")
    p.add_argument("--out", default=None, help="JSON file (default: bench/results/batch[-shape-dtype].json)")
    p.add_argument("--plot", nargs="+", default=None, metavar="JSON",
                   help="no run: plot requests/s against B from these result files into bench/results/batch.png")
    args = p.parse_args(argv)
    if args.plot:
        plot([Path(f) for f in args.plot], ROOT / "bench" / "results" / "batch.png")
        return 0
    torch.set_num_threads(args.threads)
    eng = engine_for(args)
    sampler = SamplerConfig(steps=args.steps, halt_when_stable=args.halt, commit=args.commit)
    paths = {"sequential": run_sequential, "batched": run_batched}
    if args.no_compact:
        paths["batched_padding"] = lambda e, b, s: run_batched(e, b, s, compact=False)
    batches = [int(b) for b in args.batches.split(",")]
    pool = requests(eng, max(batches), args.prefix_chars, args.suffix_chars, [int(c) for c in args.canvases.split(",")])
    run_batched(eng, pool[:2], sampler)  # warm-up: first calls allocate
    rows = []
    for b in batches:
        row = {"batch": b, **measure(eng, pool[:b], sampler, paths, args.repeat)}
        rows.append(row)
        print(f"B={b}: " + ", ".join(f"{n} {row[n]['wall_ms']:.0f} ms" for n in paths), file=sys.stderr)
    d = eng.describe()
    meta = {"command": "python -m bench.bench_batch " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": datetime.now().isoformat(timespec="seconds"), "device": device_line(torch.device("cpu")),
            "model": d["model"], "family": d["family"], "dtype": d["dtype"], "params": d["params"],
            "sampler": {"steps": args.steps, "halt_when_stable": args.halt, "commit": args.commit},
            "prefix_chars": args.prefix_chars, "suffix_chars": args.suffix_chars, "canvases": args.canvases,
            "repeat": args.repeat}
    suffix = "" if args.shape is None else f"-{args.shape}-{args.dtype or 'bf16'}"
    out = Path(args.out or ROOT / "bench" / "results" / f"batch{suffix}.json")
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(table(meta, rows, list(paths)))
    return 0


def plot(files: list[Path], out: Path) -> None:
    """Requests/s against batch size, sequential and batched, one panel per result file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(files), figsize=(5.5 * len(files), 4), squeeze=False)
    for ax, f in zip(axes[0], files):
        data = json.loads(f.read_text())
        meta, rows = data["meta"], data["rows"]
        for name, style in (("sequential", "o--"), ("batched", "s-")):
            ax.plot([r["batch"] for r in rows], [r[name]["requests_per_s"] for r in rows], style, label=name)
        ax.set(xscale="log", xlabel="requests in the batch (B)", ylabel="requests/s",
               title=f"{meta['model']} ({meta['dtype']}, {meta['params'] / 1e6:.0f}M)")
        ax.set_xticks([r["batch"] for r in rows], [str(r["batch"]) for r in rows])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Batched denoising vs one request after another, {meta['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def table(meta: dict, rows: list[dict], paths: list[str]) -> str:
    lines = [f"{meta['model']} ({meta['family']}, {meta['dtype']}, {meta['params'] / 1e6:.1f}M params), "
             f"{meta['device']}; {meta['sampler']}; medians of {meta['repeat']} runs", "",
             "| B | path | wall ms | min wall ms | CPU ms | req/s | tok/s | latency p50 ms | latency max ms "
             "| batched/sequential req/s (median; min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        base = row["sequential"]
        for name in paths:
            r = row[name]
            ratio = ("" if name == "sequential" else f"{base['wall_ms'] / r['wall_ms']:.2f}x; "
                     f"{base['min_wall_ms'] / r['min_wall_ms']:.2f}x")
            lines.append(f"| {row['batch']} | {name} | {r['wall_ms']:.0f} | {r['min_wall_ms']:.0f} | "
                         f"{r['cpu_ms']:.0f} | "
                         f"{r['requests_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['latency_p50_ms']:.0f} | "
                         f"{r['latency_max_ms']:.0f} | {ratio} |")
    lines.append("")
    lines.append("identical texts: " + ", ".join(f"B={r['batch']}: {r['identical']}" for r in rows))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
