"""int8 weight-only (torchao) against the unquantized model: weight memory, quality, speed. Random weights.

    python -m bench.bench_quantize --shapes 0.5b                    # Qwen2.5-Coder-0.5B shape, fp32 on CPU
    python -m bench.bench_quantize --shapes 0.5b,7b --device cuda  # bf16 on a GPU
    python -m bench.bench_quantize --shapes tiny --requests 4       # smoke run of the script itself

One model per shape (bench_engine's random weights); the unquantized engine runs every request first,
then the same weights are quantized in place and run again. Measured per shape:
- weight memory of each (every parameter, a tied head counted once; int8 values + scales for the
  quantized linears), and of the block linears alone;
- logits relative RMS error on the canvas rows of each request (one causal forward over the layout);
- agreement: the share of committed tokens equal between the two, over a fixed set of random-token
  requests, greedy (temperature 0, the fixed "even" schedule: canvas / 4 steps, no early halt);
- p50 latency of one request (fresh context each time) for each.
Random weights have flat logits, so a tiny weight error flips near ties; the agreement is a floor for a
trained model, the logits error the like-for-like figure. Prints a markdown table; JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import date
from pathlib import Path

import torch
from torch import nn

from bench.bench_engine import SHAPES, layout, random_model, timed
from dg_lsp.engine.engine import Engine
from dg_lsp.engine.quantize import quantize_model, tensor_bytes, weight_bytes
from dg_lsp.engine.request import SamplerConfig


def linear_bytes(model: nn.Module) -> int:
    return sum(tensor_bytes(m.weight) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.startswith("layers."))


@torch.inference_mode()
def canvas_logits(eng: Engine, lay) -> torch.Tensor:
    tokens = torch.tensor(lay.tokens, device=eng.device)[None]
    positions = torch.arange(tokens.shape[1], device=eng.device)[None]
    start, end = lay.holes[0]
    hidden = eng.model.hidden(tokens, positions, causal=True)[:, start:end]
    return eng.model.logits(hidden)[0]  # [canvas, V] fp32


def run_all(eng: Engine, lays, sampler: SamplerConfig, repeat: int) -> dict:
    canvases, logits = [], []
    for lay in lays:
        eng.context.clear()
        canvases.append(list(eng.infill_layout(lay, sampler))[-1].canvas.cpu())
        logits.append(canvas_logits(eng, lay).cpu())

    def one():
        eng.context.clear()  # a fresh request each time: the context encode is part of the latency
        for _ in eng.infill_layout(lays[0], sampler):
            pass

    return {"canvases": canvases, "logits": logits, "p50_ms": statistics.median(timed(one, eng.device, repeat))}


def bench_shape(shape: str, device: torch.device, dtype: torch.dtype, n_requests: int, canvas: int, prefix: int,
                suffix: int, repeat: int) -> dict:
    model = random_model(shape, device, dtype)
    cfg = model.cfg
    lays = [layout(canvas, prefix, suffix, cfg.vocab_size, cfg.mask_id, seed=i) for i in range(n_requests)]
    sampler = SamplerConfig(steps=max(1, canvas // 4), halt_when_stable=False)
    row = {"shape": shape, "bytes_plain": weight_bytes(model), "linear_bytes_plain": linear_bytes(model)}
    plain = run_all(Engine(model, tokenizer=None, cfg=cfg), lays, sampler, repeat)
    quantize_model(model, "int8")
    row |= {"bytes_int8": weight_bytes(model), "linear_bytes_int8": linear_bytes(model)}
    quant = run_all(Engine(model, tokenizer=None, cfg=cfg, quantize="int8"), lays, sampler, repeat)
    same = sum(int((a == b).sum()) for a, b in zip(plain["canvases"], quant["canvases"]))
    errors = [float((q - p).pow(2).mean().sqrt() / p.pow(2).mean().sqrt())
              for p, q in zip(plain["logits"], quant["logits"])]
    top1 = [float((p.argmax(-1) == q.argmax(-1)).float().mean()) for p, q in zip(plain["logits"], quant["logits"])]
    row |= {"agreement": same / (n_requests * canvas), "logits_rel_rms": statistics.mean(errors),
            "logits_rel_rms_max": max(errors), "argmax_agreement": statistics.mean(top1),
            "p50_ms_plain": plain["p50_ms"], "p50_ms_int8": quant["p50_ms"]}
    print(f"  {shape}: agreement {row['agreement']:.3f}, logits rel RMS {row['logits_rel_rms']:.4f}, "
          f"{row['bytes_plain'] / 2**20:.1f} -> {row['bytes_int8'] / 2**20:.1f} MiB", file=sys.stderr)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def table(rows: list[dict], meta: dict) -> str:
    mib = 2 ** 20
    out = [f"Device: {meta['device']}; dtype {meta['dtype']}; {meta['requests']} requests, canvas {meta['canvas']}, "
           f"prompt {meta['prefix']}+{meta['suffix']} tokens; {meta['date']}; `{meta['command']}`", "",
           "| shape | weights MiB (plain -> int8) | block linears MiB | committed tokens agree | "
           "canvas argmax agree | logits rel RMS (mean / max) | p50 ms (plain / int8) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['shape']} | {r['bytes_plain'] / mib:.1f} -> {r['bytes_int8'] / mib:.1f} | "
                   f"{r['linear_bytes_plain'] / mib:.1f} -> {r['linear_bytes_int8'] / mib:.1f} | "
                   f"{r['agreement']:.1%} | {r['argmax_agreement']:.1%} | "
                   f"{r['logits_rel_rms']:.2%} / {r['logits_rel_rms_max']:.2%} | "
                   f"{r['p50_ms_plain']:.1f} / {r['p50_ms_int8']:.1f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="int8 weight-only vs unquantized: memory, agreement, speed.")
    parser.add_argument("--shapes", default="0.5b", help=f"comma-separated, from {', '.join(SHAPES)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--canvas", type=int, default=32)
    parser.add_argument("--prefix", type=int, default=256)
    parser.add_argument("--suffix", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype_name]
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "dtype": dtype_name,
            "requests": args.requests, "canvas": args.canvas, "prefix": args.prefix, "suffix": args.suffix,
            "date": date.today().isoformat(),
            "command": "python -m bench.bench_quantize " + " ".join(sys.argv[1:] if argv is None else argv)}
    rows = [bench_shape(s, device, dtype, args.requests, args.canvas, args.prefix, args.suffix, args.repeat)
            for s in args.shapes.split(",")]
    text = table(rows, meta)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
