"""DiffusionGemma: our engine (engine.gemma + engine.gemma_sampler) against transformers' `generate`, same
weights, prompt, settings and seed; random weights.

    python -m bench.bench_gemma                                   # CPU, a scaled-down shape (minutes)
    python -m bench.bench_gemma --shape real --device cuda --dtype bf16   # the released shape, on a GPU

Measured per run (one prompt, `--blocks` canvases of `--canvas` tokens, `--steps` denoising steps each; random
weights never converge, so every canvas runs all its steps): wall time, decoder forwards, tokens per
forward, tok/s, and the share of our time in the encoder, the decoder and the sampler (the rest). Both
produce the same tokens for the same seed (tests/engine/test_gemma_engine.py checks it); this script
checks it again at the benchmark's shape and says so. Prints a markdown table; JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import torch

from bench.bench_engine import timed
from dg_lsp.engine.gemma import load_gemma
from dg_lsp.engine.gemma_engine import TimedModel
from dg_lsp.engine.gemma_sampler import EntropyBoundConfig, generate

SHAPES = {
    # a quarter of the released width, 6 of its 30 layers, 32 of its 128 experts: seconds per canvas on a CPU
    "small": dict(vocab_size=32_768, hidden_size=704, intermediate_size=528, moe_intermediate_size=176,
                  num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, head_dim=128,
                  global_head_dim=256, num_global_key_value_heads=1, num_experts=32, top_k_experts=8,
                  sliding_window=256, layer_types=["sliding_attention"] * 5 + ["full_attention"]),
    # the released checkpoint's text config (DIFFUSIONGEMMA.md); ~26B parameters: a GPU only
    "real": dict(vocab_size=262_144, hidden_size=2816, intermediate_size=2112, moe_intermediate_size=704,
                 num_hidden_layers=30, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
                 global_head_dim=512, num_global_key_value_heads=2, num_experts=128, top_k_experts=8,
                 sliding_window=1024, layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 5),
}


def build(shape: str, canvas: int, dtype: torch.dtype, device: torch.device, where: Path):
    """transformers' model with random weights, saved and loaded by ours: the same weights in both."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DiffusionGemmaTextConfig
    from transformers.models.gemma4.configuration_gemma4 import Gemma4VisionConfig

    text = DiffusionGemmaTextConfig(**SHAPES[shape], max_position_embeddings=8192, pad_token_id=0,
                                    eos_token_id=1, bos_token_id=2)
    vision = Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=8, position_embedding_size=64, patch_size=4)
    torch.manual_seed(0)
    hf = DiffusionGemmaForBlockDiffusion(DiffusionGemmaConfig(text_config=text, vision_config=vision,
                                                              canvas_length=canvas))
    hf.save_pretrained(where, max_shard_size="2GB")
    hf = hf.to(device=device, dtype=dtype).eval()
    ours, _ = load_gemma(where, device, dtype)
    return hf, ours


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="DiffusionGemma: our engine vs transformers' generate")
    p.add_argument("--shape", choices=sorted(SHAPES), default="small")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--canvas", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    cfg = EntropyBoundConfig(steps=args.steps, canvas_length=args.canvas)
    new_tokens = args.blocks * args.canvas
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        print(f"building {args.shape} ({args.dtype}, {device})...", file=sys.stderr, flush=True)
        hf, ours = build(args.shape, args.canvas, dtype, device, Path(tmp))
        vocab = hf.config.get_text_config().vocab_size
        prompt = torch.randint(3, vocab, (1, args.prompt), generator=torch.Generator().manual_seed(1)).to(device)

        def reference():
            from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

            torch.manual_seed(0)
            out = hf.generate(prompt, max_new_tokens=new_tokens, max_denoising_steps=cfg.steps,
                              sampler_config=EntropyBoundSamplerConfig(entropy_bound=cfg.entropy_bound),
                              t_min=cfg.t_min, t_max=cfg.t_max, stability_threshold=cfg.stability_threshold,
                              confidence_threshold=cfg.confidence_threshold, eos_token_id=-1)
            return out.sequences[:, args.prompt:]

        timings: dict[str, float] = {}
        parts: list[tuple[float, float]] = []  # (encode, decode) ms of each of our runs

        def engine():
            timed = TimedModel(ours, timings)
            states = list(generate(timed, prompt, cfg, torch.Generator(device).manual_seed(0),
                                   max_new_tokens=new_tokens, eos_id=-1))
            parts.append((timings["encode_ms"], timings["decode_ms"]))
            return states[-1].tokens, len(states)

        rows = {}
        for name, fn in (("transformers generate", reference), ("ours", engine)):
            out = fn()  # the tokens (a warm-up run: `timed` warms up again)
            rows[name] = {"ms": statistics.median(timed(fn, device, args.repeat)),
                          "tokens": out[0] if name == "ours" else out,
                          "forwards": out[1] if name == "ours" else None}
            print(f"  {name}: {rows[name]['ms']:.0f} ms", file=sys.stderr, flush=True)
        enc, dec = (statistics.median(p[i] for p in parts[-args.repeat:]) for i in range(2))
        total = rows["ours"]["ms"]
        rows["ours"].update(encode=enc / total, decode=dec / total, sampler=1 - (enc + dec) / total)
        same = torch.equal(rows["ours"]["tokens"].cpu(), rows["transformers generate"]["tokens"].cpu())
    forwards = rows["ours"]["forwards"]
    params = sum(p.numel() for p in ours.parameters())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, %d threads" % torch.get_num_threads()
    lines = [f"{where}; shape {args.shape} ({params / 1e6:.0f}M parameters, {args.dtype}); prompt {args.prompt}, "
             f"{args.blocks} canvases of {args.canvas}, {args.steps} steps each; median of {args.repeat}; "
             f"{datetime.now():%Y-%m-%d %H:%M}; `python -m bench.bench_gemma "
             + " ".join(argv if argv is not None else sys.argv[1:]) + "`", "",
             "| | p50 ms | decoder forwards | tokens / forward | tok/s | encoder | decoder | sampler |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        split = (f"{r['encode']:.0%} | {r['decode']:.0%} | {r['sampler']:.0%}" if name == "ours" else "– | – | –")
        lines.append(f"| {name} | {r['ms']:,.0f} | {forwards} | {new_tokens / forwards:.1f} | "
                     f"{new_tokens / r['ms'] * 1e3:.0f} | {split} |")
    lines += ["", f"Same tokens as transformers for the same seed: {'yes' if same else 'NO'}; "
              f"ours is {rows['transformers generate']['ms'] / rows['ours']['ms']:.2f}x transformers' speed."]
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"rows": {k: {kk: vv for kk, vv in v.items() if kk != "tokens"}
                                                 for k, v in rows.items()}, "same_tokens": same,
                                        "table": lines}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
