"""Training throughput side by side: tokens/s and achieved GFLOP/s per configuration.

    python -m bench.bench_train                                   # cpu-tiny shape: fp32/bf16 x batch 8,16,32
    python -m bench.bench_train --preset gpu-30m --device cuda --batches 64,128,256
    python -m bench.bench_train --precisions fp32 --optimizers fused,foreach,loop --steps 10
    python -m bench.bench_train --precisions bf16 --batches 16 --shapes 256x4x640,384x6x1024,512x8x1536

`--shapes`: HIDDENxLAYERSxINTERMEDIATE[xHEADSxKV_HEADS] (head_dim 64 and kv = heads/2 by default), to pick
the shape a time budget trains best from measured throughput.

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
from dg_lsp.training.train import ModelShape
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
    parser.add_argument("--shapes", default=None, help="HxLxI[xHEADSxKV],... (default: the preset's shape)")
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
    shapes = [parse_shape(s, tok.hf.get_vocab_size()) for s in args.shapes.split(",")] if args.shapes else [None]
    configs = list(itertools.product(args.precisions.split(","), args.optimizers.split(","),
                                     map(int, args.batches.split(",")), shapes))
    n = args.warmup + args.steps
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    trainers, data, data_ms = {}, {}, {}
    for precision, optimizer, batch, shape in configs:
        key = (precision, optimizer, batch, shape)
        extra = {} if shape is None else {"shape": shape}
        trainers[key] = setup(args.preset, texts, tok, tmp / f"run{len(trainers)}", args.device,
                              precision=precision, optimizer=optimizer, batch=batch, steps=10**9, **extra)
        if batch not in data:
            t0 = time.perf_counter()
            data[batch] = prebuilt(trainers[key], n)
            data_ms[batch] = (time.perf_counter() - t0) / n * 1e3
    params_of = {k: sum(p.numel() for p in t.model.parameters()) for k, t in trainers.items()}
    params = params_of[configs[0]]
    print(f"{args.preset}: {sorted({round(v / 1e6, 2) for v in params_of.values()})}M params on "
          f"{device_line(device)}", file=sys.stderr)

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
            print(f"  round {r + 1}/{args.rounds} {key[:3]} {shape_name(trainer.cfg.shape)}: "
                  f"{rates[key][-1]:.0f} tok/s", file=sys.stderr)

    rows = []
    for key, values in rates.items():
        precision, optimizer, batch, _ = key
        shape, params = trainers[key].cfg.shape, params_of[key]
        valid = sum(int(b[2].sum()) for b in data[batch])
        total = sum(b[2].numel() for b in data[batch])
        med, best = statistics.median(values), max(values)
        rows.append({"precision": precision, "optimizer": optimizer, "batch": batch, "shape": shape_name(shape),
                     "params": params, "tok_per_s": med,
                     "tok_per_s_best": best, "gflops": 6 * params * med / 1e9, "gflops_best": 6 * params * best / 1e9,
                     "pad_share": 1 - valid / total, "data_ms_per_batch": data_ms[batch]})
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "device": device_line(device), "preset": args.preset, "params": params_of[configs[0]],
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
           "| shape (HxLxI, heads/kv) | params | precision | AdamW | batch | tok/s (median) | tok/s (best) | "
           "GFLOP/s (median) | pad share | data ms/batch |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in meta["rows"]:
        out.append(f"| {r.get('shape', '')} | {r.get('params', meta['params']) / 1e6:.2f}M | {r['precision']} | "
                   f"{r['optimizer']} | {r['batch']} | {r['tok_per_s']:.0f} | "
                   f"{r['tok_per_s_best']:.0f} | {r['gflops']:.1f} | {r['pad_share']:.1%} | {r['data_ms_per_batch']:.0f} |")
    return "\n".join(out)


def parse_shape(text: str, vocab: int) -> ModelShape:
    """"512x8x1536" or "512x8x1536x8x4": hidden x layers x intermediate [x heads x kv heads]."""
    parts = [int(x) for x in text.lower().split("x")]
    if len(parts) not in (3, 5):
        raise SystemExit(f"--shapes: {text!r} is not HIDDENxLAYERSxINTERMEDIATE[xHEADSxKV_HEADS]")
    hidden, layers, inter = parts[:3]
    heads, kv = parts[3:] if len(parts) == 5 else (hidden // 64, max(1, hidden // 128))
    return ModelShape(hidden=hidden, layers=layers, heads=heads, kv_heads=kv, intermediate=inter, vocab=vocab)


def shape_name(shape: ModelShape) -> str:
    return f"{shape.hidden}x{shape.layers}x{shape.intermediate}, {shape.heads}/{shape.kv_heads}"


if __name__ == "__main__":
    sys.exit(main())
