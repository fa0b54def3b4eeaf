"""Train the embedded diffusion code model.

Objective (per batch of infill-shaped examples, see training/examples.py):
- masked diffusion on the canvas: each example draws t ~ U(t_min, 1); each canvas position is noised
  with probability t; of the noised, `uniform_share` get a random token instead of the mask, so the model
  also learns to spot and fix wrong tokens (what the renoise sampler and rewrite scoring rely on). The loss
  is cross-entropy on noised positions, plus `clean_weight` times that on clean canvas positions.
- context rows attend causally to context rows only and canvas rows to everything (family "dg"), so
  inference can encode the prefix/suffix once, exactly. An auxiliary next-token loss on a `ar_share` of
  the context rows (weight `ar_weight`) gives those rows a training signal of their own.

Resumable (every `save_every` steps: weights, optimizer and RNG states, all safetensors/JSON, no pickle),
deterministic from the seed for a given thread count, and it logs loss and throughput as it goes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dg_lsp.engine.config import FAMILIES, ModelConfig, config_from_dict
from dg_lsp.engine.loader import load_weights, save_checkpoint
from dg_lsp.engine.model import Transformer
from dg_lsp.engine.prompt import context_causal_mask
from dg_lsp.engine.tokenizer import Tokenizer
from dg_lsp.training.examples import Example, ExampleSpec, make_example

SPECIAL = {"pad": 0, "bos": 1, "eos": 2, "mask": 3}


@dataclass(frozen=True)
class ModelShape:
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 640
    vocab: int = 8192


@dataclass(frozen=True)
class TrainConfig:
    shape: ModelShape = field(default_factory=ModelShape)
    example: ExampleSpec = field(default_factory=ExampleSpec)
    batch: int = 16
    steps: int = 2000
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    t_min: float = 0.05
    uniform_share: float = 0.1
    clean_weight: float = 0.1
    ar_weight: float = 0.25
    ar_share: float = 0.25
    seed: int = 0
    init: str = ""  # warm start: a checkpoint directory whose weights replace the random init
    log_every: int = 10
    save_every: int = 100


def model_config(shape: ModelShape, seq_len: int, name: str = "dg-coder-tiny") -> ModelConfig:
    return ModelConfig(
        family=FAMILIES["dg"], vocab_size=shape.vocab, hidden_size=shape.hidden,
        intermediate_size=shape.intermediate, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, head_dim=shape.hidden // shape.heads, max_position_embeddings=seq_len,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False,
        mask_id=SPECIAL["mask"], pad_id=SPECIAL["pad"], eos_id=SPECIAL["eos"], bos_id=SPECIAL["bos"], name=name,
    )


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


def loss_on_batch(model: Transformer, cfg: TrainConfig, tokens: torch.Tensor, is_canvas: torch.Tensor,
                  valid: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    b, t = tokens.shape
    level = cfg.t_min + (1 - cfg.t_min) * torch.rand(b, 1, generator=gen)  # noise level per example
    noised = is_canvas & (torch.rand(b, t, generator=gen) < level)
    uniform = noised & (torch.rand(b, t, generator=gen) < cfg.uniform_share)
    random_tokens = torch.randint(len(SPECIAL), cfg.shape.vocab, (b, t), generator=gen)
    inputs = torch.where(uniform, random_tokens, torch.where(noised, SPECIAL["mask"], tokens))
    eye = torch.eye(t, dtype=torch.bool)
    mask = (context_causal_mask(is_canvas) & valid[:, None, :]) | eye  # padding keys unseen; rows see themselves
    positions = torch.arange(t).expand(b, t)
    hidden = model.hidden(inputs, positions, mask)  # [B, T, D]

    clean = is_canvas & ~noised
    rows = noised | clean
    logits = model.logits(hidden[rows])
    ce = F.cross_entropy(logits, tokens[rows], reduction="none")
    weight = torch.where(noised[rows], 1.0, cfg.clean_weight)
    n_noised = noised.sum().clamp_min(1)
    diffusion = (ce * weight).sum() / n_noised
    stats = {"diffusion": float((ce.detach() * noised[rows]).sum() / n_noised)}
    loss = diffusion
    if cfg.ar_weight > 0:
        ctx = ~is_canvas & valid
        pairs = ctx[:, :-1] & ctx[:, 1:] & (torch.rand(b, t - 1, generator=gen) < cfg.ar_share)
        if pairs.any():
            ar = F.cross_entropy(model.logits(hidden[:, :-1][pairs]), tokens[:, 1:][pairs])
            loss = loss + cfg.ar_weight * ar
            stats["ar"] = float(ar.detach())
    stats["loss"] = float(loss.detach())
    return loss, stats


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: Transformer, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


class Trainer:
    def __init__(self, cfg: TrainConfig, texts: list[str], tok: Tokenizer, out: Path, log=print):
        self.cfg, self.out, self.log = cfg, out, log
        self.model_cfg = model_config(cfg.shape, cfg.example.seq_len)
        torch.manual_seed(cfg.seed)
        self.model = Transformer(self.model_cfg)
        self.model.use_kernels = False  # autograd needs the torch reference ops
        with torch.no_grad():
            self.model.tok_embeddings.weight.normal_(0.0, 0.02)
        if cfg.init:  # a new schedule and recipe on top of an earlier run's weights (its optimizer is not used)
            load_weights(self.model, Path(cfg.init), torch.device("cpu"), torch.float32)
        self.opt = make_optimizer(self.model, cfg)
        self.sampler = TextSampler(texts, tok, cfg.example)
        self.rng = np.random.default_rng(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.tokens_seen = 0
        self.elapsed = 0.0

    # -- checkpoints: weights in the HF layout, optimizer moments and RNG states as safetensors, rest JSON
    def save(self) -> None:
        ckpt = self.out / "checkpoint"
        save_checkpoint(self.model, ckpt)
        names = {id(p): n for n, p in self.model.named_parameters()}
        moments = {}
        for group in self.opt.param_groups:
            for p in group["params"]:
                state = self.opt.state.get(p)
                if state:
                    moments[f"{names[id(p)]}.exp_avg"] = state["exp_avg"]
                    moments[f"{names[id(p)]}.exp_avg_sq"] = state["exp_avg_sq"]
        moments["torch_generator"] = self.gen.get_state()
        save_file(moments, str(ckpt / "optimizer.safetensors"))
        meta = {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
                "numpy_rng": self.rng.bit_generator.state, "config": asdict(self.cfg)}
        (ckpt / "trainer.json").write_text(json.dumps(meta, indent=1))

    def resume(self) -> bool:
        ckpt = self.out / "checkpoint"
        if not (ckpt / "trainer.json").is_file():
            return False
        meta = json.loads((ckpt / "trainer.json").read_text())
        if meta["config"] != json.loads(json.dumps(asdict(self.cfg))):
            raise SystemExit(f"{ckpt}: the checkpoint was made with another configuration; use a new --out")
        load_weights(self.model, ckpt, torch.device("cpu"), torch.float32)
        self.opt = make_optimizer(self.model, self.cfg)
        moments = load_file(str(ckpt / "optimizer.safetensors"))
        for group in self.opt.param_groups:
            for n, p in self.model.named_parameters():
                if any(p is q for q in group["params"]) and f"{n}.exp_avg" in moments:
                    self.opt.state[p] = {"step": torch.tensor(float(meta["step"])),
                                         "exp_avg": moments[f"{n}.exp_avg"].clone(),
                                         "exp_avg_sq": moments[f"{n}.exp_avg_sq"].clone()}
        self.gen.set_state(moments["torch_generator"])
        self.rng.bit_generator.state = meta["numpy_rng"]
        self.step, self.tokens_seen, self.elapsed = meta["step"], meta["tokens_seen"], meta["elapsed"]
        return True

    def train(self, until: int | None = None) -> list[dict]:
        cfg, history = self.cfg, []
        until = cfg.steps if until is None else min(until, cfg.steps)
        self.model.train()
        window_tokens, window_start = 0, time.perf_counter()
        while self.step < until:
            t0 = time.perf_counter()
            batch = collate([self.sampler.draw(self.rng) for _ in range(cfg.batch)])
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.step, cfg)
            loss, stats = loss_on_batch(self.model, cfg, *batch, self.gen)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.opt.step()
            self.step += 1
            n_tokens = int(batch[2].sum())
            self.tokens_seen += n_tokens
            window_tokens += n_tokens
            self.elapsed += time.perf_counter() - t0
            stats.update(step=self.step, lr=lr_at(self.step - 1, cfg), tokens=self.tokens_seen)
            history.append(stats)
            if self.step % cfg.log_every == 0 or self.step == until:
                rate = window_tokens / (time.perf_counter() - window_start)
                eta = (cfg.steps - self.step) * self.elapsed / max(1, self.step) / 60
                stats["tok_per_s"] = rate
                self.log(f"step {self.step}/{cfg.steps}  loss {stats['loss']:.3f}  diffusion {stats['diffusion']:.3f}"
                         f"  ar {stats.get('ar', float('nan')):.3f}  lr {stats['lr']:.2e}  {rate:.0f} tok/s"
                         f"  seen {self.tokens_seen / 1e6:.2f}M  eta {eta:.1f} min")
                with open(self.out / "log.jsonl", "a") as f:
                    f.write(json.dumps(stats) + "\n")
                window_tokens, window_start = 0, time.perf_counter()
            if self.step % cfg.save_every == 0:
                self.save()
        self.model.eval()
        return history


def export(trainer: Trainer, tokenizer_json: Path, dest: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    """The shipped model: config.json, model.safetensors (bf16: half the bytes in the repo; the engine
    upcasts on CPU) and tokenizer.json."""
    save_checkpoint(trainer.model, dest, dtype=dtype)
    (dest / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    config_from_dict(json.loads((dest / "config.json").read_text()))  # what we ship must load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the embedded dg diffusion code model.")
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, log.jsonl)")
    parser.add_argument("--tokenizer", type=Path, default=Path("models/dg-coder-tiny/tokenizer.json"))
    parser.add_argument("--export", type=Path, default=None, help="write the finished model here")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch", type=int, default=TrainConfig.batch)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seq-len", type=int, default=ExampleSpec.seq_len)
    parser.add_argument("--hidden", type=int, default=ModelShape.hidden)
    parser.add_argument("--layers", type=int, default=ModelShape.layers)
    parser.add_argument("--heads", type=int, default=ModelShape.heads)
    parser.add_argument("--kv-heads", type=int, default=ModelShape.kv_heads)
    parser.add_argument("--intermediate", type=int, default=ModelShape.intermediate)
    parser.add_argument("--ar-weight", type=float, default=TrainConfig.ar_weight)
    parser.add_argument("--ar-share", type=float, default=TrainConfig.ar_share)
    parser.add_argument("--warmup", type=int, default=TrainConfig.warmup)
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this checkpoint directory's weights (config.json + safetensors)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-files", type=int, default=None, help="use only the first N train files (smoke runs)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from tokenizers import Tokenizer as HFTokenizer

    from dg_lsp.training.corpus import collect

    hf = HFTokenizer.from_file(str(args.tokenizer))
    hf.encode_special_tokens = True
    tok = Tokenizer(hf)
    shape = ModelShape(args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate, hf.get_vocab_size())
    cfg = TrainConfig(shape=shape, example=replace(ExampleSpec(), seq_len=args.seq_len), batch=args.batch,
                      steps=args.steps, lr=args.lr, ar_weight=args.ar_weight, ar_share=args.ar_share,
                      warmup=args.warmup, seed=args.seed, init=str(args.init or ""))
    print("collecting the corpus ...", file=sys.stderr)
    corpus = collect()
    files = corpus.train[: args.max_files] if args.max_files else corpus.train
    texts = [f.read_text() for f in files]
    print(f"{len(texts)} train files, {sum(map(len, texts)) / 1e6:.1f} MB; held out: "
          f"{len(corpus.held_out)} files", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, texts, tok, args.out, log=lambda line: print(line, flush=True))
    if trainer.resume():
        print(f"resumed at step {trainer.step}", file=sys.stderr)
    params = sum(p.numel() for p in trainer.model.parameters())
    print(f"model: {params / 1e6:.2f}M parameters, {asdict(shape)}", file=sys.stderr)
    trainer.train()
    trainer.save()
    if args.export:
        export(trainer, args.tokenizer, args.export)
        print(f"exported to {args.export}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
