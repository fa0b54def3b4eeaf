"""Held-out scores of two or more models side by side (bench/eval_model.py results), with the baselines.

    python -m bench.plot_compare_models v1=models/dg-coder-tiny/eval_results_v1.json \
        v2=models/dg-coder-tiny/eval_results.json --steps 4 --out models/dg-coder-tiny/v1_vs_v2.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.plot_training import save_figure

METRICS = [  # (row key, baselines path, label)
    ("single_similarity", ("single", "similarity"), "single-line\nsimilarity"),
    ("multi_similarity", ("multi", "similarity"), "multi-line\nsimilarity"),
    ("ident_next_ident", ("ident", "next_ident"), "next-identifier\naccuracy"),
    ("ident_line_similarity", ("ident", "line_similarity"), "whole-line similarity\n(identifier tasks)"),
    ("single_exact", ("single", "exact"), "single-line\nexact match"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=results.json, in the order to draw")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--policy", default="confidence")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, base = {}, None
    for item in args.runs:
        name, _, path = item.partition("=")
        data = json.loads(Path(path).read_text())
        rows = [r for r in data["rows"] if r["policy"] == args.policy and r["steps"] == args.steps]
        if not rows:
            raise SystemExit(f"{path}: no {args.policy} row at {args.steps} steps")
        series[name] = [rows[0][key] for key, _, _ in METRICS]
        base = base or [data["baselines"][a][b] for _, (a, b), _ in METRICS]
    series["frequency baseline"] = base
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(METRICS))]
        bars = ax.bar(xs, values, width, label=name, color="grey" if name == "frequency baseline" else f"C{i}")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(METRICS)), [label for _, _, label in METRICS], fontsize=8)
    ax.set(ylabel="score (0-1)", title=f"Held-out scores ({args.policy} sampler, {args.steps} steps)")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, ax, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
