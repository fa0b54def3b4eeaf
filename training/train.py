"""Train the embedded diffusion code model.

Objective (per batch of infill-shaped examples, see training/examples.py):
- masked diffusion on the canvas: each example draws t ~ U(t_min, 1); each canvas position is noised
  with probability t; of the noised, `uniform_share` get a random token instead of the mask, so the model
  also learns to spot and fix wrong tokens (what the renoise sampler and rewrite scoring rely on). The loss
  is cross-entropy on noised positions, plus `clean_weight` times that on clean canvas positions.
- context rows attend causally to context rows only and canvas rows to everything (family "dg"), so
  inference can encode the prefix/suffix once, exactly. An auxiliary next-token loss on a `ar_share` of
  the context rows (weight `ar_weight`) gives those rows a training signal of their own.

Batch k is a pure function of (seed, k): its examples are drawn with numpy rng [seed, k] and its noise with a
torch generator seeded from (seed, k). So the data position and the RNG state of a run are its step count,
resuming is exact, and data workers can build batches ahead in any process (`workers`).

Speed paths (training/presets.py names the configurations; bench/bench_train.py measures them):
- `precision="bf16"`: the forward runs under torch.autocast(bfloat16); master weights, gradients and AdamW
  moments stay fp32 (autocast only casts matmul inputs), the loss is computed in fp32.
- `optimizer="fused"` (the default; torch has it on CPU and CUDA) or "foreach": one kernel, or one call per
  group, instead of a Python loop over parameters.
- attention goes through scaled_dot_product_attention with a [B, 1, T, T] boolean mask that broadcasts over
  heads; logits are computed for the scored rows only, never for all B x T rows.

Resumable (every `save_every` steps: weights and optimizer moments as safetensors, the rest JSON, no pickle),
deterministic from the seed for a given thread count and device, and it logs loss and throughput as it goes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dg_lsp.engine.config import FAMILIES, ModelConfig, config_from_dict
from dg_lsp.engine.loader import load_weights, save_checkpoint
from dg_lsp.engine.model import Transformer
from dg_lsp.engine.prompt import context_causal_mask
from dg_lsp.engine.tokenizer import Tokenizer
from dg_lsp.training.batches import SPECIAL, StepBatches, TextSampler, step_generator
from dg_lsp.training.examples import ExampleSpec

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
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; fp32 master weights and optimizer state)
    optimizer: str = "fused"  # "fused", "foreach" or "loop" (torch's per-parameter reference)


def model_config(shape: ModelShape, seq_len: int, name: str = "dg-coder-tiny") -> ModelConfig:
    return ModelConfig(
        family=FAMILIES["dg"], vocab_size=shape.vocab, hidden_size=shape.hidden,
        intermediate_size=shape.intermediate, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, head_dim=shape.hidden // shape.heads, max_position_embeddings=seq_len,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False,
        mask_id=SPECIAL["mask"], pad_id=SPECIAL["pad"], eos_id=SPECIAL["eos"], bos_id=SPECIAL["bos"], name=name,
    )


def loss_on_batch(model: Transformer, cfg: TrainConfig, tokens: torch.Tensor, is_canvas: torch.Tensor,
                  valid: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of one batch (on the batch's device) and its parts, detached."""
    b, t = tokens.shape
    dev = tokens.device
    # noise drawn on the CPU generator, then moved: the same draws on every device
    level = cfg.t_min + (1 - cfg.t_min) * torch.rand(b, 1, generator=gen)  # noise level per example
    noised = is_canvas & (torch.rand(b, t, generator=gen) < level).to(dev)
    uniform = noised & (torch.rand(b, t, generator=gen) < cfg.uniform_share).to(dev)
    random_tokens = torch.randint(len(SPECIAL), cfg.shape.vocab, (b, t), generator=gen).to(dev)
    inputs = torch.where(uniform, random_tokens, torch.where(noised, SPECIAL["mask"], tokens))
    eye = torch.eye(t, dtype=torch.bool, device=dev)
    mask = (context_causal_mask(is_canvas) & valid[:, None, :]) | eye  # padding keys unseen; rows see themselves
    positions = torch.arange(t, device=dev).expand(b, t)
    hidden = model.hidden(inputs, positions, mask)  # [B, T, D]

    clean = is_canvas & ~noised
    rows = noised | clean
    logits = model.logits(hidden[rows])
    ce = F.cross_entropy(logits, tokens[rows], reduction="none")
    weight = torch.where(noised[rows], 1.0, cfg.clean_weight)
    n_noised = noised.sum().clamp_min(1)
    diffusion = (ce * weight).sum() / n_noised
    stats = {"diffusion": (ce.detach() * noised[rows]).sum() / n_noised}  # tensors: read once, when logged
    loss = diffusion
    if cfg.ar_weight > 0:
        ctx = ~is_canvas & valid
        pairs = ctx[:, :-1] & ctx[:, 1:] & (torch.rand(b, t - 1, generator=gen) < cfg.ar_share).to(dev)
        if pairs.any():
            ar = F.cross_entropy(model.logits(hidden[:, :-1][pairs]), tokens[:, 1:][pairs])
            loss = loss + cfg.ar_weight * ar
            stats["ar"] = ar.detach()
    stats["loss"] = loss.detach()
    return loss, stats


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


