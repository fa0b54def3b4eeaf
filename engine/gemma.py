"""DiffusionGemma's text model, in call order: model, block, attention, MLPs, free functions, loading.

One set of weights runs two ways (transformers builds an encoder and a decoder and ties their weights):
- `encode`: prompt (or committed canvas) rows, causally, appended to the cache. Sliding layers see
  i-W < j <= i; the cache keeps every row of full layers and the last W-1 rows of sliding layers.
- `decode`: the canvas at the next C positions, bidirectionally over [cached K/V ; canvas K/V] with no
  window, self-conditioned on the previous step's logits; it writes nothing to the cache.

Shapes: B batch, T rows, C canvas rows, D hidden, H query heads, Hkv key/value heads, Dh head dim, V vocab.
Sliding and full layers differ in Dh, Hkv and RoPE; full layers have no v_proj (V is the K projection,
unrotated, normalised without a weight). Attention scaling is 1.0: q and k are RMS-normalised instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import Tensor, nn

from dg_lsp.engine.errors import CheckpointError
from dg_lsp.engine.gemma_config import SKIPPED_PREFIXES, GemmaConfig, Rope, load_gemma_config
from dg_lsp.engine.loader import Progress, _open, checkpoint_files
from dg_lsp.engine.moe import MoE, rms_norm
from dg_lsp.kernels import naive, ops_for

ENCODE, DECODE = 0, 1  # index into each block's layer_scalar


@dataclass
class GemmaCache:
    """K/V of the encoded rows, RoPE applied. k[i], v[i]: [B, Hkv_i, L_i, Dh_i], L_i = every row (full
    layers) or the last min(length, W-1) rows (sliding layers). length: rows encoded so far = next position."""

    k: list[Tensor]
    v: list[Tensor]
    length: int


class GemmaModel(nn.Module):
    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)  # also the lm_head (tied)
        self.self_cond = SelfConditioning(cfg.hidden_size, cfg.intermediate_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = Norm(cfg.hidden_size)
        self.use_kernels = True  # False: the torch reference ops (and the reference MoE loop) everywhere
        self.skipped_weights: dict[str, int] = {}  # checkpoint prefix -> tensors not loaded (vision tower)

    def ops(self, x: Tensor):
        """Triton on CUDA, the torch reference elsewhere (and always for float64)."""
        return ops_for(x.device) if self.use_kernels and x.dtype != torch.float64 else naive

    def embed_scale(self) -> float:
        """sqrt(D) rounded to fp32, then to the weight dtype (bf16: sqrt(2816) -> 53.0), as the reference does."""
        return torch.tensor(self.cfg.hidden_size ** 0.5, dtype=torch.float32).to(self.embed.weight.dtype).item()

    @property
    def vocab_size(self) -> int:  # what the sampler draws uniform noise over (gemma_sampler.GemmaLike)
        return self.cfg.vocab_size

    def encode(self, tokens: Tensor, cache: GemmaCache | None = None) -> GemmaCache:
        """Append rows at positions cache.length .. +T-1, causal among themselves, seeing the cached rows
        (sliding layers: only the last W-1 of them, the window). tokens: [B, T]. Returns the new cache."""
        past, t = (0 if cache is None else cache.length), tokens.shape[1]
        positions = torch.arange(past, past + t, device=tokens.device)
        window = self.cfg.sliding_window
        out = GemmaCache([], [], past + t)

        def attend(i: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor | None:
            if cache is not None:
                k, v = torch.cat([cache.k[i], k], dim=2), torch.cat([cache.v[i], v], dim=2)  # [B, Hkv, S, Dh]
            sliding, s = self.cfg.is_sliding(i), k.shape[2]
            keep = max(0, s - (window - 1)) if sliding else 0  # rows a later query can still see
            out.k.append(k[:, :, keep:])
            out.v.append(v[:, :, keep:])
            if i == len(self.layers) - 1:
                return None  # the last layer's output feeds nothing: only its K/V is needed
            key_pos = torch.arange(past + t - s, past + t, device=tokens.device)  # [S]
            mask = key_pos[None, :] <= positions[:, None]  # [T, S]
            if sliding:
                mask &= key_pos[None, :] > positions[:, None] - window
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0,
                                                  enable_gqa=q.shape[1] != k.shape[1])

        self._run(self.embed(tokens) * self.embed_scale(), positions, attend, ENCODE)
        return out

    def decode(self, canvas: Tensor, cache: GemmaCache, self_cond: Tensor | None = None) -> Tensor:
        """Logits [B, C, V] fp32, softcapped, of the canvas at positions cache.length .. +C-1. canvas: [B, C].

        self_cond: the previous step's processed logits [B, C, V] (None on the first step: a zero signal).
        """
        scale, weight = self.embed_scale(), self.embed.weight
        x = self.embed(canvas) * scale  # [B, C, D]
        eps = self.cfg.rms_norm_eps
        if self_cond is not None:  # a zero signal adds exactly 0 (the MLP maps 0 to 0), so None skips this
            soft = self_cond.softmax(dim=-1, dtype=torch.float32).to(weight.dtype) @ weight * scale  # [B, C, D]
            x = x + self.self_cond(rms_norm(soft, self.self_cond.pre_norm.weight, eps))
        x = rms_norm(x, None, eps)
        positions = torch.arange(cache.length, cache.length + canvas.shape[1], device=canvas.device)
        ops = self.ops(x)

        def attend(i: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return ops.canvas_attention(q, cache.k[i], cache.v[i], k, v, 1.0)  # [B, H, C, Dh]

        hidden = self._run(x, positions, attend, DECODE)
        logits = F.linear(hidden, weight).float()  # [B, C, V]
        cap = self.cfg.final_logit_softcapping
        return torch.tanh(logits / cap) * cap

    def _run(self, x: Tensor, positions: Tensor, attend, mode: int) -> Tensor | None:
        """The blocks in order on input embeddings x [B, T, D]; `attend(layer, q, k, v)` is the mode's
        attention (None: stop there). Returns the final-norm hidden states [B, T, D]."""
        eps, ops = self.cfg.rms_norm_eps, self.ops(x)
        first = {kind: self.cfg.layer_types.index(kind) for kind in set(self.cfg.layer_types)}
        ropes = {kind: rope_cos_sin(positions, self.cfg.layer_head_dim(i), self.cfg.layer_rope(i), x.dtype)
                 for kind, i in first.items()}  # one cos/sin table per layer kind
        for i, layer in enumerate(self.layers):
            h = rms_norm(x, layer.input_norm.weight, eps)
            q, k, v = layer.attention.project(h, ropes[self.cfg.layer_types[i]], ops, eps)
            out = attend(i, q, k, v)
            if out is None:
                return None
            x = x + rms_norm(layer.attention.merge(out), layer.post_attention_norm.weight, eps)
            # dense MLP and MoE side by side, both reading the same residual x
            h1 = rms_norm(layer.mlp(rms_norm(x, layer.pre_mlp_norm.weight, eps)), layer.post_mlp_norm.weight, eps)
            h2 = layer.moe(x, rms_norm(x, layer.pre_moe_norm.weight, eps), fast=self.use_kernels)  # routes on raw x
            h2 = rms_norm(h2, layer.post_moe_norm.weight, eps)
            x = (x + rms_norm(h1 + h2, layer.post_ffn_norm.weight, eps)) * layer.layer_scalar[mode]
        return rms_norm(x, self.norm.weight, eps)


class Block(nn.Module):
    def __init__(self, cfg: GemmaConfig, layer: int):
        super().__init__()
        d = cfg.hidden_size
        self.input_norm = Norm(d)
        self.attention = Attention(cfg, layer)
        self.post_attention_norm = Norm(d)
        self.pre_mlp_norm = Norm(d)
        self.mlp = GatedMLP(d, cfg.intermediate_size)
        self.post_mlp_norm = Norm(d)
        self.pre_moe_norm = Norm(d)
        self.moe = MoE(d, cfg.num_experts, cfg.top_k_experts, cfg.moe_intermediate_size, cfg.rms_norm_eps)
        self.post_moe_norm = Norm(d)
        self.post_ffn_norm = Norm(d)
        # the residual's multiplier, [encode, decode]: transformers stores one per mode (not tied)
        self.register_buffer("layer_scalar", torch.ones(2))


class Attention(nn.Module):
    """q/k(/v) projections with their norms and RoPE; the attention itself is the caller's (per mode)."""

    def __init__(self, cfg: GemmaConfig, layer: int):
        super().__init__()
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.layer_kv_heads(layer)
        self.head_dim = cfg.layer_head_dim(layer)
        self.k_is_v = not cfg.is_sliding(layer)  # full layers: no v_proj, V comes from the K projection
        self.splits = [self.n_heads * self.head_dim] + [self.n_kv * self.head_dim] * (1 if self.k_is_v else 2)
        self.wqkv = nn.Linear(cfg.hidden_size, sum(self.splits), bias=False)  # q, k (, v) in one GEMM
        self.wo = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.q_norm = Norm(self.head_dim)
        self.k_norm = Norm(self.head_dim)

    def project(self, x: Tensor, rope: tuple[Tensor, Tensor], ops, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q, k, *v = self.wqkv(x).split(self.splits, dim=-1)
        q = q.view(b, t, self.n_heads, self.head_dim)
        k = k.view(b, t, self.n_kv, self.head_dim)
        v = k if self.k_is_v else v[0].view(b, t, self.n_kv, self.head_dim)
        cos, sin = rope
        q = ops.rope(rms_norm(q, self.q_norm.weight, eps).transpose(1, 2), cos, sin)  # [B, H, T, Dh]
        k = ops.rope(rms_norm(k, self.k_norm.weight, eps).transpose(1, 2), cos, sin)  # [B, Hkv, T, Dh]
        return q, k, rms_norm(v, None, eps).transpose(1, 2)

    def merge(self, out: Tensor) -> Tensor:
        b, _, t, _ = out.shape
        return self.wo(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class GatedMLP(nn.Module):
    """w2(gelu_tanh(gate(x)) * up(x)), gate and up in one GEMM."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.gelu(gate, approximate="tanh") * up)


class SelfConditioning(GatedMLP):
    """The decoder's self-conditioning MLP: reads the pre-normed soft embedding of the previous logits."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(dim, hidden)
        self.pre_norm = Norm(dim)


class Norm(nn.Module):
    """Holds the weight; the math is `moe.rms_norm` (fp32 inside, weight used as is)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


def rope_cos_sin(positions: Tensor, head_dim: int, rope: Rope, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """[T] positions -> cos, sin [T, Dh] (rotate_half convention: cat(freqs, freqs)), fp32 then cast.

    Pair j < rotated_pairs has frequency theta**(-2j / Dh) / factor (the full Dh as denominator, also for
    partial rotation); the other pairs have frequency 0, so cos = 1 and sin = 0 leave them as they are."""
    n = rope.rotated_pairs(head_dim)
    inv_freq = torch.zeros(head_dim // 2, device=positions.device)
    inv_freq[:n] = 1.0 / rope.theta ** (torch.arange(0, 2 * n, 2, device=positions.device).float() / head_dim)
    freqs = positions.float()[:, None] * (inv_freq / rope.factor)  # [T, Dh/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


# Loading. transformers ties every encoder text weight to the decoder's, so the checkpoint holds them once,
# under the decoder's names ("{p}" = "model.decoder."); a converted checkpoint may hold the encoder's
# ("model.encoder.language_model."), which are accepted in their place. Names listed for one parameter are
# concatenated along dim 0. layer_scalar is a buffer, not tied: the encoder's and the decoder's are both
# stored and kept side by side ([encode, decode]) so each mode uses its own, whatever the checkpoint holds.
GEMMA_WEIGHTS: dict[str, list[str]] = {
    "embed.weight": ["{p}embed_tokens.weight"],
    "self_cond.pre_norm.weight": ["model.decoder.self_conditioning.pre_norm.weight"],
    "self_cond.w13.weight": [f"model.decoder.self_conditioning.{p}_proj.weight" for p in ("gate", "up")],
    "self_cond.w2.weight": ["model.decoder.self_conditioning.down_proj.weight"],
    "layers.{i}.input_norm.weight": ["{p}layers.{i}.input_layernorm.weight"],
    "layers.{i}.attention.wqkv.weight": [f"{{p}}layers.{{i}}.self_attn.{p}_proj.weight" for p in "qkv"],  # no v: full
    "layers.{i}.attention.wo.weight": ["{p}layers.{i}.self_attn.o_proj.weight"],
    "layers.{i}.attention.q_norm.weight": ["{p}layers.{i}.self_attn.q_norm.weight"],
    "layers.{i}.attention.k_norm.weight": ["{p}layers.{i}.self_attn.k_norm.weight"],
    "layers.{i}.post_attention_norm.weight": ["{p}layers.{i}.post_attention_layernorm.weight"],
    "layers.{i}.pre_mlp_norm.weight": ["{p}layers.{i}.pre_feedforward_layernorm.weight"],
    "layers.{i}.mlp.w13.weight": [f"{{p}}layers.{{i}}.mlp.{p}_proj.weight" for p in ("gate", "up")],
    "layers.{i}.mlp.w2.weight": ["{p}layers.{i}.mlp.down_proj.weight"],
    "layers.{i}.post_mlp_norm.weight": ["{p}layers.{i}.post_feedforward_layernorm_1.weight"],
    "layers.{i}.pre_moe_norm.weight": ["{p}layers.{i}.pre_feedforward_layernorm_2.weight"],
    "layers.{i}.moe.proj.weight": ["{p}layers.{i}.router.proj.weight"],
    "layers.{i}.moe.scale": ["{p}layers.{i}.router.scale"],
    "layers.{i}.moe.per_expert_scale": ["{p}layers.{i}.router.per_expert_scale"],
    "layers.{i}.moe.gate_up_proj": ["{p}layers.{i}.experts.gate_up_proj"],
    "layers.{i}.moe.down_proj": ["{p}layers.{i}.experts.down_proj"],
    "layers.{i}.post_moe_norm.weight": ["{p}layers.{i}.post_feedforward_layernorm_2.weight"],
    "layers.{i}.post_ffn_norm.weight": ["{p}layers.{i}.post_feedforward_layernorm.weight"],
    "layers.{i}.layer_scalar": ["model.encoder.language_model.layers.{i}.layer_scalar",
                                "model.decoder.layers.{i}.layer_scalar"],
    "norm.weight": ["{p}norm.weight"],
}
TIED_PREFIXES = ("model.decoder.", "model.encoder.language_model.")  # "{p}", in order of preference
REDUNDANT = ("lm_head.weight",)  # tied to the embedding


def load_gemma(model_dir: Path, device: torch.device | str, dtype: torch.dtype,
               progress: Progress | None = None) -> tuple[GemmaModel, GemmaConfig]:
    """A DiffusionGemma checkpoint (transformers' save_pretrained layout, safetensors only) on `device` in
    `dtype`. The vision tower is skipped; `model.skipped_weights` says how many tensors under which prefix."""
    model_dir = Path(model_dir)
    cfg = load_gemma_config(model_dir)
    files = checkpoint_files(model_dir)
    index = model_dir / "model.safetensors.index.json"
    where = index if index.is_file() else model_dir / "model.safetensors"
    with torch.device("meta"):
        model = GemmaModel(cfg)
    shapes = {name: tuple(t.shape) for name, t in [*model.named_parameters(), *model.named_buffers()]}
    wanted = expand_weight_map(cfg)
    handles: dict[Path, object] = {}
    used: set[str] = set()
    state: dict[str, Tensor] = {}
    for n, (ours, names) in enumerate(wanted.items()):
        pieces = []
        for name in names:
            candidates = [name.replace("{p}", p) for p in TIED_PREFIXES] if "{p}" in name else [name]
            used.update(candidates)
            found = next((c for c in candidates if c in files), None)
            if found is None:
                raise CheckpointError(f"{where}: tensor {candidates[0]} is missing (needed for {ours}, "
                                      f"shape {shapes[ours]})")
            path = files[found]
            try:
                handle = handles.get(path) or handles.setdefault(path, _open(path))
                pieces.append(handle.get_tensor(found))
            except (SafetensorError, OSError, ValueError) as exc:
                raise CheckpointError(f"{path}: cannot read tensor {found} ({exc})") from exc
        tensor = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        if tuple(tensor.shape) != shapes[ours]:
            got = " + ".join(str(tuple(p.shape)) for p in pieces)
            raise CheckpointError(f"{where}: {' + '.join(names)} has shape {got}, expected {shapes[ours]} from "
                                  f"config.json (for {ours})")
        state[ours] = tensor.to(device=device, dtype=dtype)
        if progress:
            progress("loading weights", n + 1, len(wanted))
    handles.clear()
    unknown = sorted(n for n in files if n not in used and n not in REDUNDANT and not n.startswith(SKIPPED_PREFIXES))
    if unknown:
        raise CheckpointError(f"{where}: {len(unknown)} tensor(s) this DiffusionGemma version does not have, e.g. "
                              f"{unknown[:5]}: expected only the text model, the vision tower and lm_head")
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:  # the map and the module disagree: a bug in this file, not in the checkpoint
        raise CheckpointError(f"internal: weight map does not cover the model (missing {missing}, extra {unexpected})")
    skipped = {p: sum(name.startswith(p) for name in files) for p in SKIPPED_PREFIXES}
    model.skipped_weights = {p: c for p, c in skipped.items() if c}
    return model.eval(), cfg


def expand_weight_map(cfg: GemmaConfig) -> dict[str, list[str]]:
    """GEMMA_WEIGHTS with "{i}" filled per layer (full layers drop v_proj); "{p}" is left to the loader."""
    out = {}
    for ours, names in GEMMA_WEIGHTS.items():
        for i in range(cfg.num_hidden_layers) if "{i}" in ours else [None]:
            if i is None:
                out[ours] = names
            else:
                fill = str(i)
                out[ours.replace("{i}", fill)] = [n.replace("{i}", fill) for n in names
                                                  if cfg.is_sliding(i) or ".v_proj." not in n]
    return out
