"""Where the time of a training step goes: torch.profiler over a few steps, printed as a table.

    python -m dg_lsp.training.profile_steps [--preset cpu-tiny] [--precision bf16] [--batch 16] [--steps 5]
                                             [--device cpu|cuda] [--trace trace.json]

Batches are built before profiling (from this interpreter's stdlib, no manifest needed), so the table
shows the model and the optimizer; data building is measured apart (its line in the output), since
`Trainer(workers=N)` moves it off the training process. Shared with bench/bench_train.py: `setup` and
`sample_texts`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from dg_lsp.training.presets import PRESETS
from dg_lsp.training.batches import batch_at
from dg_lsp.training.train import TrainConfig, Trainer, resolve_precision

DEFAULT_TOKENIZER = Path("models/dg-coder-tiny/tokenizer.json")


def sample_texts(max_files: int = 200) -> list[str]:
    """Top-level stdlib modules of this interpreter, sorted by name: representative code, read in a second."""
    from dg_lsp.training.corpus import default_stdlib_root, skip_content_reason

    texts = []
    for path in sorted(default_stdlib_root().glob("*.py")):
        data = path.read_bytes()
        if skip_content_reason(data) is None:
            texts.append(data.decode("utf-8"))
        if len(texts) == max_files:
            break
    return texts


def load_tok(path: Path = DEFAULT_TOKENIZER):
    from dg_lsp.engine.tokenizer import Tokenizer
    from dg_lsp.training.tokenizer import load_tokenizer

    return Tokenizer(load_tokenizer(path))


def setup(preset: str, texts: list[str], tok, out: Path, device: str = "cpu", **overrides) -> Trainer:
    """A trainer of the preset's shape with `overrides` (TrainConfig fields; precision may be "auto")."""
    cfg: TrainConfig = PRESETS[preset].train
    shape = overrides.pop("shape", cfg.shape)
    cfg = replace(cfg, shape=replace(shape, vocab=tok.hf.get_vocab_size()), **overrides)
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, torch.device(device)))
    out.mkdir(parents=True, exist_ok=True)
    return Trainer(cfg, texts, tok, out, log=lambda line: None, device=device)


def prebuilt(trainer: Trainer, n: int) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(x.to(trainer.device) for x in batch_at(trainer.sampler, trainer.cfg, s)) for s in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dg_lsp.training.profile_steps", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-tiny")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None)
    parser.add_argument("--optimizer", default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup-steps", type=int, default=2, help="unprofiled steps first (allocator, caches)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--trace", type=Path, default=None, help="also write a Chrome trace here")
    parser.add_argument("--out", type=Path, default=Path("runs/profile"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in (("precision", args.precision), ("optimizer", args.optimizer),
                                   ("batch", args.batch)) if v is not None}
    overrides["steps"] = args.steps + args.warmup_steps
    trainer = setup(args.preset, sample_texts(), load_tok(args.tokenizer), args.out, args.device, **overrides)
    t0 = time.perf_counter()
    batches = prebuilt(trainer, args.steps + args.warmup_steps)
    data_s = (time.perf_counter() - t0) / len(batches)
    cfg = trainer.cfg
    print(f"{args.preset}: batch {cfg.batch} x {cfg.example.seq_len}, {cfg.precision}, AdamW {cfg.optimizer}, "
          f"{args.device}, {torch.get_num_threads()} threads; building a batch: {data_s * 1e3:.0f} ms", file=sys.stderr)
    for batch in batches[: args.warmup_steps]:
        trainer.train_step(batch)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        for i, batch in enumerate(batches[args.warmup_steps:]):
            with torch.profiler.record_function(f"step {i}"):
                trainer.train_step(batch)
            print(f"  profiled step {i + 1}/{args.steps}", file=sys.stderr)
    sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    if args.trace:
        prof.export_chrome_trace(str(args.trace))
        print(f"trace: {args.trace}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
