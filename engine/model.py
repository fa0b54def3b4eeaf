"""The transformer, in call order: model, block, attention, MLP, then the free functions.

One set of weights serves these ways of running:
- `forward`: every row at once under an explicit attention mask (training, the reference sampler, parity
  tests against transformers). Causal mode is `mask=None, causal=True`; bidirectional is `mask=None`.
- `encode`: context rows (prefix, middle segments, suffix) causally, appended to an existing cache, so a
  prefix shared with the last request is never recomputed.
- `denoise`: only the active rows (the canvas) against the cached context K/V, no mask among them.
- `denoise_padded`: `denoise` for several requests at once (engine.batch_forward): their rows packed, their
  caches padded to one shape and attended under a key-padding mask.

Norm, RoPE and canvas attention go through `kernels.ops_for(device)`: Triton on CUDA, the torch reference
elsewhere. Shapes: B batch, T rows, D hidden, H query heads, Hkv key/value heads, Dh head dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dg_lsp.engine.config import ModelConfig
from dg_lsp.kernels import naive, ops_for


@dataclass
class KVCache:
    """Per-layer keys and values of context rows, RoPE already applied. k[i], v[i]: [B, Hkv, L, Dh]."""

    k: list[Tensor]
    v: list[Tensor]

    @property
    def length(self) -> int:
        return self.k[0].shape[2] if self.k else 0

    def truncate(self, n: int) -> "KVCache":
        return KVCache([k[:, :, :n] for k in self.k], [v[:, :, :n] for v in self.v])

    def select(self, rows: Tensor) -> "KVCache":
        return KVCache([k[:, :, rows] for k in self.k], [v[:, :, rows] for v in self.v])

    @staticmethod
    def empty(cfg: ModelConfig, batch: int, device: torch.device, dtype: torch.dtype) -> "KVCache":
        shape = (batch, cfg.num_key_value_heads, 0, cfg.head_dim)
        layers = range(cfg.num_hidden_layers)
        return KVCache([torch.empty(shape, device=device, dtype=dtype) for _ in layers],
                       [torch.empty(shape, device=device, dtype=dtype) for _ in layers])


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size)
        self.output = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.use_kernels = True  # False: always the torch reference ops (training needs autograd)

    @property
    def lm_head_weight(self) -> Tensor:
        return self.tok_embeddings.weight if self.output is None else self.output.weight

    def ops(self, x: Tensor):
        """The kernel set for x: Triton on CUDA; the torch reference elsewhere, for autograd and for fp64."""
        return ops_for(x.device) if self.use_kernels and x.dtype != torch.float64 else naive

    def forward(self, tokens: Tensor, positions: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """Logits for every row. tokens, positions: [B, T]; mask: [B, T, T] bool, True = may attend."""
        return self.logits(self.hidden(tokens, positions, mask, causal))

    def hidden(self, tokens: Tensor, positions: Tensor, mask: Tensor | None = None, causal: bool = False,
               keep: Tensor | None = None) -> Tensor | tuple[Tensor, KVCache]:
        """Final-norm hidden states [B, T, D]; with `keep` (row indices) also the K/V of those rows."""
        attn_mask = None if mask is None else mask[:, None]  # [B, 1, T, T] broadcasts over heads
        kept = KVCache([], [])

        def attend(i: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            if keep is not None:
                kept.k.append(k[:, :, keep])
                kept.v.append(v[:, :, keep])
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and mask is None,
                                                  enable_gqa=q.shape[1] != k.shape[1])

        out = self._run(tokens, positions, attend)
        return out if keep is None else (out, kept)

    def encode(self, tokens: Tensor, positions: Tensor, past: KVCache | None = None,
               want_hidden: bool = False) -> KVCache | tuple[KVCache, Tensor]:
        """Append rows to `past`. New rows see every past row and, causally, each other.

        Returns the extended cache; with want_hidden also the new rows' final-norm hidden states (the
        autoregressive baseline decodes this way). Without it the last layer stops after its K/V."""
        n_past, t = (0 if past is None else past.length), tokens.shape[1]
        # [T, n_past + T]: all past rows, then lower-triangular among the new rows
        mask = torch.ones(t, n_past + t, dtype=torch.bool, device=tokens.device)
        mask[:, n_past:] = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        cache = KVCache([], [])

        def attend(i: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor | None:
            if past is not None:
                k, v = torch.cat([past.k[i], k], dim=2), torch.cat([past.v[i], v], dim=2)
            cache.k.append(k)
            cache.v.append(v)
            if i == len(self.layers) - 1 and not want_hidden:
                return None  # the last layer's output feeds nothing: only its K/V is needed
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])

        out = self._run(tokens, positions, attend)
        return (cache, out) if want_hidden else cache

    def denoise(self, tokens: Tensor, positions: Tensor, ctx: KVCache, ctx_len: int | Tensor | None = None,
                keep: Tensor | None = None) -> Tensor | tuple[Tensor, KVCache]:
        """Final-norm hidden states [B, C, D] of the active rows, attending to ctx and to each other.

        ctx_len: how many rows of the cache are valid (None: all). A 0-dim device tensor lets a captured
        CUDA graph replay against a cache buffer with spare capacity. With `keep` (indices into the
        active rows) also the K/V of those rows: context rows encoded beside the canvas."""
        scale = self.cfg.head_dim ** -0.5
        ops = self.ops(self.tok_embeddings.weight)
        kept = KVCache([], [])

        def attend(i: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            if keep is not None:
                kept.k.append(k[:, :, keep])
                kept.v.append(v[:, :, keep])
            return ops.canvas_attention(q, ctx.k[i], ctx.v[i], k, v, scale, ctx_len)  # [B, H, C, Dh]

        out = self._run(tokens, positions, attend)
        return out if keep is None else (out, kept)

    def denoise_padded(self, tokens: Tensor, positions: Tensor, cache: KVCache, slots: Tensor, key_mask: Tensor,
                       row_mask: Tensor | None = None) -> Tensor:
        """`denoise` for a batch of requests padded to a common shape (engine.batch_forward): final-norm
        hidden states [B, R, D] of the rows (zeros for padding rows).

        cache: per layer [B, Hkv, K, Dh], each request's context K/V and a slot for each of its canvas rows.
        Every layer first writes the rows' K/V into their `slots` ([B, R] indices into K), then each row
        attends to the keys its request's `key_mask` ([B, K] bool) allows: a padding key never reaches a
        real row. row_mask ([B, R] bool, None: all real) marks the real rows: only they run (packed, so
        the linear layers never see padding) and only they write a slot. The cache is modified in place;
        what a slot holds after the call is its row's K/V from this forward."""
        scale = self.cfg.head_dim ** -0.5
        b, r = tokens.shape
        if row_mask is None:
            row_mask = torch.ones_like(tokens, dtype=torch.bool)
        bi, ri = row_mask.nonzero(as_tuple=True)  # [N] each: the real rows, packed
        si = slots[bi, ri]
        mask = key_mask[:, None, None, :]  # [B, 1, 1, K] broadcasts over heads and rows

        def attend(i: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            # q: [1, H, N, Dh]; k, v: [1, Hkv, N, Dh]
            cache.k[i][bi, :, si] = k[0].transpose(0, 1)  # [N, Hkv, Dh] into their slots
            cache.v[i][bi, :, si] = v[0].transpose(0, 1)
            hq, hkv, dh = q.shape[1], k.shape[1], q.shape[3]
            padded = q.new_zeros(b, r, hq, dh)
            padded[bi, ri] = q[0].transpose(0, 1)
            # query head h reads K/V head h // group: fold each group into one head of group * R rows, so
            # each K/V head is read once (as kernels.cpu.canvas_attention does)
            folded = padded.transpose(1, 2).reshape(b, hkv, (hq // hkv) * r, dh)
            out = F.scaled_dot_product_attention(folded, cache.k[i], cache.v[i], attn_mask=mask, scale=scale)
            return out.reshape(b, hq, r, dh)[bi, :, ri].transpose(0, 1)[None]  # [1, H, N, Dh]

        packed = self._run(tokens[bi, ri][None], positions[bi, ri][None], attend)  # [1, N, D]
        hidden = packed.new_zeros(b, r, packed.shape[-1])
        hidden[bi, ri] = packed[0]
        return hidden

    def _run(self, tokens: Tensor, positions: Tensor, attend) -> Tensor | None:
        """The blocks in order; `attend(layer, q, k, v)` is the mode's attention (None: stop there).

        Pre-norm residual stream with the add fused into the next norm: rms_norm(delta, w, eps, resid)
        returns (norm(resid + delta) * w, resid + delta)."""
        x = self.tok_embeddings(tokens)  # x: [B, T, D]
        rope = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        ops = self.ops(x)
        eps = self.cfg.rms_norm_eps
        resid, delta = x, None
        for i, layer in enumerate(self.layers):
            normed, resid = ops.rms_norm(resid if delta is None else delta, layer.attention_norm.weight, eps,
                                         None if delta is None else resid)
            q, k, v = layer.attention.project(normed, rope, ops)
            out = attend(i, q, k, v)
            if out is None:
                return None
            delta = layer.attention.merge(out)
            normed, resid = ops.rms_norm(delta, layer.ffn_norm.weight, eps, resid)
            delta = layer.feed_forward(normed)
        out, _ = ops.rms_norm(delta, self.norm.weight, eps, resid)
        return out

    def logits(self, hidden: Tensor) -> Tensor:
        logits = F.linear(hidden, self.lm_head_weight)  # [..., V]
        return logits if logits.dtype == torch.float64 else logits.float()  # the sampler works in fp32 or better


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size)
        self.feed_forward = FeedForward(cfg)


class Attention(nn.Module):
    """Grouped-query attention projections. The attention itself is run by the caller (mode-dependent)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        # q, k and v in one GEMM: fewer launches, one read of the input
        self.wqkv = nn.Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, bias=cfg.attention_bias)
        self.wo = nn.Linear(cfg.q_size, cfg.hidden_size, bias=False)

    def project(self, x: Tensor, rope: tuple[Tensor, Tensor], ops) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q, k, v = self.wqkv(x).split([self.n_heads * self.head_dim, self.n_kv * self.head_dim,
                                      self.n_kv * self.head_dim], dim=-1)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # q: [B, H, T, Dh]
        k = k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # k: [B, Hkv, T, Dh]
        v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        cos, sin = rope
        return ops.rope(q, cos, sin), ops.rope(k, cos, sin), v

    def merge(self, out: Tensor) -> Tensor:
        b, _, t, _ = out.shape
        return self.wo(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(gate(x)) * up(x)), gate and up fused into one GEMM."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w13 = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class RMSNorm(nn.Module):
    """Holds the weight; the math is `ops.rms_norm` (fp32 inside, as HF Qwen2/Llama)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """HF rotate_half convention: cos/sin of cat(freqs, freqs). positions: [B, T] -> [B, T, Dh] each.

    Frequencies are computed in fp32 (as transformers does) and only then cast to the model dtype.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.int64).float()
                                / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [B, T, Dh/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)
