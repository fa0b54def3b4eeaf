"""Engine speed, side by side in one run: (a) the reference sampler, (b) autoregressive decoding with a KV
cache, (c) our engine — same model, same prompt, random weights of real shapes.

    python -m bench.bench_engine --shapes 0.5b,7b          # on a GPU (bf16)
    python -m bench.bench_engine --shapes tiny --device cpu  # smoke run of the script itself

Prompt: a 1,000-token prefix and a 250-token suffix (random ids). Measured per shape:
- single-line infill (32-token canvas) and multi-line infill (128-token canvas): p50 latency of each method;
- tokens per forward: (a) and (b) commit one token per forward; (c) commits canvas/steps (with random
  weights no confidence is meaningful, so the engine runs the fixed "even" schedule: 8 steps for the
  32-token canvas, 16 for 128, 32 for 256);
- tok/s on a 256-token canvas;
- the floor: weight bytes / measured memory bandwidth, per forward, and times the forwards each method needs.
Prints a markdown table (paste into BENCHMARKS.md with the device and date) and writes JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import torch

from dg_lsp.engine.config import FAMILIES, ModelConfig
from dg_lsp.engine.engine import Engine
from dg_lsp.engine.model import Transformer
from dg_lsp.engine.prompt import Layout
from dg_lsp.engine.reference import reference_infill
from dg_lsp.engine.request import SamplerConfig

SHAPES = {  # Qwen2.5-Coder shapes (config.json of the released checkpoints)
    "0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "tiny": dict(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True),
}
CANVAS_STEPS = {32: 8, 128: 16, 256: 32}


def random_model(shape: str, device: torch.device, dtype: torch.dtype) -> Transformer:
    dims = SHAPES[shape]
    cfg = ModelConfig(family=FAMILIES["dg"], head_dim=dims["hidden_size"] // dims["num_attention_heads"],
                      max_position_embeddings=4096, attention_bias=True, mask_id=3, pad_id=0, eos_id=2, bos_id=1,
                      rope_theta=1e6, name=f"random-{shape}", **dims)
    with torch.device("meta"):
        model = Transformer(cfg)
    model = model.to_empty(device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return model.eval()


def layout(canvas: int, prefix: int, suffix: int, vocab: int, mask_id: int, seed: int = 0) -> Layout:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (prefix + suffix,), generator=gen).tolist()
    tokens = tuple([1] + ids[:prefix] + [mask_id] * canvas + ids[prefix:])
    return Layout(tokens=tokens, holes=((prefix + 1, prefix + 1 + canvas),), init=((),))


def timed(fn, device: torch.device, repeat: int) -> list[float]:
    fn()  # warm-up: kernels compiled, graphs captured, caches allocated
    out = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


@torch.inference_mode()
def autoregressive(model: Transformer, lay: Layout, n_new: int) -> None:
    """Baseline (b): encode prefix + suffix once (FIM-style prompt), then one token per forward."""
    start, _ = lay.holes[0]
    prompt = torch.tensor(lay.tokens[:start] + lay.tokens[start + n_new:], device=model.lm_head_weight.device)[None]
    positions = torch.arange(prompt.shape[1], device=prompt.device)[None]
    cache, hidden = model.encode(prompt, positions, want_hidden=True)
    token = model.logits(hidden[:, -1]).argmax(-1, keepdim=True)
    for i in range(n_new - 1):
        pos = torch.full((1, 1), prompt.shape[1] + i, device=prompt.device)
        cache, hidden = model.encode(token, pos, cache, want_hidden=True)
        token = model.logits(hidden[:, -1]).argmax(-1, keepdim=True)


def bandwidth_gbs(device: torch.device) -> float:
    """Device memory bandwidth from a large copy: reads + writes over the time taken."""
    n = (1 << 28) if device.type == "cuda" else (1 << 24)
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    times = timed(lambda: dst.copy_(src), device, 10)
    return 2 * n * 4 / (statistics.median(times) / 1e3) / 1e9


def bench_shape(shape: str, device: torch.device, dtype: torch.dtype, repeat: int, prefix: int, suffix: int,
                reference: bool) -> dict:
    model = random_model(shape, device, dtype)
    cfg = model.cfg
    eng = Engine(model, tokenizer=None, cfg=cfg)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = bandwidth_gbs(device)
    floor_ms = weight_bytes / (bw * 1e9) * 1e3
    row = {"shape": shape, "params": sum(p.numel() for p in model.parameters()), "weight_gb": weight_bytes / 1e9,
           "bandwidth_gbs": bw, "floor_ms_per_forward": floor_ms, "cuda_graphs": eng.graphs is not None}
    for canvas in (32, 128, 256):
        steps = CANVAS_STEPS[canvas]
        lay = layout(canvas, prefix, suffix, cfg.vocab_size, cfg.mask_id)
        sampler = SamplerConfig(steps=steps, halt_when_stable=False)

        def ours():
            eng._context = None  # a fresh request each time: the context encode is part of the latency
            for _ in eng.infill_layout(lay, sampler):
                pass

        row[f"engine_{canvas}_ms"] = statistics.median(timed(ours, device, repeat))
        row[f"engine_{canvas}_tok_per_fwd"] = canvas / steps
        row[f"ar_{canvas}_ms"] = statistics.median(timed(lambda: autoregressive(model, lay, canvas), device, repeat))
        if reference and canvas <= 128:  # one full recompute per token: slow by design
            row[f"reference_{canvas}_ms"] = statistics.median(
                timed(lambda: reference_infill(model, cfg, lay, canvas), device, max(1, repeat // 3)))
        row[f"floor_{canvas}_ms"] = floor_ms * steps
        print(f"  {shape} canvas {canvas}: engine {row[f'engine_{canvas}_ms']:.1f} ms, "
              f"AR {row[f'ar_{canvas}_ms']:.1f} ms, reference {row.get(f'reference_{canvas}_ms', float('nan')):.1f} ms",
              file=sys.stderr)
    row["engine_256_tok_per_s"] = 256 / (row["engine_256_ms"] / 1e3)
    row["ar_256_tok_per_s"] = 256 / (row["ar_256_ms"] / 1e3)
    del model, eng
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def table(rows: list[dict], meta: dict) -> str:
    out = [f"Device: {meta['device']}; dtype {meta['dtype']}; prompt {meta['prefix']}+{meta['suffix']} tokens; "
           f"{meta['date']}; `{meta['command']}`", "",
           "| shape | method | single-line (32) p50 ms | multi-line (128) p50 ms | tokens/forward | tok/s @256 canvas |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['shape']} | (c) engine | {r['engine_32_ms']:.1f} | {r['engine_128_ms']:.1f} | "
                   f"{r['engine_32_tok_per_fwd']:.0f}/{r['engine_128_tok_per_fwd']:.0f}/{r['engine_256_tok_per_fwd']:.0f} | "
                   f"{r['engine_256_tok_per_s']:.0f} |")
        out.append(f"| {r['shape']} | (b) autoregressive + KV cache | {r['ar_32_ms']:.1f} | {r['ar_128_ms']:.1f} | 1 | "
                   f"{r['ar_256_tok_per_s']:.0f} |")
        if "reference_32_ms" in r:
            out.append(f"| {r['shape']} | (a) reference sampler | {r['reference_32_ms']:.1f} | "
                       f"{r['reference_128_ms']:.1f} | 1 | – |")
        out.append(f"| {r['shape']} | floor (weights / {r['bandwidth_gbs']:.0f} GB/s per forward) | "
                   f"{r['floor_32_ms']:.2f} | {r['floor_128_ms']:.2f} | – | – |")
    out += ["", "| shape | engine vs (a) single-line | engine vs (b) single-line | engine vs (b) multi-line |",
            "|---|---|---|---|"]
    for r in rows:
        ref = f"{r['reference_32_ms'] / r['engine_32_ms']:.1f}x" if "reference_32_ms" in r else "–"
        out.append(f"| {r['shape']} | {ref} | {r['ar_32_ms'] / r['engine_32_ms']:.1f}x | "
                   f"{r['ar_128_ms'] / r['engine_128_ms']:.1f}x |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Engine vs reference sampler vs autoregressive decoding.")
    parser.add_argument("--shapes", default="0.5b,7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--prefix", type=int, default=1000)
    parser.add_argument("--suffix", type=int, default=250)
    parser.add_argument("--no-reference", action="store_true", help="skip (a), the slowest part")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_engine: no CUDA device here; the figures are for a GPU (use --shapes tiny --device cpu "
              "to smoke-test the script)", file=sys.stderr)
        return 2
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    meta = {"device": name, "dtype": args.dtype, "prefix": args.prefix, "suffix": args.suffix,
            "date": date.today().isoformat(), "command": "python -m bench.bench_engine " + " ".join(argv or sys.argv[1:])}
    rows = [bench_shape(s, device, dtype, args.repeat, args.prefix, args.suffix, not args.no_reference)
            for s in args.shapes.split(",")]
    text = table(rows, meta)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
