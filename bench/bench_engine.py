"""Infill speed at real shapes with random weights, side by side in one run, on a CPU or a GPU.

    python -m bench.bench_engine --device cpu --shapes 0.5b,open-dcoder-0.5b,1.5b --dtypes bf16,fp32,int8
    python -m bench.bench_engine --device cuda --shapes 0.5b,7b --dtypes bf16          # when a GPU is lent
    python -m bench.bench_engine --device cpu --shapes tiny --repeat 1                 # smoke run
    python -m bench.bench_engine --report bench/results/cpu-*.json --write BENCHMARKS.md --plot bench/results/cpu.png

Prompt: a 1,000-token prefix and a 200-token suffix (random ids). Per shape, dtype and canvas (16 tokens:
single-line; 64: block; 256: long), p50 latency of:
- (a) the reference sampler: a full forward over the whole layout per step, one token per step;
- (b) autoregressive decoding with a KV cache at the same shape: cold (the prompt encoded), and warm
  after a one-token edit at the cursor (the cache reused up to the edit; the prompt is suffix-first, so
  the AR baseline re-encodes only the edit, its best case);
- (c) our engine cold (no context cache);
- (d) our engine warm after a one-token edit at the cursor (a token typed, then deleted: the suffix moves
  by one position each time), with the family's default context reuse; for causal-context families also
  (d') with approximate reuse (the suffix's K/V moved, not recomputed; engine.context_cache).
Random weights have no confident tokens, so the engine runs the fixed "even" schedule at 4 tokens per
forward (16 -> 4 steps, 64 -> 16, 256 -> 64), no early halt; a trained model with threshold commits
decides its own count. Shapes: Qwen2.5-Coder-0.5B with our family's conventions (causal context, exact
prefix reuse), the same shape with Open-dCoder's (bidirectional, shifted logits), Qwen2.5-Coder-1.5B with
Open-dCoder's, 7B for GPUs. int8: torchao weight-only on the block linears (engine.quantize).
Each configuration writes a JSON file (--out-dir); --report turns files into tables and a plot.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from dg_lsp.engine.config import FAMILIES, ModelConfig
from dg_lsp.engine.engine import Engine
from dg_lsp.engine.model import KVCache, Transformer
from dg_lsp.engine.prompt import Layout
from dg_lsp.engine.reference import reference_infill
from dg_lsp.engine.request import SamplerConfig

QWEN_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True)
SHAPES = {  # Qwen2.5-Coder shapes (config.json of the released checkpoints); family conventions per shape
    "0.5b": dict(QWEN_05B),
    "open-dcoder-0.5b": dict(QWEN_05B, family="open-dcoder"),
    "1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True, family="open-dcoder"),
    "7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
    "tiny": dict(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True),
}
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
          "float32": torch.float32}
TOKENS_PER_FORWARD = 4


def random_model(shape: str, device: torch.device, dtype: torch.dtype) -> Transformer:
    dims = dict(SHAPES[shape])
    family = FAMILIES[dims.pop("family", "dg")]
    cfg = ModelConfig(family=family, head_dim=dims["hidden_size"] // dims["num_attention_heads"],
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


def layout(canvas: int, prefix: int, suffix: int, vocab: int, mask_id: int, seed: int = 0,
           typed: tuple[int, ...] = ()) -> Layout:
    """[bos] prefix (+ typed) [mask]*canvas suffix, random ids (seeded: the same text every call)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (prefix + suffix,), generator=gen).tolist()
    before = [1] + ids[:prefix] + list(typed)
    tokens = tuple(before + [mask_id] * canvas + ids[prefix:])
    return Layout(tokens=tokens, holes=((len(before), len(before) + canvas),), init=((),))


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