OPTIMIZER_IMPLS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}


def make_optimizer(model: Transformer, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW on the fp32 master weights; `cfg.optimizer` picks the implementation (same maths)."""
    if cfg.optimizer not in OPTIMIZER_IMPLS:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZER_IMPLS)}, got {cfg.optimizer!r}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                             **OPTIMIZER_IMPLS[cfg.optimizer])


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> "bf16" on CUDA and on CPUs with native bf16 units (dg_lsp.engine.device), else "fp32"."""
    if precision in ("fp32", "bf16"):
        return precision
    if precision != "auto":
        raise ValueError(f"precision: expected fp32, bf16 or auto, got {precision!r}")
    from dg_lsp.engine.device import cpu_bf16_flags

    return "bf16" if device.type == "cuda" or cpu_bf16_flags() else "fp32"


class Trainer:
    """`device`: where the model trains ("cpu", "cuda"); `workers`: data processes building batches ahead
    (0: in this process, between steps)."""

    def __init__(self, cfg: TrainConfig, texts: list[str], tok: Tokenizer, out: Path, log=print,
                 device: str | torch.device = "cpu", workers: int = 0):
        if cfg.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: expected fp32 or bf16 (resolve 'auto' first), got {cfg.precision!r}")
        self.cfg, self.out, self.log = cfg, out, log
        self.device, self.workers = torch.device(device), workers
        self.model_cfg = model_config(cfg.shape, cfg.example.seq_len)
        torch.manual_seed(cfg.seed)
        self.model = Transformer(self.model_cfg)  # built on the CPU: the same init on every device
        self.model.use_kernels = False  # autograd needs the torch reference ops
        with torch.no_grad():
            self.model.tok_embeddings.weight.normal_(0.0, 0.02)
        if cfg.init:  # a new schedule and recipe on top of an earlier run's weights (its optimizer is not used)
            load_weights(self.model, Path(cfg.init), torch.device("cpu"), torch.float32)
        self.model.to(self.device)
        self.opt = make_optimizer(self.model, cfg)
        self.sampler = TextSampler(texts, tok, cfg.example)
        self.step = 0
        self.fitted_from: int | None = None  # cfg.steps before fit_schedule shortened it
        self.tokens_seen = 0
        self.elapsed = 0.0

    # -- checkpoints: weights in the HF layout, optimizer moments as safetensors, the rest (step: also the
    #    data position and RNG state, see training/batches.py) JSON
    def save(self) -> None:
        ckpt = self.out / "checkpoint"
        save_checkpoint(self.model, ckpt)
        names = {id(p): n for n, p in self.model.named_parameters()}
        moments = {}
        for group in self.opt.param_groups:
            for p in group["params"]:
                state = self.opt.state.get(p)
                if state:
                    moments[f"{names[id(p)]}.exp_avg"] = state["exp_avg"].cpu()
                    moments[f"{names[id(p)]}.exp_avg_sq"] = state["exp_avg_sq"].cpu()
        save_file(moments, str(ckpt / "optimizer.safetensors"))
        # no RNG state to keep: step k's data and noise are drawn from seeds made of (seed, k)
        meta = {"step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
                "config": asdict(self.cfg), "fitted_steps": self.fitted_from is not None}
        (ckpt / "trainer.json").write_text(json.dumps(meta, indent=1))

    def resume(self) -> bool:
        ckpt = self.out / "checkpoint"
        if not (ckpt / "trainer.json").is_file():
            return False
        meta = json.loads((ckpt / "trainer.json").read_text())
        saved, ours = meta["config"], json.loads(json.dumps(asdict(self.cfg)))
        if meta.get("fitted_steps"):  # the run shortened its schedule to its time budget: keep that length
            ours["steps"] = saved["steps"]
        if saved != ours:
            raise SystemExit(f"{ckpt}: the checkpoint was made with another configuration; use a new --out")
        if meta.get("fitted_steps"):
            self.fitted_from, self.cfg = self.cfg.steps, replace(self.cfg, steps=saved["steps"])
        load_weights(self.model, ckpt, self.device, torch.float32)
        self.opt = make_optimizer(self.model, self.cfg)
        moments = load_file(str(ckpt / "optimizer.safetensors"), device=str(self.device))
        # fused AdamW keeps its step counter on the parameters' device; the others accept either
        step_device = self.device if self.cfg.optimizer == "fused" else torch.device("cpu")
        for group in self.opt.param_groups:
            for n, p in self.model.named_parameters():
                if any(p is q for q in group["params"]) and f"{n}.exp_avg" in moments:
                    self.opt.state[p] = {"step": torch.tensor(float(meta["step"]), device=step_device),
                                         "exp_avg": moments[f"{n}.exp_avg"].clone(),
                                         "exp_avg_sq": moments[f"{n}.exp_avg_sq"].clone()}
        self.step, self.tokens_seen, self.elapsed = meta["step"], meta["tokens_seen"], meta["elapsed"]
        return True

    def batches(self, until: int):
        """(tokens, is_canvas, valid) for steps self.step .. until-1, in order, on the training device."""
        data = StepBatches(self.sampler, self.cfg, self.step, until)
        if self.workers > 0:
            # the workers are forked: tokenizers' own thread pool must not be used before the fork
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=self.workers,
                                                 prefetch_factor=4, pin_memory=self.device.type == "cuda")
        else:
            loader = (data[i] for i in range(len(data)))
        for batch in loader:
            yield tuple(x.to(self.device, non_blocking=True) for x in batch)

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        """One optimizer step on `batch` at self.step; returns the loss parts (device tensors)."""
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss, stats = loss_on_batch(self.model, cfg, *batch, step_generator(cfg.seed, self.step))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.step += 1
        return stats

    def fit_schedule(self, seconds_left: float, seconds_per_step: float, margin: float = 0.95) -> None:
        """Shorten the run to the steps that fit in `seconds_left` at the measured pace, so that the
        learning-rate schedule still runs to its end; never lengthens it. Recorded in the checkpoint."""
        fits = self.step + int(margin * seconds_left / seconds_per_step)
        if fits < self.cfg.steps:
            self.log(f"time budget: {seconds_per_step * 1e3:.0f} ms/step leaves room for {fits} of "
                     f"{self.cfg.steps} steps; the schedule now ends at step {max(self.step + 1, fits)}")
            self.fitted_from = self.fitted_from or self.cfg.steps
            self.cfg = replace(self.cfg, steps=max(self.step + 1, fits))

    def train(self, until: int | None = None, max_seconds: float | None = None,
              calibrate: tuple[int, int] = (20, 120)) -> list[dict]:
        """Train to step `until` (default: the end).

        With `max_seconds`, the pace of steps `calibrate[0]`..`calibrate[1]` of this call (after start-up
        and the data workers' first batches) fits the schedule to the time left (`fit_schedule`); and if
        the time still runs out the run stops there, checkpointed (a guard: the schedule is then unfinished).
        """
        history = []
        until = self.cfg.steps if until is None else min(until, self.cfg.steps)
        self.model.train()
        window_tokens, window_start, began = 0, time.perf_counter(), time.perf_counter()
        first, marks = self.step, {}
        t0 = time.perf_counter()
        for batch in self.batches(until):
            if self.step >= self.cfg.steps:  # fit_schedule shortened the run
                break
            cfg = self.cfg
            raw = self.train_step(batch)
            n_tokens = int(batch[2].sum())
            self.tokens_seen += n_tokens
            window_tokens += n_tokens
            stats = {k: float(v) for k, v in raw.items()}
            self.elapsed += time.perf_counter() - t0
            t0 = time.perf_counter()
            stats.update(step=self.step, lr=lr_at(self.step - 1, cfg), tokens=self.tokens_seen)
            history.append(stats)
            if self.step % cfg.log_every == 0 or self.step == min(until, cfg.steps):
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
            if max_seconds is not None and self.step - first in calibrate:
                marks[self.step - first] = time.perf_counter()
                if len(marks) == 2:
                    pace = (marks[calibrate[1]] - marks[calibrate[0]]) / (calibrate[1] - calibrate[0])
                    self.fit_schedule(max_seconds - (time.perf_counter() - began), pace)
            if max_seconds is not None and time.perf_counter() - began > max_seconds and self.step < until:
                self.log(f"stopping at step {self.step}/{cfg.steps}: the {max_seconds:.0f} s wall-time guard ran out")
                break
        self.model.eval()
        return history


