"""The slow reference sampler: the Dream and LLaDA denoising loops, written out plainly, as the oracle.

Every step recomputes the whole sequence (no cache, no active-row tricks) under the family's attention
mask, then commits as the reference code does:
- `loop="dream"` follows Dream's `_sample` (diffusion_generate): timesteps linspace(1, eps, steps + 1),
  commit int(n_masked * (1 - s / t)) (everything at the last step), ranked by maskgit_plus (top-1
  probability), topk_margin (top-1 minus top-2) or entropy (negative entropy).
- `loop="llada"` follows LLaDA's `generate` with one block: the per-step counts are fixed up front
  (get_num_transfer_tokens: n // steps each, the remainder to the first steps), tokens from argmax of
  Gumbel-perturbed logits in float64, ranked by their softmax probability in float64 (low_confidence).

`reference_dreamon` follows DreamOn's variable-length loop (DreamLM/DreamOn eval/generator.py,
batch_generate_with_expand_as_token, and the order of its HF `_sample`): one commit per step, then the
expand/delete edits, the whole sequence recomputed at its new length every step.

One deliberate deviation from all: the mask token's logit is set to -inf, so noise is never proposed
(the engine does the same; a trained model never proposes it anyway, a random test model does).
Only temperature 0 is mirrored: with sampling the reference codes draw from the global RNG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dg_lsp.engine.config import ModelConfig
from dg_lsp.engine.model import Transformer
from dg_lsp.engine.prompt import Layout, attention_mask


@torch.inference_mode()
def reference_infill(model: Transformer, cfg: ModelConfig, layout: Layout, steps: int, loop: str = "llada",
                     confidence: str = "max_prob", eps: float = 1e-3, block_length: int = 0) -> Tensor:
    """Returns the final sequence [T]; canvas positions hold the committed tokens.

    block_length (llada loop): LLaDA's semi-autoregressive blocks over the canvas positions, left to right,
    steps shared equally (LLaDA asks steps to be a multiple of the block count; the remainder, if any, goes
    to the first blocks); confidence is -inf outside the current block, as LLaDA's generate sets it."""
    device = model.tok_embeddings.weight.device
    x = torch.tensor(layout.tokens, device=device)[None]  # [1, T]
    positions = torch.arange(x.shape[1], device=device)[None]
    mask = attention_mask(layout, cfg)
    mask = None if mask is None else mask[None].to(device)
    mask_id = cfg.mask_id

    def logits_of(x: Tensor) -> Tensor:
        logits = model(x, positions, mask).double()
        if cfg.family.shift_logits:  # position i is predicted from hidden state i-1
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        logits[..., mask_id] = float("-inf")
        return logits

    if loop == "llada":
        canvas = layout.canvas_index.to(device)
        size = block_length if 0 < block_length < len(canvas) else len(canvas)
        n_blocks = -(-len(canvas) // size)
        for b in range(n_blocks):
            block_steps = max(1, steps // n_blocks + (1 if b < steps % n_blocks else 0))
            in_block = torch.zeros_like(x, dtype=torch.bool)
            in_block[0, canvas[b * size: (b + 1) * size]] = True
            n = int(((x == mask_id) & in_block).sum())
            counts = [n // block_steps + (1 if i < n % block_steps else 0) for i in range(block_steps)]
            for i in range(block_steps):
                mask_index = x == mask_id
                logits = logits_of(x)
                x0 = logits.argmax(dim=-1)  # temperature 0: Gumbel noise ** 0 == 1 leaves the argmax
                p = F.softmax(logits, dim=-1)
                x0_p = torch.gather(p, -1, x0[..., None])[..., 0]
                x0 = torch.where(mask_index, x0, x)
                conf = torch.where(mask_index & in_block, x0_p,
                                   torch.tensor(float("-inf"), dtype=x0_p.dtype, device=device))
                if counts[i] > 0:
                    select = conf[0].topk(counts[i]).indices
                    x[0, select] = x0[0, select]
        return x[0]

    if loop != "dream":
        raise ValueError(f"loop={loop!r}: expected 'llada' or 'dream'")
    timesteps = torch.linspace(1, eps, steps + 1)  # float32, as Dream's: the int() below depends on it
    for i in range(steps):
        mask_index = x == mask_id
        logits = logits_of(x)
        mask_logits = logits[mask_index]  # [M, V]
        conf, x0 = dream_confidence(mask_logits, confidence)
        n_mask = mask_index.sum() / mask_index.shape[0]  # a float tensor, as in Dream
        t, s = timesteps[i], timesteps[i + 1]
        n = int(n_mask * (1 - s / t)) if i < steps - 1 else int(n_mask)
        full = torch.full(x.shape, float("-inf"), dtype=conf.dtype, device=device)
        full[mask_index] = conf
        if n > 0:
            select = full[0].topk(n).indices
            proposal = torch.full_like(x, mask_id)
            proposal[mask_index] = x0
            x[0, select] = proposal[0, select]
    return x[0]


@torch.inference_mode()
def reference_dreamon(model: Transformer, cfg: ModelConfig, layout: Layout, max_canvas: int,
                      expand_budget: int | None = None, confidence: str = "max_prob", steps: int = 512) -> Tensor:
    """DreamOn's loop on a one-hole layout; returns the final sequence [T'] (its length is the model's choice).

    Per step, as DreamOn: the masked positions' logits (shifted), the expand logit lowered by 1e9 once the
    middle has `max_canvas` positions or the expand budget (default max_canvas, DreamOn's eval) is spent;
    the single most confident position commits (number_transfer_tokens = 1, temperature 0). Then:
    - after the first delete token, every position masked before the step becomes delete (pad_eos_to_right);
    - delete tokens at positions masked before the step are removed, the middle shrinks;
    - each expand token becomes two masks, the middle grows by one, the budget drops by one.
    DreamOn pads the sequence to its cap and hides the tail with an attention mask, positions counting only
    the visible rows; running the visible rows alone is the same computation. Stops when nothing is masked
    (or after `steps`, DreamOn's loop bound)."""
    if len(layout.holes) != 1:
        raise ValueError(f"DreamOn fills one middle: expected a layout with one hole, got {len(layout.holes)}")
    if cfg.expand_id is None or cfg.delete_id is None:
        raise ValueError(f"model {cfg.name} has no expand/delete tokens")
    device = model.tok_embeddings.weight.device
    mask_id, expand_id, delete_id = cfg.mask_id, cfg.expand_id, cfg.delete_id
    (start, end), = layout.holes
    prefix, middle, suffix = list(layout.tokens[:start]), list(layout.tokens[start:end]), list(layout.tokens[end:])
    budget = max_canvas if expand_budget is None else expand_budget
    for _ in range(steps):
        x = torch.tensor(prefix + middle + suffix, device=device)[None]
        mask_index = x[0] == mask_id
        if not bool(mask_index.any()):
            break
        logits = model(x, torch.arange(x.shape[1], device=device)[None]).double()
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)[0, mask_index]  # [M, V]
        logits[:, mask_id] = float("-inf")
        if len(middle) >= max_canvas or budget <= 0 or x.shape[1] >= cfg.max_position_embeddings:
            logits[:, expand_id] -= 1e9
        conf, x0 = dream_confidence(logits, confidence)
        pick = int(conf.argmax())
        row = int(mask_index.nonzero()[pick, 0]) - len(prefix)  # the committed canvas position
        was_masked = [t == mask_id for t in middle]
        middle[row] = int(x0[pick])
        if delete_id in middle:
            first = middle.index(delete_id)
            middle = [delete_id if k >= first and m else t for k, (t, m) in enumerate(zip(middle, was_masked))]
        middle = [t for t, m in zip(middle, was_masked) if not (m and t == delete_id)]
        grown = []
        for t in middle:
            if t == expand_id:
                grown += [mask_id, mask_id]
                budget -= 1
            else:
                grown.append(t)
        middle = grown
    return torch.tensor(prefix + middle + suffix)


def dream_confidence(logits: Tensor, confidence: str) -> tuple[Tensor, Tensor]:
    """Dream's `sample_tokens` at temperature 0 over masked rows' logits [M, V]: (confidence, argmax).
    maskgit_plus = top-1 probability, topk_margin = top-1 minus top-2, entropy = negative entropy (with
    Dream's 1e-10 inside the log)."""
    probs = torch.softmax(logits, dim=-1)
    top, x0 = probs.max(dim=-1)
    if confidence == "max_prob":
        return top, x0
    if confidence == "margin":
        sorted_probs = probs.sort(dim=-1, descending=True).values
        return sorted_probs[:, 0] - sorted_probs[:, 1], x0
    if confidence == "entropy":
        return (probs * torch.log(probs + 1e-10)).sum(-1), x0
    raise ValueError(f"confidence={confidence!r}: expected max_prob, margin or entropy")
