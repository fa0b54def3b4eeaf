"""Training curves from one or more runs' log.jsonl, stages placed end to end (a warm start continues the
token count of the run it started from).

    python bench/plot_training.py models/dg-coder-tiny/logs/stage1.jsonl models/dg-coder-tiny/logs/stage2.jsonl \
        --out models/dg-coder-tiny/training.png
    python bench/plot_training.py runs/fp32 runs/bf16 --overlay --labels fp32,bf16 --out bf16_vs_fp32.png

`--overlay` draws the runs on one token axis instead (the same seed and data, compared).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_log(run: Path) -> list[dict]:
    path = run if run.suffix == ".jsonl" else run / "log.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no training log (expected a log.jsonl, or the --out directory of training.train)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smooth(values: list[float], width: int) -> list[float]:
    """Trailing mean over `width` points: per-step losses swing with each batch's noise level."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - width] if i >= width else 0.0)
        out.append(total / min(i + 1, width))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or their log.jsonl files, in training order")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--smooth", type=int, default=10, help="points in the trailing mean")
    parser.add_argument("--overlay", action="store_true", help="runs side by side from token 0, not end to end")
    parser.add_argument("--labels", default=None, help="comma-separated legend names, one per run")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [r.stem if r.suffix else r.name for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"--labels: {len(labels)} names for {len(args.runs)} runs")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    offset = 0
    for i, run in enumerate(args.runs):
        rows = read_log(run)
        tokens = [(offset + r["tokens"]) / 1e6 for r in rows]
        for key, style in (("diffusion", "-"), ("ar", "--")):
            values = [r.get(key, float("nan")) for r in rows]
            ax.plot(tokens, smooth(values, args.smooth), style, color=f"C{i}", label=f"{labels[i]}: {key}")
        if i and not args.overlay:
            ax.axvline(offset / 1e6, color="grey", linewidth=1)
        if not args.overlay:
            offset += rows[-1]["tokens"]
    ax.set(xlabel="tokens seen (millions)", ylabel="cross-entropy (nats)",
           title="Training loss (diffusion: noised canvas positions; ar: next token on context rows)")
    ax.grid(alpha=0.3)
    save_figure(fig, ax, args.out)
    return 0


def save_figure(fig, ax, out: Path) -> None:
    """Legend, tight layout, then the PNG (its folder made if needed); says where it went."""
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
