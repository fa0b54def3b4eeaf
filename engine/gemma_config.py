"""DiffusionGemma config: a transformers-saved config.json (model_type "diffusion_gemma") becomes a frozen,
validated GemmaConfig.

transformers' `save_pretrained` writes only what differs from the base config's defaults, so keys it can omit
take the defaults of `DiffusionGemmaTextConfig` (transformers 5.24) from `TEXT_DEFAULTS`. Keys that have no
default there (the MoE shape) are required: a Gemma-family config without them is another model version.
Full-attention layers take their head dim and KV-head count from `per_layer_config` (what transformers
saves) or, in a hand-written config, from `global_head_dim` / `num_global_key_value_heads`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dg_lsp.engine.errors import ConfigError

SLIDING, FULL = "sliding_attention", "full_attention"

TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 262_144, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 30,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131_072, "rms_norm_eps": 1e-6, "pad_token_id": 0, "eos_token_id": 1,
    "bos_token_id": 2, "tie_word_embeddings": True, "attention_bias": False, "sliding_window": 512,
    "use_bidirectional_attention": None,
}
DEFAULT_ROPE = {SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
                FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0}}
REQUIRED = ("num_experts", "top_k_experts", "moe_intermediate_size")  # no default: every layer has an MoE
SKIPPED_PREFIXES = ("model.encoder.vision_tower.", "model.encoder.embed_vision.")  # text only
PER_LAYER_KEYS = {"head_dim", "num_key_value_heads"}  # the overrides a full layer may carry


@dataclass(frozen=True)
class Rope:
    """One RoPE kind. Only the first int(partial_rotary_factor * head_dim // 2) frequency pairs rotate,
    with the full head dim as the exponent's denominator; the other pairs get frequency 0 (identity)."""

    theta: float
    partial_rotary_factor: float = 1.0
    factor: float = 1.0  # divides every frequency (transformers' "proportional" `factor`)

    def rotated_pairs(self, head_dim: int) -> int:
        return int(self.partial_rotary_factor * head_dim // 2)


@dataclass(frozen=True)
class GemmaGeneration:
    """The reference `generate` defaults (generation_config.json overrides them when present)."""

    max_denoising_steps: int = 48
    t_min: float = 0.4
    t_max: float = 0.8
    entropy_bound: float = 0.1
    stability_threshold: int = 1
    confidence_threshold: float = 0.005


@dataclass(frozen=True)
class GemmaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # the dense MLP beside the MoE (and the self-conditioning MLP)
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int  # sliding layers
    num_global_key_value_heads: int  # full layers (K = V there: no v_proj)
    head_dim: int  # sliding layers
    global_head_dim: int  # full layers
    num_experts: int
    top_k_experts: int
    sliding_window: int  # sliding layers see positions i-W < j <= i; the cache keeps the last W-1
    layer_types: tuple[str, ...]
    rope_sliding: Rope = Rope(10_000.0)
    rope_full: Rope = Rope(1_000_000.0, 0.25)
    rms_norm_eps: float = 1e-6
    final_logit_softcapping: float = 30.0  # a class attribute in transformers, never in config.json
    max_position_embeddings: int = 131_072
    pad_id: int | None = 0
    eos_ids: tuple[int, ...] = (1,)
    bos_id: int | None = 2
    canvas_length: int = 256
    generation: GemmaGeneration = field(default_factory=GemmaGeneration)
    name: str = "diffusion-gemma"

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == SLIDING

    def layer_head_dim(self, layer: int) -> int:
        return self.head_dim if self.is_sliding(layer) else self.global_head_dim

    def layer_kv_heads(self, layer: int) -> int:
        return self.num_key_value_heads if self.is_sliding(layer) else self.num_global_key_value_heads

    def layer_rope(self, layer: int) -> Rope:
        return self.rope_sliding if self.is_sliding(layer) else self.rope_full

    @property
    def eos_id(self) -> int | None:
        return self.eos_ids[0] if self.eos_ids else None


def gemma_config_from_dict(raw: dict[str, Any], generation: dict[str, Any] | None = None,
                           where: str = "config.json") -> GemmaConfig:
    """Validate a DiffusionGemma config.json (and optionally generation_config.json) dict."""
    if not isinstance(raw, dict) or raw.get("model_type") != "diffusion_gemma":
        got = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(f"{where}: model_type={got!r}: expected 'diffusion_gemma'")
    text = raw.get("text_config")
    if not isinstance(text, dict):
        raise ConfigError(f"{where}: text_config: expected a JSON object holding the text model's config")
    where_t = f"{where}: text_config"
    missing = [k for k in REQUIRED if text.get(k) is None]
    if missing:
        raise ConfigError(f"{where_t}: missing {', '.join(missing)}: expected a DiffusionGemma MoE config (every "
                          "layer has experts); this config.json is of another model version")
    t = {**TEXT_DEFAULTS, **text}
    ints = ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "num_experts", "top_k_experts",
            "sliding_window", "max_position_embeddings")
    for key in ints:
        _positive_int(t[key], f"{where_t}.{key}")
    expect = {"hidden_activation": "gelu_pytorch_tanh", "attention_bias": False, "tie_word_embeddings": True}
    for key, value in expect.items():
        if t[key] != value:
            raise ConfigError(f"{where_t}.{key}={t[key]!r}: expected {value!r}")
    if raw.get("tie_word_embeddings", True) is not True:
        raise ConfigError(f"{where}: tie_word_embeddings={raw['tie_word_embeddings']!r}: expected true (one set "
                          "of text weights shared by encoder and decoder)")
    if t["use_bidirectional_attention"] not in (None, "vision"):  # "vision" only changes image tokens
        raise ConfigError(f"{where_t}.use_bidirectional_attention={t['use_bidirectional_attention']!r}: expected "
                          "null or 'vision' (a causal encoder)")
    if t["top_k_experts"] > t["num_experts"]:
        raise ConfigError(f"{where_t}.top_k_experts={t['top_k_experts']}: expected <= num_experts={t['num_experts']}")
    if t["sliding_window"] < 2:  # the cache keeps W-1 rows; transformers' W=1 slice keeps all of them instead
        raise ConfigError(f"{where_t}.sliding_window={t['sliding_window']}: expected at least 2")

    n_layers = t["num_hidden_layers"]
    types = t.get("layer_types") or [SLIDING if (i + 1) % 6 else FULL for i in range(n_layers)]  # 5:1
    if not isinstance(types, list) or len(types) != n_layers:
        raise ConfigError(f"{where_t}.layer_types: expected a list of {n_layers} entries, got {types!r}")
    unknown = sorted({x for x in types if x not in (SLIDING, FULL)})
    if unknown:
        raise ConfigError(f"{where_t}.layer_types: unknown layer type(s) {unknown}: expected {SLIDING!r} or {FULL!r}")
    types = [*types[:-1], FULL]  # transformers forces the last layer to full attention (with a warning)

    head_dim, kv_heads = t["head_dim"], t["num_key_value_heads"]
    g_head_dim, g_kv_heads = _full_layer_shape(t, types, where_t)
    for key, value in (("head_dim", head_dim), ("global_head_dim", g_head_dim)):
        if value % 2:
            raise ConfigError(f"{where_t}.{key}={value}: expected an even number (RoPE rotates pairs)")
    for key, value in (("num_key_value_heads", kv_heads), ("num_global_key_value_heads", g_kv_heads)):
        if t["num_attention_heads"] % value:
            raise ConfigError(f"{where_t}.{key}={value}: num_attention_heads={t['num_attention_heads']} "
                              "is not a multiple of it")

    rope = t.get("rope_parameters") or DEFAULT_ROPE
    eos = t["eos_token_id"]
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    cfg = GemmaConfig(
        vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
        moe_intermediate_size=t["moe_intermediate_size"], num_hidden_layers=n_layers,
        num_attention_heads=t["num_attention_heads"], num_key_value_heads=kv_heads,
        num_global_key_value_heads=g_kv_heads, head_dim=head_dim, global_head_dim=g_head_dim,
        num_experts=t["num_experts"], top_k_experts=t["top_k_experts"], sliding_window=t["sliding_window"],
        layer_types=tuple(types), rope_sliding=_rope(rope, SLIDING, where_t), rope_full=_rope(rope, FULL, where_t),
        rms_norm_eps=float(t["rms_norm_eps"]), max_position_embeddings=t["max_position_embeddings"],
        pad_id=t["pad_token_id"], eos_ids=eos_ids, bos_id=t["bos_token_id"],
        canvas_length=_positive_int(raw.get("canvas_length") or 256, f"{where}.canvas_length"),
        generation=_generation(generation or {}), name=str(raw.get("_name_or_path") or "diffusion-gemma"),
    )
    ids = [("pad_token_id", cfg.pad_id), ("bos_token_id", cfg.bos_id), *(("eos_token_id", e) for e in eos_ids)]
    for key, value in ids:
        if value is not None and (not isinstance(value, int) or not 0 <= value < cfg.vocab_size):
            raise ConfigError(f"{where_t}.{key}={value!r}: expected an id in 0..{cfg.vocab_size - 1}")
    return cfg


def _full_layer_shape(t: dict[str, Any], types: list[str], where: str) -> tuple[int, int]:
    """(head dim, KV heads) of the full layers. transformers saves them as sparse per-layer overrides (equal
    values dropped); without per_layer_config it reads global_head_dim (default 512) and
    num_global_key_value_heads (default: num_key_value_heads)."""
    per_layer = t.get("per_layer_config")
    if per_layer is None:
        g_kv = t.get("num_global_key_value_heads") or t["num_key_value_heads"]
        return _positive_int(t.get("global_head_dim", 512), f"{where}.global_head_dim"), g_kv
    if not isinstance(per_layer, dict):
        raise ConfigError(f"{where}.per_layer_config: expected an object of layer index -> overrides")
    shapes = set()
    for i, kind in enumerate(types):
        over = next((v for k, v in per_layer.items() if str(k).isdigit() and int(k) == i), {})
        extra = sorted(set(over) - PER_LAYER_KEYS)
        if extra:
            raise ConfigError(f"{where}.per_layer_config[{i}]: unsupported override(s) {extra}: expected only "
                              f"{sorted(PER_LAYER_KEYS)}")
        shape = (over.get("head_dim", t["head_dim"]), over.get("num_key_value_heads", t["num_key_value_heads"]))
        if kind == SLIDING and shape != (t["head_dim"], t["num_key_value_heads"]):
            raise ConfigError(f"{where}.per_layer_config[{i}]={over}: expected no shape override on a sliding layer")
        if kind == FULL:
            shapes.add(shape)
    bad = [k for k in per_layer if not str(k).isdigit() or not 0 <= int(k) < len(types)]
    if bad or len(shapes) != 1:
        raise ConfigError(f"{where}.per_layer_config: expected keys 0..{len(types) - 1} and one shape for every "
                          f"full layer, got keys {bad} and shapes {sorted(shapes)}")
    (g_head_dim, g_kv), = shapes
    return _positive_int(g_head_dim, f"{where}.global head_dim"), _positive_int(g_kv, f"{where}.global KV heads")


def _rope(rope: Any, kind: str, where: str) -> Rope:
    params = rope.get(kind) if isinstance(rope, dict) else None
    if not isinstance(params, dict) or "rope_theta" not in params:
        raise ConfigError(f"{where}.rope_parameters[{kind!r}]: expected an object with rope_theta, got {params!r}")
    rope_type = params.get("rope_type", "default")
    allowed = {SLIDING: ("default",), FULL: ("default", "proportional")}[kind]
    partial = float(params.get("partial_rotary_factor", 1.0)) if rope_type == "proportional" else 1.0
    if rope_type not in allowed or (rope_type == "default" and params.get("partial_rotary_factor", 1.0) != 1.0):
        raise ConfigError(f"{where}.rope_parameters[{kind!r}]={params!r}: expected rope_type in {allowed} "
                          "(partial rotation only with 'proportional')")
    out = Rope(float(params["rope_theta"]), partial, float(params.get("factor", 1.0)))
    if not (out.theta > 0 and 0 < out.partial_rotary_factor <= 1 and out.factor > 0):
        raise ConfigError(f"{where}.rope_parameters[{kind!r}]={params!r}: expected theta > 0, factor > 0 and "
                          "0 < partial_rotary_factor <= 1")
    return out


def _generation(gen: dict[str, Any]) -> GemmaGeneration:
    sampler = gen.get("sampler_config") if isinstance(gen.get("sampler_config"), dict) else {}
    values = {k: gen[k] for k in ("max_denoising_steps", "t_min", "t_max", "stability_threshold",
                                  "confidence_threshold") if gen.get(k) is not None}
    if sampler.get("entropy_bound") is not None:
        values["entropy_bound"] = sampler["entropy_bound"]
    return GemmaGeneration(**values)


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{where}={value!r}: expected a positive integer")
    return value


def load_gemma_config(model_dir: str | Path) -> GemmaConfig:
    """config.json (+ generation_config.json when present) of a DiffusionGemma checkpoint directory."""
    model_dir = Path(model_dir)
    raw, gen = (_read_json(model_dir / name, required=name == "config.json")
                for name in ("config.json", "generation_config.json"))
    cfg = gemma_config_from_dict(raw, gen, where=str(model_dir / "config.json"))
    return replace(cfg, name=model_dir.resolve().name)


def _read_json(path: Path, required: bool) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise ConfigError(f"{path}: missing from the model directory")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
