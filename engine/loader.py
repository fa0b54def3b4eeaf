"""Checkpoint loading: safetensors only (never pickle), single file or sharded, through a declarative map.

A WEIGHT_MAPS entry lists, for each of our parameters, the checkpoint tensors it is made of; several names
are concatenated along dim 0 (q/k/v into wqkv, gate/up into w13). The same table writes our checkpoints
back in the HF layout, so what we save is what transformers would load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dg_lsp.engine.config import ModelConfig
from dg_lsp.engine.errors import CheckpointError
from dg_lsp.engine.model import Transformer

Progress = Callable[[str, int, int], None]

# ours (per layer "{i}") -> checkpoint names concatenated along dim 0
WEIGHT_MAPS: dict[str, dict[str, list[str]]] = {
    "qwen2": {
        "tok_embeddings.weight": ["model.embed_tokens.weight"],
        "layers.{i}.attention_norm.weight": ["model.layers.{i}.input_layernorm.weight"],
        "layers.{i}.attention.wqkv.weight": [f"model.layers.{{i}}.self_attn.{p}_proj.weight" for p in "qkv"],
        "layers.{i}.attention.wqkv.bias": [f"model.layers.{{i}}.self_attn.{p}_proj.bias" for p in "qkv"],
        "layers.{i}.attention.wo.weight": ["model.layers.{i}.self_attn.o_proj.weight"],
        "layers.{i}.ffn_norm.weight": ["model.layers.{i}.post_attention_layernorm.weight"],
        "layers.{i}.feed_forward.w13.weight": ["model.layers.{i}.mlp.gate_proj.weight",
                                               "model.layers.{i}.mlp.up_proj.weight"],
        "layers.{i}.feed_forward.w2.weight": ["model.layers.{i}.mlp.down_proj.weight"],
        "norm.weight": ["model.norm.weight"],
        "output.weight": ["lm_head.weight"],
    },
    # LLaDA's OLMo-derived naming: ff_proj is the gate (activated), up_proj the up projection.
    "llada": {
        "tok_embeddings.weight": ["model.transformer.wte.weight"],
        "layers.{i}.attention_norm.weight": ["model.transformer.blocks.{i}.attn_norm.weight"],
        "layers.{i}.attention.wqkv.weight": [f"model.transformer.blocks.{{i}}.{p}_proj.weight" for p in "qkv"],
        "layers.{i}.attention.wqkv.bias": [f"model.transformer.blocks.{{i}}.{p}_proj.bias" for p in "qkv"],
        "layers.{i}.attention.wo.weight": ["model.transformer.blocks.{i}.attn_out.weight"],
        "layers.{i}.ffn_norm.weight": ["model.transformer.blocks.{i}.ff_norm.weight"],
        "layers.{i}.feed_forward.w13.weight": ["model.transformer.blocks.{i}.ff_proj.weight",
                                               "model.transformer.blocks.{i}.up_proj.weight"],
        "layers.{i}.feed_forward.w2.weight": ["model.transformer.blocks.{i}.ff_out.weight"],
        "norm.weight": ["model.transformer.ln_f.weight"],
        "output.weight": ["model.transformer.ff_out.weight"],
    },
}


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[str, list[tuple[str, tuple[int, ...]]]]]:
    """Checkpoint layout implied by the config: ours -> (ours, [(checkpoint name, shape), ...])."""
    d, f, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    parts = {  # shape of each concatenated part, in map order
        "tok_embeddings.weight": [(v, d)],
        "attention_norm.weight": [(d,)],
        "attention.wqkv.weight": [(cfg.q_size, d), (cfg.kv_size, d), (cfg.kv_size, d)],
        "attention.wqkv.bias": [(cfg.q_size,), (cfg.kv_size,), (cfg.kv_size,)],
        "attention.wo.weight": [(d, cfg.q_size)],
        "ffn_norm.weight": [(d,)],
        "feed_forward.w13.weight": [(f, d), (f, d)],
        "feed_forward.w2.weight": [(d, f)],
        "norm.weight": [(d,)],
        "output.weight": [(v, d)],
    }
    out = {}
    for ours, names in WEIGHT_MAPS[cfg.family.weight_map].items():
        if ours == "output.weight" and cfg.tie_word_embeddings:
            continue
        if ours.endswith("wqkv.bias") and not cfg.attention_bias:
            continue
        shapes = parts[ours.removeprefix("layers.{i}.")]
        layers = range(cfg.num_hidden_layers) if "{i}" in ours else [None]
        for i in layers:
            fill = (lambda s: s.format(i=i)) if i is not None else (lambda s: s)
            out[fill(ours)] = (fill(ours), [(fill(n), s) for n, s in zip(names, shapes)])
    return out


def checkpoint_files(model_dir: Path) -> dict[str, Path]:
    """Checkpoint tensor name -> file holding it (sharded index or a single model.safetensors)."""
    index = model_dir / "model.safetensors.index.json"
    single = model_dir / "model.safetensors"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a valid shard index (expected a JSON object with 'weight_map'): {exc}")
        files = {name: model_dir / shard for name, shard in weight_map.items()}
        for path in sorted(set(files.values())):
            if not path.is_file():
                raise CheckpointError(f"{index}: names shard {path.name}, which is missing from {model_dir}")
        return files
    if single.is_file():
        with _open(single) as f:
            return {name: single for name in f.keys()}
    pickles = sorted(p.name for p in model_dir.glob("*.bin")) + sorted(p.name for p in model_dir.glob("*.pt"))
    hint = f" (found {', '.join(pickles)}: pickle checkpoints are never loaded; convert to safetensors)" if pickles else ""
    raise CheckpointError(f"{model_dir}: no model.safetensors or model.safetensors.index.json{hint}")


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_weights(model: Transformer, model_dir: Path, device: torch.device, dtype: torch.dtype,
                 progress: Progress | None = None) -> None:
    """Fill a (meta-device) model from the checkpoint, placing each tensor on `device` in `dtype`."""
    cfg = model.cfg
    files = checkpoint_files(model_dir)
    wanted = expected_tensors(cfg)
    handles: dict[Path, object] = {}
    state: dict[str, torch.Tensor] = {}
    try:
        for n, (ours, parts) in enumerate(wanted.values()):
            pieces = []
            for name, shape in parts:
                if name not in files:
                    raise CheckpointError(f"{model_dir}: tensor {name} is missing (needed for {ours}, shape {shape})")
                path = files[name]
                handle = handles.get(path) or handles.setdefault(path, _open(path))
                try:
                    tensor = handle.get_tensor(name)
                except (SafetensorError, OSError, ValueError) as exc:
                    raise CheckpointError(f"{path}: cannot read tensor {name} ({exc})") from exc
                if tuple(tensor.shape) != shape:
                    raise CheckpointError(f"{path.name}: tensor {name} has shape {tuple(tensor.shape)}, "
                                          f"expected {shape} from config.json")
                pieces.append(tensor)
            state[ours] = (pieces[0] if len(pieces) == 1 else torch.cat(pieces)).to(device=device, dtype=dtype)
            if progress:
                progress("loading weights", n + 1, len(wanted))
    finally:
        handles.clear()
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:  # the map and the module disagree: a bug in this file, not in the checkpoint
        raise CheckpointError(f"internal: weight map does not cover the model (missing {missing}, extra {unexpected})")


def save_checkpoint(model: Transformer, model_dir: Path, dtype: torch.dtype | None = None,
                    max_shard_bytes: int | None = None) -> None:
    """Write config.json and the weights in the HF layout (sharded above `max_shard_bytes`)."""
    cfg = model.cfg
    model_dir.mkdir(parents=True, exist_ok=True)
    params = dict(model.state_dict())
    tensors: dict[str, torch.Tensor] = {}
    for ours, parts in expected_tensors(cfg).values():
        whole = params[ours].detach().to("cpu", dtype or params[ours].dtype)
        for piece, (name, _) in zip(whole.split([s[0] for _, s in parts]), parts):
            tensors[name] = piece.contiguous()
    (model_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:  # one file when it fits, as save_pretrained does
        save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(model_dir / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
