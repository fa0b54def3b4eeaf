"""Named training runs: the model shape and recipe of each, as data (`--preset NAME`; flags override).

- ``cpu-tiny``: the shipped dg-coder-tiny's shape (4.85M parameters) with stage 1's recipe (fp32, batch 16);
  stage 3 ran it with `--precision bf16` and the flags in its model card.
- ``gpu-30m``: about 30M parameters for one H100/H200 in at most 9 minutes of wall time: bf16 autocast,
  fused AdamW, batch 128 x 256 tokens, data built ahead by 12 worker processes. Its schedule is fitted to
  the time: after 120 steps the measured pace decides how many of the (at most 20,000) steps fit in
  ``max_minutes`` (``Trainer.fit_schedule``), so the cosine schedule ends on time on any GPU; the rest of
  the 9 minutes is start-up (corpus rebuild and hash check, ~10 s), export and the held-out evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

from dg_lsp.training.examples import ExampleSpec
from dg_lsp.training.train import ModelShape, TrainConfig

MAX_SHARD_BYTES = 16 * 1024 * 1024  # exported weights: shards of at most 16 MiB


@dataclass(frozen=True)
class Preset:
    train: TrainConfig
    device: str = "auto"  # "auto": CUDA when available, else CPU
    workers: int = 0  # data processes
    max_minutes: float | None = None  # wall-time guard on the training loop
    eval_single: int = 300  # held-out tasks evaluated after export (0: no evaluation)
    eval_multi: int = 150
    eval_ident: int = 300
    eval_steps: int = 8


PRESETS: dict[str, Preset] = {
    "cpu-tiny": Preset(
        train=TrainConfig(),
        device="cpu",
        eval_single=0, eval_multi=0, eval_ident=0,
    ),
    "gpu-30m": Preset(
        # 8 x 512, SwiGLU 1536, 8 query / 4 KV heads: 29.4M parameters, 4.2M of them the tied embedding.
        # 6 x 29.4M x 128 x 256 = 5.8 TFLOP per step: ~25 ms at a modest 25% of an H100's dense bf16 rate,
        # ~15,000 steps (490M tokens) in 6.5 min. Data: ~2-3 ms per example on one core (measured on the
        # dev CPU), so 12 workers build ~40 batches/s; the fitted schedule absorbs whichever is slower.
        train=TrainConfig(
            shape=ModelShape(hidden=512, layers=8, heads=8, kv_heads=4, intermediate=1536, vocab=8192),
            example=ExampleSpec(),
            batch=128, steps=20_000, lr=1.5e-3, warmup=300, precision="bf16", optimizer="fused",
            log_every=50, save_every=2000,
        ),
        device="auto",
        workers=12,
        max_minutes=6.5,  # training only: leaves 2.5 of the 9 minutes for start-up, export and evaluation
        eval_single=300, eval_multi=150, eval_ident=300, eval_steps=8,
    ),
}  # fmt: skip


def parameter_count(shape: ModelShape) -> int:
    """Parameters of the dg model with this shape (tied embedding, no biases)."""
    head_dim = shape.hidden // shape.heads
    attn = shape.hidden * head_dim * (2 * shape.heads + 2 * shape.kv_heads)
    mlp = 3 * shape.hidden * shape.intermediate
    norms = 2 * shape.hidden
    return shape.vocab * shape.hidden + shape.layers * (attn + mlp + norms) + shape.hidden