def export(trainer: Trainer, tokenizer_json: Path, dest: Path, dtype: torch.dtype = torch.bfloat16,
           max_shard_bytes: int | None = None) -> None:
    """The shipped model: config.json, the weights (bf16: half the bytes; the engine upcasts on CPU), in
    shards of at most `max_shard_bytes` when given, and tokenizer.json."""
    if max_shard_bytes is not None:
        biggest = max(p.numel() for p in trainer.model.parameters()) * torch.finfo(dtype).bits // 8
        if biggest > max_shard_bytes:
            raise ValueError(f"a single tensor takes {biggest:,} bytes, more than a {max_shard_bytes:,}-byte shard")
    save_checkpoint(trainer.model, dest, dtype=dtype, max_shard_bytes=max_shard_bytes)
    (dest / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    config_from_dict(json.loads((dest / "config.json").read_text()))  # what we ship must load


DEFAULT_MANIFEST = Path(__file__).with_name("corpus_manifest.json")


def main(argv: list[str] | None = None) -> int:
    from dg_lsp.training.presets import MAX_SHARD_BYTES, PRESETS

    parser = argparse.ArgumentParser(description="Train the embedded dg diffusion code model.")
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, log.jsonl)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu-tiny",
                        help="named shape and recipe (training/presets.py); the flags below override it")
    parser.add_argument("--tokenizer", type=Path, default=Path("models/dg-coder-tiny/tokenizer.json"))
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST,
                        help="pinned corpus (training/manifest.py); every file must be found with its hash")
    parser.add_argument("--scan", action="store_true",
                        help="use whatever permissive code this interpreter has instead of the manifest")
    parser.add_argument("--allow-missing", action="store_true",
                        help="skip (and count) manifest files that are missing or changed instead of stopping")
    parser.add_argument("--pack", type=Path, default=None,
                        help="rebuild the pinned corpus from this pack (`python -m dg_lsp.training.manifest pack`), "
                             "not from installed packages: for a machine that lacks them")
    parser.add_argument("--export", type=Path, default=None, help="write the finished model here")
    parser.add_argument("--max-shard-mib", type=float, default=MAX_SHARD_BYTES / 2**20,
                        help="exported weights in safetensors shards of at most this size")
    for name, kind in (("steps", int), ("batch", int), ("lr", float), ("seq-len", int), ("hidden", int),
                       ("layers", int), ("heads", int), ("kv-heads", int), ("intermediate", int),
                       ("ar-weight", float), ("ar-share", float), ("warmup", int), ("seed", int),
                       ("log-every", int), ("save-every", int), ("workers", int), ("max-minutes", float),
                       ("eval-single", int), ("eval-multi", int), ("eval-ident", int), ("eval-steps", int)):
        parser.add_argument(f"--{name}", type=kind, default=None)
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default=None)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZER_IMPLS), default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda or auto (the preset's by default)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this checkpoint directory's weights (config.json + safetensors)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-files", type=int, default=None, help="use only the first N train files (smoke runs)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    pick = lambda value, default: default if value is None else value  # noqa: E731
    device_name = pick(args.device, preset.device)
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)

    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_file(str(args.tokenizer))
    hf.encode_special_tokens = True
    tok = Tokenizer(hf)
    p = preset.train
    shape = ModelShape(pick(args.hidden, p.shape.hidden), pick(args.layers, p.shape.layers),
                       pick(args.heads, p.shape.heads), pick(args.kv_heads, p.shape.kv_heads),
                       pick(args.intermediate, p.shape.intermediate), hf.get_vocab_size())
    cfg = replace(p, shape=shape, example=replace(p.example, seq_len=pick(args.seq_len, p.example.seq_len)),
                  batch=pick(args.batch, p.batch), steps=pick(args.steps, p.steps), lr=pick(args.lr, p.lr),
                  ar_weight=pick(args.ar_weight, p.ar_weight), ar_share=pick(args.ar_share, p.ar_share),
                  warmup=pick(args.warmup, p.warmup), seed=pick(args.seed, p.seed), init=str(args.init or ""),
                  log_every=pick(args.log_every, p.log_every), save_every=pick(args.save_every, p.save_every),
                  precision=resolve_precision(pick(args.precision, p.precision), device),
                  optimizer=pick(args.optimizer, p.optimizer))
    corpus = load_training_corpus(args)
    files = corpus.train[: args.max_files] if args.max_files else corpus.train
    texts = [f.read_text() for f in files]
    print(f"{len(texts)} train files, {sum(map(len, texts)) / 1e6:.1f} MB; held out: "
          f"{len(corpus.held_out)} files", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, texts, tok, args.out, log=lambda line: print(line, flush=True), device=device,
                      workers=pick(args.workers, preset.workers))
    if trainer.resume():
        print(f"resumed at step {trainer.step}", file=sys.stderr)
    params = sum(p.numel() for p in trainer.model.parameters())
    print(f"model: {params / 1e6:.2f}M parameters, {asdict(shape)}; {device}, {cfg.precision}, "
          f"AdamW {cfg.optimizer}, batch {cfg.batch} x {cfg.example.seq_len}", file=sys.stderr)
    max_minutes = pick(args.max_minutes, preset.max_minutes)
    trainer.train(max_seconds=None if max_minutes is None else 60 * max_minutes)
    trainer.save()
    if args.export:
        export(trainer, args.tokenizer, args.export, max_shard_bytes=int(args.max_shard_mib * 2**20))
        print(f"exported to {args.export}", file=sys.stderr)
        counts = {k: pick(getattr(args, f"eval_{k}"), getattr(preset, f"eval_{k}")) for k in ("single", "multi", "ident")}
        if any(counts.values()):
            from dg_lsp.training.evaluate import evaluate_model

            report = evaluate_model(args.export, corpus, texts, steps=pick(args.eval_steps, preset.eval_steps),
                                    device=device_name, **counts, progress=lambda m: print(m, file=sys.stderr))
            (args.out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
            print(json.dumps(report["summary"], indent=2))
    return 0


def load_training_corpus(args):
    """The pinned corpus from --manifest, or (--scan) this interpreter's permissive code."""
    if args.scan:
        from dg_lsp.training.corpus import collect

        print("collecting the corpus ...", file=sys.stderr)
        return collect()
    from dg_lsp.training.manifest import load_corpus

    print(f"rebuilding the corpus from {args.manifest} ...", file=sys.stderr)
    return load_corpus(args.manifest, allow_missing=args.allow_missing, pack=getattr(args, "pack", None),
                       progress=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    sys.exit(main())
