"""Batches of training examples: drawn from the train texts, collated, and a pure function of (seed, step).

Batch k uses numpy rng [seed, k] for its examples and a torch generator seeded from (seed, k) for its
noise, so the step count is the whole data position and RNG state of a run (resume needs nothing else),
and any process can build any batch (`StepBatches` under a DataLoader with workers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from dg_lsp.engine.tokenizer import Tokenizer
from dg_lsp.training.examples import Example, ExampleSpec, make_example

if TYPE_CHECKING:
    from dg_lsp.training.train import TrainConfig

SPECIAL = {"pad": 0, "bos": 1, "eos": 2, "mask": 3}


class TextSampler:
    """Draws examples from a list of texts, weighting files by size (capped so huge files do not dominate)."""

    def __init__(self, texts: list[str], tok: Tokenizer, spec: ExampleSpec):
        self.texts, self.tok, self.spec = texts, tok, spec
        weights = np.array([min(len(t), 64_000) for t in texts], dtype=np.float64)
        self.p = weights / weights.sum()

    def draw(self, rng: np.random.Generator) -> Example:
        while True:
            text = self.texts[int(rng.choice(len(self.texts), p=self.p))]
            ex = make_example(text, self.tok, rng, self.spec, SPECIAL["bos"], SPECIAL["pad"])
            if ex is not None:
                return ex


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The example stream of one step: independent of every other step, so any process can build it."""
    return np.random.default_rng([seed, step])


def step_generator(seed: int, step: int) -> torch.Generator:
    """The noise of one step (CPU generator: the same draws whatever device trains)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 1)


def batch_at(sampler: TextSampler, cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = step_rng(cfg.seed, step)
    return collate([sampler.draw(rng) for _ in range(cfg.batch)])


class StepBatches(torch.utils.data.Dataset):
    """Batches of steps start, start+1, ... for a DataLoader: workers build them ahead, in order."""

    def __init__(self, sampler: TextSampler, cfg: TrainConfig, start: int, until: int):
        self.sampler, self.cfg, self.start, self.until = sampler, cfg, start, until

    def __len__(self) -> int:
        return self.until - self.start

    def __getitem__(self, i: int):
        return batch_at(self.sampler, self.cfg, self.start + i)


def collate(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens, is_canvas, valid: [B, T], right-padded with pad tokens that no row attends to."""
    t = max(len(e.tokens) for e in examples)
    tokens = torch.full((len(examples), t), SPECIAL["pad"], dtype=torch.long)
    is_canvas = torch.zeros((len(examples), t), dtype=torch.bool)
    valid = torch.zeros((len(examples), t), dtype=torch.bool)
    for i, e in enumerate(examples):
        tokens[i, : len(e.tokens)] = torch.tensor(e.tokens)
        is_canvas[i, : len(e.tokens)] = torch.tensor(e.is_canvas)
        valid[i, : len(e.tokens)] = True
    return tokens, is_canvas, valid
