"""`dg-lsp infill FILE:LINE:COL`: fill the file at a cursor and print the middle and what it cost."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parse_location(location: str) -> tuple[Path, int, int]:
    """FILE:LINE:COL with 1-based line and column (in characters). FILE may itself contain ':'."""
    parts = location.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"location {location!r}: expected FILE:LINE:COL with 1-based line and column numbers")
    line, col = int(parts[1]), int(parts[2])
    if line < 1 or col < 1:
        raise ValueError(f"location {location!r}: line and column start at 1")
    return Path(parts[0]), line, col


def split_at(text: str, line: int, col: int, where: str) -> tuple[str, str]:
    lines = text.splitlines(keepends=True) or [""]
    if line > len(lines) + (1 if text.endswith("\n") else 0):
        raise ValueError(f"{where}: line {line} is past the end of the file ({len(lines)} lines)")
    offset = sum(len(x) for x in lines[: line - 1])
    current = lines[line - 1] if line <= len(lines) else ""
    width = len(current.rstrip("\r\n"))
    if col > width + 1:
        raise ValueError(f"{where}: column {col} is past the end of line {line} ({width} characters)")
    cut = offset + col - 1
    return text[:cut], text[cut:]


def run(args: argparse.Namespace) -> int:
    try:
        path, line, col = parse_location(args.location)
        text = path.read_text(encoding="utf-8")
        prefix, suffix = split_at(text, line, col, str(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"dg-lsp infill: {exc}", file=sys.stderr)
        return 2

    import torch

    from dg_lsp import engine
    from dg_lsp.context import fit_request
    from dg_lsp.progress import progress_bar

    t0 = time.perf_counter()
    try:
        with progress_bar("loading model") as progress:
            eng = engine.load(args.model, device=args.device, dtype=args.dtype, progress=progress,
                              family=args.family, quantize=args.quantize)
    except engine.EngineError as exc:
        print(f"dg-lsp infill: {exc}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - t0
    canvas = args.canvas or 32
    steps = args.steps or 8
    try:
        sampler = engine.SamplerConfig(
            steps=steps, temperature=args.temperature, block_length=args.block_length,
            max_steps=args.steps, entropy_bound=args.entropy_bound, temperature_min=args.temperature_min,
            temperature_max=args.temperature_max, stability_threshold=args.stability,
            confidence_threshold=args.confidence)
        request = fit_request(engine.InfillRequest.at_cursor(prefix, suffix, canvas), eng.count_tokens,
                              budget=1024, context_limit=eng.cfg.max_position_embeddings)
        generator = torch.Generator(device=eng.device).manual_seed(args.seed)
        if args.show_steps:
            for state in eng.infill(request, sampler, generator):
                shown = eng.tokenizer.decode([t for t in state.canvas.tolist()])
                print(f"step {state.step + 1}: +{state.committed} {shown!r}", file=sys.stderr)
        result = eng.complete(request, sampler, generator)
    except engine.EngineError as exc:
        print(f"dg-lsp infill: {exc}", file=sys.stderr)
        return 2
    info = eng.describe()
    sys.stdout.write(result.text)
    if not result.text.endswith("\n"):
        sys.stdout.write("\n")
    print(f"model {info['model']} ({info['family']}, {info['params'] / 1e6:.1f}M params, {info['device']} "
          f"{info['dtype']}): load {load_s:.2f} s; infill {result.total_ms:.1f} ms = encode {result.encode_ms:.1f} ms "
          f"+ {result.steps} denoising steps {result.denoise_ms:.1f} ms; canvas {result.canvas_tokens} tokens",
          file=sys.stderr)
    return 0
