"""Held-out quality of canvas-length policies: fixed lengths against the probe (engine.length).

    python bench/eval_length.py [--model DIR|ORG/NAME] [--single 300] [--multi 150] [--steps 8]
                                [--out bench/results/eval_length]

For each policy: exact match, edit similarity, whole-line share (training.evaluate.whole), the mean canvas
length used and p50 latency, single-line and multi-line, on the held-out files (training/corpus.py), the
server's windowing. Prints a markdown table; writes results.json and length_policy.png under --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from dg_lsp import engine
from dg_lsp.engine.request import SamplerConfig
from dg_lsp.training.corpus import collect
from dg_lsp.training.evaluate import make_tasks, run_tasks

# (name, canvas length policy, (single-line canvas, multi-line canvas): the length, or the longest one,
#  canvases: a middle the canvas cut off continues into up to this many canvases)
POLICIES = (
    ("fixed 16/48", "fixed", (16, 48), 1),  # the server's lengths
    ("fixed 24/64", "fixed", (24, 64), 1),  # this evaluation's earlier fixed policy
    ("fixed 32/64", "fixed", (32, 64), 1),  # the probe's ceilings, used as they are
    ("probe <=32/64", "probe", (32, 64), 1),
    ("16/48, continued", "fixed", (16, 48), 3),  # the server's: lines and blocks go on until they end
)
METRICS = ("exact", "similarity", "whole", "canvas_mean", "p50_ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="checkpoint directory or Hugging Face repo id org/name[@rev] (default: the embedded model)")
    parser.add_argument("--single", type=int, default=300)
    parser.add_argument("--multi", type=int, default=150)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/eval_length"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    eng = engine.load(args.model, device="cpu")
    info = eng.describe()
    print(f"model {info['model']}: {info['params'] / 1e6:.2f}M params ({info['dtype']})", file=sys.stderr)
    held = [(f.relpath, f.read_text()) for f in collect().held_out]
    tasks = make_tasks(held, args.single, args.multi, seed=args.seed)
    estimates = length_estimates(eng, tasks)
    for kind, rows_ in estimates.items():
        print(f"{kind}: first-forward length estimate vs the true middle length: " + ", ".join(
            f"threshold {r['threshold']}: correlation {r['correlation']:.2f}" for r in rows_), file=sys.stderr)
    rows = []
    for name, policy, canvas, canvases in POLICIES:
        sampler = SamplerConfig(steps=args.steps, canvas_length=policy)
        t0, last = time.perf_counter(), [0.0]

        def progress(kind, done, total):
            if time.perf_counter() - last[0] > 10 or done == total:
                last[0] = time.perf_counter()
                print(f"  {name} {kind}: {done}/{total}", file=sys.stderr)

        res = run_tasks(eng, tasks, sampler, progress, canvas=canvas, canvases=canvases)
        rows.append({"policy": name, **{f"{k}_{m}": v[m] for k, v in res.items() for m in METRICS}})
        print(f"{name}: [{time.perf_counter() - t0:.0f} s]", file=sys.stderr)
    meta = {"model": info, "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
            "threads": args.threads, "steps": args.steps,
            "tasks": {"single": args.single, "multi": args.multi, "seed": args.seed}, "rows": rows,
            "length_estimates": estimates,
            "command": "python bench/eval_length.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(table(meta))
    plot(meta, args.out / "length_policy.png")
    return 0


def length_estimates(eng, tasks, thresholds=(0.2, 0.35, 0.5, 0.7), ceilings=(32, 64)) -> dict:
    """Does the model's first forward know how long the middle is? Per kind and end-probability threshold,
    the correlation of the probe's estimate (engine.length.estimated_length at the longest canvas) with
    the true middle's token count, and the median of each."""
    import statistics

    from dg_lsp.context import fit_request
    from dg_lsp.engine.forward import CanvasForward
    from dg_lsp.engine.length import end_probability, estimated_length
    from dg_lsp.engine.prompt import build_layout
    from dg_lsp.engine.request import InfillRequest
    from dg_lsp.training.evaluate import CONTEXT_BUDGET

    end_ids = torch.tensor(sorted(eng.cfg.end_ids))
    out = {}
    for kind, ceiling in zip(("single", "multi"), ceilings):
        truth, guesses = [], {t: [] for t in thresholds}
        for task in (t for t in tasks if t.kind == kind):
            request = fit_request(InfillRequest.at_cursor(task.prefix, task.suffix, ceiling), eng.count_tokens,
                                  CONTEXT_BUDGET, context_limit=eng.cfg.max_position_embeddings)
            with torch.inference_mode():
                logits = CanvasForward(eng, build_layout(request, eng.tokenizer, eng.cfg)).logits()
            p_end = end_probability(logits, end_ids)
            truth.append(len(eng.tokenizer.encode(task.middle)))
            for t in thresholds:
                guesses[t].append(estimated_length(p_end, t))
        out[kind] = [{"threshold": t, "correlation": (statistics.correlation(g, truth) if len(set(g)) > 1 else 0.0),
                      "median_estimate": statistics.median(g), "median_true": statistics.median(truth)}
                     for t, g in guesses.items()]
    return out


def table(meta: dict) -> str:
    out = ["| canvas length | single EM | single similarity | single whole-line | single canvas | single p50 ms "
           "| multi EM | multi similarity | multi whole-block | multi canvas | multi p50 ms |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in meta["rows"]:
        cells = [f"{r[f'{k}_exact']:.1%} | {r[f'{k}_similarity']:.3f} | {r[f'{k}_whole']:.1%} | "
                 f"{r[f'{k}_canvas_mean']:.1f} | {r[f'{k}_p50_ms']:.0f}" for k in ("single", "multi")]
        out.append(f"| {r['policy']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["policy"] for r in meta["rows"]]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, metric, title in zip(axes, ("exact", "similarity", "whole", "p50_ms"),
                                 ("exact match", "edit similarity", "whole-line / whole-block share",
                                  f"p50 latency (ms), {meta['threads']} CPU threads")):
        for k, (kind, offset) in enumerate((("single", -0.2), ("multi", 0.2))):
            ax.bar([i + offset for i in range(len(names))], [r[f"{kind}_{metric}"] for r in meta["rows"]],
                   width=0.4, label=f"{kind}-line")
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_title(title)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 0.05))  # an all-zero metric still shows its axis
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.suptitle(f"Canvas length policies: {meta['model']['model']} ({meta['model']['params'] / 1e6:.1f}M params), "
                 f"{meta['steps']} steps, {meta['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
