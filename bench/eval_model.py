"""Evaluate a model on held-out files: exact match, next-identifier accuracy, whole-line edit similarity and
latency per sampler, each beside its frequency baseline (training/evaluate.py, training/identifiers.py).

    python bench/eval_model.py [--model DIR|ORG/NAME] [--single 300] [--multi 150] [--ident 300]
                               [--manifest training/corpus_manifest.json | --scan] [--out bench/results/eval]

The held-out and train files come from the pinned corpus manifest (rebuilt and hash-checked;
--allow-missing skips files that are not installed here, and says how many), or with --scan from whatever
this interpreter has. Prints markdown tables, and writes results.json and quality_vs_steps.png under --out.
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
from dg_lsp.training.evaluate import baselines, make_tasks, run_tasks
from dg_lsp.training.identifiers import make_ident_tasks
from dg_lsp.training.train import DEFAULT_MANIFEST, load_training_corpus

POLICIES = {
    "confidence": lambda steps: SamplerConfig(steps=steps, commit="schedule", confidence="max_prob"),
    "threshold": lambda steps: SamplerConfig(steps=steps, commit="threshold", threshold=0.9),
    "renoise": lambda steps: SamplerConfig(steps=steps, commit="renoise", halt_when_stable=False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="checkpoint directory or Hugging Face repo id org/name[@rev] (default: the embedded model)")
    parser.add_argument("--single", type=int, default=300)
    parser.add_argument("--multi", type=int, default=150)
    parser.add_argument("--ident", type=int, default=300, help="next-identifier tasks (half inside, half after)")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--scan", action="store_true", help="scan this interpreter instead of the manifest")
    parser.add_argument("--allow-missing", action="store_true")
    parser.add_argument("--pack", type=Path, default=None, help="rebuild the pinned corpus from this pack")
    parser.add_argument("--steps", default="4,8,16")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/eval"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    eng = engine.load(args.model, device="cpu")
    info = eng.describe()
    print(f"model {info['model']}: {info['params'] / 1e6:.2f}M params on {info['device']} ({info['dtype']})",
          file=sys.stderr)
    corpus = load_training_corpus(args)
    held = [(f.relpath, f.read_text()) for f in corpus.held_out]
    tasks = make_tasks(held, args.single, args.multi, seed=args.seed) + make_ident_tasks(held, args.ident, args.seed)
    print(f"{len(tasks)} tasks from {len(held)} held-out files "
          f"({', '.join(corpus.held_out_spec.stdlib_modules + corpus.held_out_spec.distributions)})", file=sys.stderr)
    print(f"fitting the frequency baselines on {len(corpus.train)} train files ...", file=sys.stderr)
    t0 = time.perf_counter()
    base = baselines(tasks, [f.read_text() for f in corpus.train])
    print(f"baselines fitted on {len(corpus.train)} train files ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    line = base["line"]
    baseline = {k: base[k]["exact"] for k in ("single", "multi") if k in base}
    baseline_similarity = {k: base[k]["similarity"] for k in ("single", "multi") if k in base}

    rows = []
    for policy in args.policies.split(","):
        for steps in map(int, args.steps.split(",")):
            t0 = time.perf_counter()
            last = [0.0]

            def progress(kind, done, total):
                if time.perf_counter() - last[0] > 10 or done == total:
                    last[0] = time.perf_counter()
                    print(f"  {policy} steps={steps} {kind}: {done}/{total}", file=sys.stderr)

            res = run_tasks(eng, tasks, POLICIES[policy](steps), progress)
            rows.append({"policy": policy, "steps": steps, **{f"{k}_{m}": v[m] for k, v in res.items()
                                                              for m in METRICS if m in v}})
            print(f"{policy:10s} steps {steps:2d}: single EM {res['single']['exact']:.3f} "
                  f"(p50 {res['single']['p50_ms']:.0f} ms), multi EM {res['multi']['exact']:.3f} "
                  f"(p50 {res['multi']['p50_ms']:.0f} ms), next identifier "
                  f"{res.get('ident', {}).get('next_ident', float('nan')):.3f}  [{time.perf_counter() - t0:.0f} s]",
                  file=sys.stderr)

    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"model": info, "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
            "threads": args.threads, "tasks": {"single": args.single, "multi": args.multi, "seed": args.seed},
            "baseline_line": line, "baseline": baseline,
            "baseline_similarity": baseline_similarity, "baselines": base, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(table(meta))
    print()
    print(secondary_table(meta))
    plot(meta, args.out / "quality_vs_steps.png")
    return 0


def table(meta: dict) -> str:
    out = ["| sampler | steps | single-line EM | single similarity | single p50 ms | multi-line EM | multi similarity | multi p50 ms |",
           "|---|---|---|---|---|---|---|---|"]
    for r in meta["rows"]:
        out.append(f"| {r['policy']} | {r['steps']} | {r['single_exact']:.1%} | {r['single_similarity']:.2f} | "
                   f"{r['single_p50_ms']:.0f} | {r['multi_exact']:.1%} | {r['multi_similarity']:.2f} | {r['multi_p50_ms']:.0f} |")
    b, s = meta["baseline"], meta["baseline_similarity"]
    out.append(f"| frequency baseline (`{meta['baseline_line']}`) | – | {b['single']:.1%} | {s['single']:.2f} | – | "
               f"{b['multi']:.1%} | {s['multi']:.2f} | – |")
    return "\n".join(out)


METRICS = ("exact", "similarity", "line_similarity", "next_ident", "next_ident_inside", "next_ident_after",
           "p50_ms", "p95_ms")


def secondary_table(meta: dict) -> str:
    """The metrics that move before exact match does: next-identifier accuracy and whole-line similarity."""
    out = ["| sampler | steps | next identifier | inside | after | ident line sim. | single line sim. | multi line sim. |",
           "|---|---|---|---|---|---|---|---|"]
    cell = lambda r, k, fmt: format(r[k], fmt) if k in r else "–"  # noqa: E731
    for r in meta["rows"]:
        out.append(f"| {r['policy']} | {r['steps']} | {cell(r, 'ident_next_ident', '.1%')} | "
                   f"{cell(r, 'ident_next_ident_inside', '.1%')} | {cell(r, 'ident_next_ident_after', '.1%')} | "
                   f"{cell(r, 'ident_line_similarity', '.2f')} | {cell(r, 'single_line_similarity', '.2f')} | "
                   f"{cell(r, 'multi_line_similarity', '.2f')} |")
    b = {f"{k}_{m}": v for k, d in meta["baselines"].items() if isinstance(d, dict) for m, v in d.items()}
    out.append(f"| frequency baseline | – | {cell(b, 'ident_next_ident', '.1%')} | {cell(b, 'ident_next_ident_inside', '.1%')} | "
               f"{cell(b, 'ident_next_ident_after', '.1%')} | {cell(b, 'ident_line_similarity', '.2f')} | "
               f"{cell(b, 'single_line_similarity', '.2f')} | {cell(b, 'multi_line_similarity', '.2f')} |")
    return "\n".join(out)


def plot(meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for policy in sorted({r["policy"] for r in meta["rows"]}):
        rows = [r for r in meta["rows"] if r["policy"] == policy]
        steps = [r["steps"] for r in rows]
        axes[0].plot(steps, [r["single_exact"] for r in rows], marker="o", label=f"{policy} single-line")
        axes[0].plot(steps, [r["multi_exact"] for r in rows], marker="s", linestyle="--", label=f"{policy} multi-line")
        axes[1].plot(steps, [r["single_similarity"] for r in rows], marker="o", label=f"{policy} single-line")
        axes[1].plot(steps, [r["multi_similarity"] for r in rows], marker="s", linestyle="--", label=f"{policy} multi-line")
        axes[2].plot(steps, [r["single_p50_ms"] for r in rows], marker="o", label=f"{policy} single-line")
        axes[2].plot(steps, [r["multi_p50_ms"] for r in rows], marker="s", linestyle="--", label=f"{policy} multi-line")
    axes[0].axhline(meta["baseline"]["single"], color="grey", linewidth=1, label="frequency baseline (single)")
    axes[0].set(xlabel="denoising steps", ylabel="exact match", title="Held-out exact match", xscale="log", xticks=[4, 8, 16])
    axes[1].axhline(meta["baseline_similarity"]["single"], color="grey", linewidth=1, label="frequency baseline (single)")
    axes[1].set(xlabel="denoising steps", ylabel="edit similarity", title="Held-out edit similarity", xscale="log",
                xticks=[4, 8, 16])
    axes[2].set(xlabel="denoising steps", ylabel="p50 latency (ms)", title=f"Latency, {meta['threads']} CPU threads",
                xscale="log", xticks=[4, 8, 16])
    for ax in axes:
        ax.set_xticklabels(["4", "8", "16"])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{meta['model']['model']} ({meta['model']['params'] / 1e6:.1f}M params), {meta['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
