"""Random-weight checkpoints in the real HF layout, for tests and benchmarks that cannot download models.

`write_tiny_checkpoint` writes config.json (in the family's own key names), tokenizer.json (a small
byte-level BPE with the family's special tokens) and model.safetensors (or shards). `cache_checkpoint`
files a checkpoint into a Hugging Face cache folder, as `huggingface_hub.snapshot_download` leaves it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dg_lsp.engine.config import FAMILIES, ModelConfig
from dg_lsp.engine.loader import save_checkpoint
from dg_lsp.engine.model import Transformer

# Special tokens of each family, in id order from 0 (our tiny vocabularies put them first).
SPECIALS = {
    "dg": {"pad": "<|pad|>", "bos": "<|bos|>", "eos": "<|eos|>", "mask": "<|mask|>"},
    "dream": {"eos": "<|endoftext|>", "bos": "<|beginoftext|>", "mask": "<|mask|>"},
    "open-dcoder": {"eos": "<|endoftext|>", "mask": "<|mask|>"},
    "llada": {"bos": "<|startoftext|>", "eos": "<|endoftext|>", "mask": "<|mdm_mask|>"},
    "llama": {"bos": "<s>", "eos": "</s>", "mask": "<|mask|>"},
}

SAMPLE_CODE = '''
import os
import sys
from dataclasses import dataclass


@dataclass
class Point:
    x: float
    y: float

    def norm(self) -> float:
        return (self.x ** 2 + self.y ** 2) ** 0.5


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\\n") for line in f]


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    for name in args:
        if not os.path.exists(name):
            print(f"missing: {name}", file=sys.stderr)
            return 1
        total = 0
        for i, line in enumerate(read_lines(name)):
            total += len(line)
        print(name, total)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
'''


def tiny_tokenizer(specials: list[str], vocab_size: int = 384) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([SAMPLE_CODE] * 4, trainer=trainer)
    return tok


def tiny_config(family: str = "dg", *, vocab_size: int = 384, hidden: int = 64, layers: int = 2, heads: int = 4,
                kv_heads: int = 2, intermediate: int = 128, tie: bool = True, max_positions: int = 512) -> ModelConfig:
    fam = FAMILIES[family]
    ids = {role: i for i, role in enumerate(SPECIALS[family])}
    return ModelConfig(
        family=fam, vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=hidden // heads, max_position_embeddings=max_positions, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=tie, attention_bias=fam.weight_map == "qwen2" and family != "llama",
        mask_id=ids["mask"], pad_id=ids.get("pad", ids["eos"]), eos_id=ids["eos"], bos_id=ids.get("bos"),
        name=f"tiny-{family}",
    )


def random_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Transformer(cfg)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # not all ones, so a wrong norm weight cannot go unnoticed
                p.data.uniform_(0.5, 1.5)
    return model.eval()


def write_tiny_checkpoint(path: str | Path, family: str = "dg", seed: int = 0, *, shard_bytes: int | None = None,
                          extra_specials: tuple[str, ...] = (), **shape) -> Path:
    """A random-weight checkpoint directory of `family`; returns its path. `extra_specials` join the
    tokenizer's special tokens after the family's (e.g. DreamOn's "<|expand|>", "<|delete|>")."""
    path = Path(path)
    cfg = tiny_config(family, **shape)
    specials = [*SPECIALS[family].values(), *extra_specials]
    tok = tiny_tokenizer(specials, cfg.vocab_size)
    if tok.get_vocab_size() < cfg.vocab_size:  # the sample is small: let config and tokenizer agree exactly
        cfg = replace(cfg, vocab_size=cfg.vocab_size)
    model = random_model(cfg, seed)
    save_checkpoint(model, path, max_shard_bytes=shard_bytes)
    tok.save(str(path / "tokenizer.json"))
    raw = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(native_config(raw, family), indent=2) + "\n")
    return path


def native_config(raw: dict, family: str) -> dict:
    """Rewrite our HF-style config in the key names the family's own checkpoints use."""
    raw = dict(raw)
    if family == "dream":
        raw.update(model_type="Dream", architectures=["DreamModel"])
        raw.pop("dg_family", None)
    elif family == "llada":
        for ours, theirs in {v: k for k, v in FAMILIES["llada"].hf_keys.items()}.items():
            raw[theirs] = raw.pop(ours)
        raw.update(model_type="llada", architectures=["LLaDAModelLM"])
        raw.pop("dg_family", None)
    elif family == "open-dcoder":
        raw.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"], dg_family="open-dcoder")
    return raw


def cache_checkpoint(cache_dir: str | Path, repo_id: str, checkpoint: str | Path, revision: str | None = None,
                     refs: tuple[str, ...] = ("main",)) -> Path:
    """Put the files of `checkpoint` into the Hugging Face cache layout under `cache_dir`:
    models--org--name/blobs/<sha256>, snapshots/<revision>/<file> -> ../../blobs/<sha256>, refs/<ref> holding
    the revision (a 40-hex commit hash; default: derived from the repo id). Returns the snapshot folder."""
    revision = revision or hashlib.sha1(repo_id.encode()).hexdigest()
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    for src in sorted(Path(checkpoint).rglob("*")):
        if not src.is_file():
            continue
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / src.relative_to(checkpoint)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(revision)
    return snapshot


# DiffusionGemma: Gemma's special ids are pad 0, eos 1, bos 2; there is no mask token.
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>"]
TINY_GEMMA_TEXT = dict(
    hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1, num_experts=8,
    top_k_experts=2, sliding_window=6, max_position_embeddings=512,
    layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
)
TINY_GEMMA_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, head_dim=8, position_embedding_size=64, patch_size=4)


def write_tiny_gemma_checkpoint(path: str | Path, seed: int = 0, *, shard_bytes: int = 200_000, canvas_length: int = 8,
                                **overrides) -> Path:
    """A random DiffusionGemma checkpoint written by transformers' save_pretrained (config.json, sharded
    safetensors, a vision tower as the real one has) plus a tiny tokenizer.json; returns its path.

    `overrides` replace TINY_GEMMA_TEXT keys of the text config. Weights transformers initialises to one
    (norms, router scales, layer scalars) are drawn from [0.5, 1.5) so a wrong one cannot go unnoticed; the
    encoder's and decoder's layer scalars get different values. Router weights are widened so that expert
    choices are not near-ties. Needs transformers (tests only: the engine never imports it)."""
    from transformers import (DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DiffusionGemmaTextConfig,
                              Gemma4VisionConfig)

    path = Path(path)
    tok = tiny_tokenizer(GEMMA_SPECIALS, overrides.pop("vocab_size", 384))
    text = DiffusionGemmaTextConfig(**{**TINY_GEMMA_TEXT, "vocab_size": tok.get_vocab_size(), **overrides})
    cfg = DiffusionGemmaConfig(text_config=text, vision_config=Gemma4VisionConfig(**TINY_GEMMA_VISION),
                               canvas_length=canvas_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DiffusionGemmaForBlockDiffusion(cfg).eval()
        with torch.no_grad():
            for name, t in [*model.named_parameters(), *model.named_buffers()]:
                if name.endswith(("norm.weight", "router.scale", "per_expert_scale", "layer_scalar")):
                    t.uniform_(0.5, 1.5)
                elif name.endswith("router.proj.weight"):
                    t.normal_(0.0, 0.5)
    model.save_pretrained(path, max_shard_size=shard_bytes)
    tok.save(str(path / "tokenizer.json"))
    return path
