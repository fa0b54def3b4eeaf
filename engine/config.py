"""Model config: an HF-style config.json becomes a typed, validated ModelConfig.

Every convention the sampler depends on (logits shift, mask/pad/EOS/BOS ids, how context rows attend, the
prompt layout) is an explicit field with a per-family default taken from that family's reference code.
Nothing is inferred from weights or guessed at run time; a config whose family we cannot name is an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from dg_lsp.engine.errors import ConfigError

ContextAttention = Literal["bidirectional", "causal"]


@dataclass(frozen=True)
class Family:
    """Conventions of one family of diffusion checkpoints (see DESIGN.md, "Model families")."""

    name: str
    shift_logits: bool  # True: position i is predicted from hidden state i-1 (Dream: cat([l[:, :1], l[:, :-1]]))
    # How prefix/suffix rows attended during training. "bidirectional": every row sees every row, so a
    # cached prefix/suffix K/V is an approximation once the canvas changes (Fast-dLLM's dual cache).
    # "causal": context rows see only earlier context rows, so their K/V never depend on the canvas and
    # the cache is exact.
    context_attention: ContextAttention
    mask_token: str  # name of the noise token in tokenizer.json
    mask_id: int | None  # default id when config.json does not say
    pad_id: int | None
    eos_id: int | None
    bos_id: int | None
    bos_before_prefix: bool  # prompt starts with BOS
    eos_after_suffix: bool  # prompt ends with EOS
    weight_map: str  # key into engine.loader.WEIGHT_MAPS
    hf_keys: dict[str, str]  # config.json key -> our field, for families that name things their own way


_QWEN2_KEYS: dict[str, str] = {}
_LLADA_KEYS = {
    "d_model": "hidden_size",
    "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads",
    "n_layers": "num_hidden_layers",
    "mlp_hidden_size": "intermediate_size",
    "max_sequence_length": "max_position_embeddings",
    "weight_tying": "tie_word_embeddings",
    "include_bias": "attention_bias",
}

FAMILIES: dict[str, Family] = {
    # Dream 7B / Dream-Coder / DiffuCoder / DreamOn: Qwen2.5 backbone, shifted logits, full attention.
    # Infill prompt as DreamOn builds it: [bos] prefix [mask]*n suffix [eos].
    "dream": Family(
        name="dream", shift_logits=True, context_attention="bidirectional", mask_token="<|mask|>",
        mask_id=151666, pad_id=151643, eos_id=151643, bos_id=151665, bos_before_prefix=True,
        eos_after_suffix=True, weight_map="qwen2", hf_keys=_QWEN2_KEYS,
    ),
    # Open-dCoder 0.5B: a Qwen2 checkpoint trained as a shifted masked diffusion model; infill prompt is
    # prefix + masks + suffix with no BOS/EOS (Qwen2's tokenizer adds none).
    "open-dcoder": Family(
        name="open-dcoder", shift_logits=True, context_attention="bidirectional", mask_token="<|mask|>",
        mask_id=None, pad_id=151643, eos_id=151643, bos_id=None, bos_before_prefix=False,
        eos_after_suffix=False, weight_map="qwen2", hf_keys=_QWEN2_KEYS,
    ),
    # LLaDA 8B: LLaMA-like, unshifted, mask 126336, EOS padding trained; its tokenizer adds BOS.
    "llada": Family(
        name="llada", shift_logits=False, context_attention="bidirectional", mask_token="<|mdm_mask|>",
        mask_id=126336, pad_id=126081, eos_id=126081, bos_id=126080, bos_before_prefix=True,
        eos_after_suffix=False, weight_map="llada", hf_keys=_LLADA_KEYS,
    ),
    # A plain HF Llama-layout checkpoint run as an unshifted diffusion model (tests, conversions).
    "llama": Family(
        name="llama", shift_logits=False, context_attention="bidirectional", mask_token="<|mask|>",
        mask_id=None, pad_id=None, eos_id=None, bos_id=None, bos_before_prefix=False,
        eos_after_suffix=False, weight_map="qwen2", hf_keys=_QWEN2_KEYS,
    ),
    # Ours: unshifted, trained with causal context rows so the prefix/suffix cache is exact.
    "dg": Family(
        name="dg", shift_logits=False, context_attention="causal", mask_token="<|mask|>",
        mask_id=3, pad_id=0, eos_id=2, bos_id=1, bos_before_prefix=True,
        eos_after_suffix=False, weight_map="qwen2", hf_keys=_QWEN2_KEYS,
    ),
}

# What a published config.json says -> family. Dream, Dream-Coder, DiffuCoder and DreamOn publish
# model_type "Dream" and architectures ["DreamModel"]; LLaDA publishes "llada" and ["LLaDAModelLM"].
# "qwen2"/"llama" are autoregressive backbones too, so a checkpoint of that type must be named: by
# "dg_family" in config.json, the `family` argument, or the repo it was resolved from (KNOWN_REPOS).
MODEL_TYPES = {"dream": "dream", "llada": "llada", "dg": "dg"}  # lower-cased model_type
# DiffusionGemma (model_type "diffusion_gemma") is not a Family of this table: it has its own config and
# engine (engine.gemma_config, engine.gemma_engine); engine.load sends it there
GEMMA_FAMILY = "diffusion-gemma"
ARCHITECTURES = {"DreamModel": "dream", "LLaDAModelLM": "llada"}

# Hugging Face repos whose config.json cannot tell their family (a plain Qwen2 config), recognised by the
# repo id they were named by (`org/name` or a cache folder), never by a local directory's name.
KNOWN_REPOS = {
    "fredzzp/open-dcoder-0.5b": "open-dcoder",  # Open-dCoder 0.5B: Qwen2ForCausalLM, model_type qwen2
}


@dataclass(frozen=True)
class ModelConfig:
    family: Family
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v projections carry a bias (Qwen2: yes; Llama/LLaDA: no)
    mask_id: int | None = None
    pad_id: int | None = None
    eos_id: int | None = None
    bos_id: int | None = None
    name: str = "model"
    # Variable-length canvases (DreamOn): a canvas position that becomes `expand_id` turns into two masks,
    # one that becomes `delete_id` is removed. Filled from the tokenizer (engine.tokenizer.load_tokenizer)
    # when it has an "<|expand|>" token; None: canvases keep their length.
    expand_id: int | None = None
    delete_id: int | None = None

    @property
    def variable_length(self) -> bool:
        return self.expand_id is not None and self.delete_id is not None

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def end_ids(self) -> frozenset[int]:
        """Ids that end a middle: anything after the first of them in a canvas is dropped."""
        return frozenset(i for i in (self.pad_id, self.eos_id) if i is not None)

    def num_params(self) -> int:
        d, f, L, v = self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.vocab_size
        attn = d * (self.q_size + 2 * self.kv_size) + self.q_size * d
        if self.attention_bias:
            attn += self.q_size + 2 * self.kv_size
        per_layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else v * d
        return v * d + L * per_layer + d + head

    def to_dict(self) -> dict[str, Any]:
        """The config.json we write for our own checkpoints (HF key names)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("family", "name", "expand_id", "delete_id")}  # those two: the tokenizer's
        for ours, hf in (("mask_id", "mask_token_id"), ("pad_id", "pad_token_id"),
                         ("eos_id", "eos_token_id"), ("bos_id", "bos_token_id")):
            out[hf] = out.pop(ours)
        out["model_type"] = self.family.name if self.family.name in MODEL_TYPES else "qwen2"
        out["dg_family"] = self.family.name
        out["architectures"] = ["DgDiffusionModel"]
        return out