class Autoregressive:
    """Baseline (b): a suffix-first FIM prompt [bos] suffix prefix, greedy decoding with a KV cache.

    The cache of the last prompt is kept, so a request whose prompt shares a token prefix with the last
    one encodes only the rest (for a one-token edit at the cursor: one token)."""

    def __init__(self, model: Transformer):
        self.model, self.prompt, self.cache = model, (), None

    @torch.inference_mode()
    def __call__(self, lay: Layout, n_new: int) -> None:
        start, end = lay.holes[0]
        prompt = lay.tokens[:1] + lay.tokens[end:] + lay.tokens[1:start]
        keep = 0
        while keep < min(len(prompt), len(self.prompt)) - 1 and prompt[keep] == self.prompt[keep]:
            keep += 1  # at least the last prompt token is encoded again: its hidden state starts decoding
        dev = self.model.lm_head_weight.device
        past = self.cache.truncate(keep) if keep and self.cache is not None else None
        new = torch.tensor(prompt[keep:], device=dev)[None]
        cache, hidden = self.model.encode(new, torch.arange(keep, len(prompt), device=dev)[None], past, want_hidden=True)
        self.prompt, self.cache = prompt, cache
        token = self.model.logits(hidden[:, -1]).argmax(-1, keepdim=True)
        for i in range(n_new - 1):
            pos = torch.full((1, 1), len(prompt) + i, device=dev)
            cache, hidden = self.model.encode(token, pos, cache, want_hidden=True)
            token = self.model.logits(hidden[:, -1]).argmax(-1, keepdim=True)
        self.cache = KVCache([k[:, :, :len(prompt)] for k in cache.k], [v[:, :, :len(prompt)] for v in cache.v])


