"""Training throughput side by side: tokens/s and achieved GFLOP/s per configuration.

    python -m bench.bench_train                                   # cpu-tiny shape: fp32/bf16 x batch 8,16,32
    python -m bench.bench_train --preset gpu-30m --device cuda --batches 64,128,256
    python -m bench.bench_train --precisions fp32 --optimizers fused,foreach,loop --steps 10

Per configuration (precision x AdamW implementation x batch size), alternating configurations each
round so drifting load on a shared machine hits all alike: `--warmup` unmeasured steps, then `--steps`
measured optimizer steps on batches built beforehand (data building is timed apart and reported per
batch: with `Trainer(workers=N)` it runs in other processes). Reported:

- tokens/s: real (non-padding) tokens of the measured steps / their wall time; the median round and
  the best round (on a shared machine, the least disturbed);
- GFLOP/s: 6 x parameters x tokens/s (forward + backward of the dense weights; attention and the
  LM head on scored rows only are left out, so it is a lower bound on the work done);
- pad share: the share of positions that are padding (what sequence packing would recover).

Writes a markdown table to stdout and JSON (with device, command and date) to --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.bench_engine import device_line
from dg_lsp.training.presets import PRESETS
from dg_lsp.training.profile_steps import DEFAULT_TOKENIZER, load_tok, prebuilt, sample_texts, setup


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--optimizers", default="fused")
    parser.add_argument("--batches", default="8,16,32")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per configuration and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--out", type=Path, default=Path("bench/results/train"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tok, texts = load_tok(args.tokenizer), sample_texts()
    configs = list(itertools.product(args.precisions.split(","), args.optimizers.split(","),
                                     map(int, args.batches.split(","))))
    n = args.warmup + args.steps
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    trainers, data, data_ms = {}, {}, {}
    for precision, optimizer, batch in configs:
        key = (precision, optimizer, batch)
        trainers[key] = setup(args.preset, texts, tok, tmp / "_".join(map(str, key)), args.device,
                              precision=precision, optimizer=optimizer, batch=batch, steps=10**9)
        if batch not in data:
            t0 = time.perf_counter()
            data[batch] = prebuilt(trainers[key], n)
            data_ms[batch] = (time.perf_counter() - t0) / n * 1e3
    params = sum(p.numel() for p in next(iter(trainers.values())).model.parameters())
    print(f"{args.preset}: {params / 1e6:.2f}M params on {device_line(device)}", file=sys.stderr)

    rates: dict[tuple, list[float]] = {k: [] for k in trainers}
    for r in range(args.rounds):
        for key, trainer in trainers.items():
            batches = data[key[2]]
            for b in batches[: args.warmup]:
                trainer.train_step(b)
            sync(device)
            t0 = time.perf_counter()
            for b in batches[args.warmup:]:
                trainer.train_step(b)
            sync(device)
            tokens = sum(int(b[2].sum()) for b in batches[args.warmup:])
            rates[key].append(tokens / (time.perf_counter() - t0))
            print(f"  round {r + 1}/{args.rounds} {key}: {rates[key][-1]:.0f} tok/s", file=sys.stderr)

    rows = []
    for key, values in rates.items():
        precision, optimizer, batch = key
        valid = sum(int(b[2].sum()) for b in data[batch])
        total = sum(b[2].numel() for b in data[batch])
        med, best = statistics.median(values), max(values)
        rows.append({"precision": precision, "optimizer": optimizer, "batch": batch, "tok_per_s": med,
                     "tok_per_s_best": best, "gflops": 6 * params * med / 1e9, "gflops_best": 6 * params * best / 1e9,
                     "pad_share": 1 - valid / total, "data_ms_per_batch": data_ms[batch]})
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "device": device_line(device), "preset": args.preset, "params": params,
            "seq_len": next(iter(trainers.values())).cfg.example.seq_len, "steps": args.steps,
            "rounds": args.rounds, "rows": rows}
    shutil.rmtree(tmp, ignore_errors=True)  # the trainers' run directories: nothing is saved there
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(table(meta))
    return 0


def table(meta: dict) -> str:
    out = [f"{meta['preset']} ({meta['params'] / 1e6:.2f}M params, {meta['seq_len']} tokens/example), "
           f"{meta['device']}, {meta['date']}", "",
           "| precision | AdamW | batch | tok/s (median) | tok/s (best) | GFLOP/s (median) | pad share | data ms/batch |",
           "|---|---|---|---|---|---|---|---|"]
    for r in meta["rows"]:
        out.append(f"| {r['precision']} | {r['optimizer']} | {r['batch']} | {r['tok_per_s']:.0f} | "
                   f"{r['tok_per_s_best']:.0f} | {r['gflops']:.1f} | {r['pad_share']:.1%} | {r['data_ms_per_batch']:.0f} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