_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def resolve_family(raw: dict[str, Any], family: str | None, where: str, repo_id: str | None = None) -> Family:
    """The family, from (first that answers): the explicit `family`, config.json's "dg_family", its
    model_type, its architectures, or the Hugging Face repo id the checkpoint was resolved from."""
    archs = raw.get("architectures") if isinstance(raw.get("architectures"), list) else []
    name = (family or raw.get("dg_family") or MODEL_TYPES.get(str(raw.get("model_type", "")).lower())
            or next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
            or (KNOWN_REPOS.get(repo_id.lower()) if repo_id else None))
    if name is None:
        known = ", ".join(sorted([*FAMILIES, GEMMA_FAMILY]))
        named = f" from {repo_id}" if repo_id else ""
        raise ConfigError(
            f"{where}{named}: cannot tell which diffusion family model_type={raw.get('model_type')!r} "
            f"(architectures={raw.get('architectures')}) belongs to. Pass --family or set the model.family "
            f"option to one of {known}, or add \"dg_family\" to config.json."
        )
    if name not in FAMILIES:
        raise ConfigError(f"{where}: unknown family {name!r}: expected one of {', '.join(sorted([*FAMILIES, GEMMA_FAMILY]))}")
    return FAMILIES[name]


def config_from_dict(raw: dict[str, Any], family: str | None = None, where: str = "config.json",
                     repo_id: str | None = None) -> ModelConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    fam = resolve_family(raw, family, where, repo_id)
    cfg = {fam.hf_keys.get(k, k): v for k, v in raw.items()}
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)} (family {fam.name})")
    for key in _REQUIRED:
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] <= 0:
            raise ConfigError(f"{where}: {key}={cfg[key]!r}: expected a positive integer")
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise ConfigError(f"{where}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    if head_dim % 2:
        raise ConfigError(f"{where}: head_dim={head_dim}: expected an even number (RoPE rotates pairs)")
    rope = cfg.get("rope_parameters") or {}  # transformers >= 5 nests rope_theta here
    if cfg.get("rope_scaling") or rope.get("rope_type", "default") != "default":
        raise ConfigError(f"{where}: rope scaling {cfg.get('rope_scaling') or rope!r} is not supported: "
                          "expected plain RoPE (rope_type 'default')")
    rope_theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
    act = cfg.get("hidden_act", "silu")
    if act != "silu" and cfg.get("activation_type", "silu") != "silu":
        raise ConfigError(f"{where}: hidden_act={act!r}: expected 'silu' (SwiGLU)")
    # Qwen2 checkpoints always carry q/k/v biases and have no flag for it.
    bias = bool(cfg.get("attention_bias", str(raw.get("model_type", "")).lower() in ("qwen2", "dream")))
    mask_id = _first_int(cfg.get("mask_token_id"), fam.mask_id)  # None: taken from the tokenizer's mask token
    out = ModelConfig(
        family=fam,
        vocab_size=cfg["vocab_size"] if "embedding_size" not in cfg else max(cfg["vocab_size"], cfg["embedding_size"]),
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope_theta),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bias,
        mask_id=mask_id,
        pad_id=_first_int(cfg.get("pad_token_id"), fam.pad_id),
        eos_id=_first_int(cfg.get("eos_token_id"), fam.eos_id),
        bos_id=_first_int(cfg.get("bos_token_id"), fam.bos_id),
        name=str(raw.get("_name_or_path") or "model"),
    )
    for key in ("mask_id", "pad_id", "eos_id", "bos_id"):
        value = getattr(out, key)
        if value is not None and not 0 <= value < out.vocab_size:
            raise ConfigError(f"{where}: {key}={value} is outside the vocabulary 0..{out.vocab_size - 1}")
    if not math.isfinite(out.rope_theta) or out.rope_theta <= 0:
        raise ConfigError(f"{where}: rope_theta={out.rope_theta}: expected a positive number")
    return out


def _first_int(value: Any, default: int | None) -> int | None:
    if isinstance(value, list):  # HF allows a list of EOS ids; the first is the canonical one
        value = value[0] if value else None
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"special token id {value!r}: expected an integer")
    return value


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """config.json of a model directory as a dict, unvalidated."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no config.json in the model directory {model_dir}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc


def load_config(model_dir: str | Path, family: str | None = None, repo_id: str | None = None) -> ModelConfig:
    """`repo_id`: the Hugging Face repo the directory was resolved from, if any (names the model, and
    identifies checkpoints whose config.json cannot name their family: KNOWN_REPOS)."""
    raw = read_config(model_dir)
    cfg = config_from_dict(raw, family, where=str(Path(model_dir) / "config.json"), repo_id=repo_id)
    return replace(cfg, name=repo_id or Path(model_dir).resolve().name)