def bench_config(shape: str, dtype_name: str, device: torch.device, canvases: list[int], reference: set[int],
                 repeat: int, prefix: int, suffix: int, block_length: int = 0) -> dict:
    quantize = dtype_name == "int8"
    dtype = torch.bfloat16 if quantize and device.type == "cpu" else DTYPES.get(dtype_name, torch.bfloat16)
    model = random_model(shape, device, dtype)
    if quantize:
        from dg_lsp.engine.quantize import quantize_model

        quantize_model(model, "int8")
    cfg = model.cfg
    causal = cfg.family.context_attention == "causal"
    engines = {"auto": Engine(model, tokenizer=None, cfg=cfg, quantize="int8" if quantize else None)}
    if causal:
        engines["approximate"] = Engine(model, tokenizer=None, cfg=cfg, context_reuse="approximate")
    ar = Autoregressive(model)
    row = {"shape": shape, "family": cfg.family.name, "dtype": dtype_name, "params": cfg.num_params(),
           "prefix": prefix, "suffix": suffix, "block_length": block_length}
    for canvas in canvases:
        steps = max(1, canvas // TOKENS_PER_FORWARD)
        sampler = SamplerConfig(steps=steps, halt_when_stable=False, block_length=block_length)
        base = layout(canvas, prefix, suffix, cfg.vocab_size, cfg.mask_id)
        edited = layout(canvas, prefix, suffix, cfg.vocab_size, cfg.mask_id, typed=(1234,))
        turn = [0]

        def alternate():  # a token typed, then deleted: every call is one edit away from the last one
            turn[0] += 1
            return edited if turn[0] % 2 else base

        def engine_run(eng: Engine, lay: Layout) -> None:
            for _ in eng.infill_layout(lay, sampler):
                pass

        def cold():
            engines["auto"].context.clear()
            engine_run(engines["auto"], base)

        def cold_ar():
            ar.cache, ar.prompt = None, ()
            ar(base, canvas)

        results = {"c_engine_cold": cold, "b_ar_cold": cold_ar,
                   "b_ar_warm": lambda: ar(alternate(), canvas)}
        for name, eng in engines.items():
            results[f"d_engine_warm_{name}"] = (lambda e: lambda: engine_run(e, alternate()))(eng)
        for key, fn in results.items():
            row[f"{key}_{canvas}"] = statistics.median(timed(fn, device, repeat))
            print(f"  {shape} {dtype_name} canvas {canvas}: {key} {row[f'{key}_{canvas}']:.1f} ms", file=sys.stderr, flush=True)
        if canvas in reference:
            t = timed(lambda: reference_infill(model, cfg, base, canvas), device, 1)
            row[f"a_reference_{canvas}"] = statistics.median(t)
            print(f"  {shape} {dtype_name} canvas {canvas}: reference {row[f'a_reference_{canvas}']:.1f} ms",
                  file=sys.stderr, flush=True)
    return row


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_line(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from dg_lsp.engine.device import cpu_bf16_flags

    flags = "+".join(cpu_bf16_flags()) or "no native bf16"
    return f"{cpu_name()}, {torch.get_num_threads()} threads, {flags}, torch {torch.__version__}"


# ---------------------------------------------------------------- report: tables and the plot

METHODS = [("a_reference", "(a) reference sampler"), ("b_ar_cold", "(b) autoregressive, cold"),
           ("b_ar_warm", "(b) autoregressive, warm"), ("c_engine_cold", "(c) engine, cold"),
           ("d_engine_warm_auto", "(d) engine, warm"), ("d_engine_warm_approximate", "(d') engine, warm, approximate reuse")]


def label(r: dict) -> str:
    return r["shape"] + (f", blocks of {r['block_length']}" if r.get("block_length") else "")


def report(files: list[Path]) -> tuple[str, list[dict]]:
    runs = [json.loads(f.read_text()) for f in files]
    rows = [r["row"] for r in runs]
    meta = runs[0]["meta"]
    canvases = sorted({int(k.rsplit("_", 1)[1]) for r in rows for k in r if k[:2] in ("a_", "b_", "c_", "d_")})
    out = [f"Device: {meta['device']}. Prompt {meta['prefix']} + {meta['suffix']} tokens, random weights, "
           f"{TOKENS_PER_FORWARD} tokens per forward. {meta['date']}. Commands: "
           + "; ".join(sorted({f"`{r['meta']['command']}`" for r in runs})), "",
           "p50 ms (one run, median of its repeats; the reference: one repeat):", "",
           "| shape | family | dtype | method | " + " | ".join(f"canvas {c}" for c in canvases) + " |",
           "|---|---|---|---|" + "---|" * len(canvases)]
    for r in rows:
        for key, name in METHODS:
            cells = [r.get(f"{key}_{c}") for c in canvases]
            if any(v is not None for v in cells):
                out.append(f"| {label(r)} | {r['family']} | {r['dtype']} | {name} | "
                           + " | ".join("–" if v is None else f"{v:,.0f}" for v in cells) + " |")
    out += ["", "Ratios (higher: our engine faster):", "",
            "| shape | dtype | canvas | warm engine vs warm AR | cold engine vs cold AR | engine vs reference |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        for c in canvases:
            if f"c_engine_cold_{c}" not in r:
                continue
            warm = min(r[k] for k in (f"d_engine_warm_auto_{c}", f"d_engine_warm_approximate_{c}") if k in r)
            ref = f"{r[f'a_reference_{c}'] / r[f'c_engine_cold_{c}']:.1f}x" if f"a_reference_{c}" in r else "–"
            out.append(f"| {label(r)} | {r['dtype']} | {c} | {r[f'b_ar_warm_{c}'] / warm:.1f}x | "
                       f"{r[f'b_ar_cold_{c}'] / r[f'c_engine_cold_{c}']:.1f}x | {ref} |")
    return "\n".join(out), rows


def plot(rows: list[dict], path: Path) -> None:
    """Left: p50 of every method at the smallest canvas, per configuration (bars, log scale). Right: p50
    against the canvas length for the configurations measured at several lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def points(r: dict, key: str) -> list[tuple[int, float]]:
        return sorted((int(k.rsplit("_", 1)[1]), v) for k, v in r.items() if k.rsplit("_", 1)[0] == key)

    smallest = min(c for r in rows for key, _ in METHODS for c, _ in points(r, key))
    bars = [r for r in rows if f"c_engine_cold_{smallest}" in r]
    curves = {}
    for r in rows:  # one curve set per (shape, family, dtype); several files may hold different canvases
        curves.setdefault((r["shape"], r["family"], r["dtype"]), {}).update(r)
    curves = {k: v for k, v in curves.items() if len(points(v, "c_engine_cold")) > 1}
    fig, axes = plt.subplots(1, 1 + len(curves), figsize=(7 + 4.5 * len(curves), 4.2), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / len(METHODS)
    for m, (key, name) in enumerate(METHODS):
        xs = [i + m * width for i, r in enumerate(bars) if f"{key}_{smallest}" in r]
        ys = [r[f"{key}_{smallest}"] / 1e3 for r in bars if f"{key}_{smallest}" in r]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(bars))])
    ax.set_xticklabels([f"{label(r)}\n{r['family']}, {r['dtype']}" for r in bars], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("p50 seconds")
    ax.set_title(f"canvas {smallest} (single line)", fontsize=9)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=6)
    for ax, ((shape, family, dtype), r) in zip(axes[0][1:], curves.items()):
        for key, name in METHODS[1:]:
            pts = points(r, key)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] / 1e3 for p in pts], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        blocks = f", engine in blocks of {r['block_length']} at 256" if r.get("block_length") else ""
        ax.set_title(f"{shape} ({family}), {dtype}{blocks}", fontsize=9)
        ax.set_xlabel("canvas = new tokens")
        ax.set_ylabel("p50 seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Engine vs reference sampler vs autoregressive decoding, cold and warm.")
    p.add_argument("--shapes", default="0.5b")
    p.add_argument("--dtypes", default="bf16", help="comma list of bf16, fp32, fp16, int8 (int8: bf16 compute)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--canvases", default="16,64", help="canvas lengths (tokens); AR decodes as many")
    p.add_argument("--reference", default="16", help="canvases at which to run (a), slow by design ('' for none)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--block-length", type=int, default=0, help="engine: semi-autoregressive blocks (0: one)")
    p.add_argument("--prefix", type=int, default=1000)
    p.add_argument("--suffix", type=int, default=200)
    p.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    p.add_argument("--tag", default=None, help="file name prefix (default: the device type)")
    p.add_argument("--report", type=Path, nargs="*", help="JSON files to turn into tables (no measuring)")
    p.add_argument("--write", type=Path, default=None, help="with --report: append the tables to this file")
    p.add_argument("--plot", type=Path, default=None, help="with --report: write the plot here")
    args = p.parse_args(argv)
    if args.report is not None:
        text, rows = report(args.report)
        print(text)
        if args.plot:
            plot(rows, args.plot)
        if args.write:
            with args.write.open("a", encoding="utf-8") as f:
                f.write("\n" + text + "\n")
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_engine: no CUDA device here (use --device cpu)", file=sys.stderr)
        return 2
    meta = {"device": device_line(device), "prefix": args.prefix, "suffix": args.suffix,
            "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "command": "python -m bench.bench_engine " + " ".join(argv if argv is not None else sys.argv[1:])}
    canvases = [int(c) for c in args.canvases.split(",")]
    reference = {int(c) for c in args.reference.split(",") if c}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes.split(","):
        for dt in args.dtypes.split(","):
            print(f"{shape} {dt}:", file=sys.stderr, flush=True)
            row = bench_config(shape, dt, device, canvases, reference, args.repeat, args.prefix, args.suffix,
                               args.block_length)
            out = args.out_dir / f"{args.tag or device.type}-{shape}-{dt}.json"
            out.write_text(json.dumps({"meta": meta, "row": row}, indent=2) + "\n")
            print(f"  wrote {out}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
