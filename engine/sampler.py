"""Pure tensor functions of the denoising loop: propose tokens, score them, decide what to commit.

Nothing here runs the model or keeps state; the engine calls these once per step on the canvas rows.
Randomness comes only from the `torch.Generator` passed in; temperature 0 is the argmax path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dg_lsp.engine.request import SamplerConfig


@dataclass(frozen=True)
class Proposal:
    tokens: Tensor  # [N] int64, the token each canvas position would take now
    prob: Tensor  # [N] fp32, its probability under the (temperature, top-p) distribution
    confidence: Tensor  # [N] fp32, larger = commit sooner (meaning depends on SamplerConfig.confidence)


def propose(logits: Tensor, sampler: SamplerConfig, generator: torch.Generator | None = None) -> Proposal:
    """logits: [N, V] fp32 for the canvas positions.

    Mirrors Dream's `sample_tokens`: divide by the temperature, keep the top-p nucleus, softmax; sample
    when temperature > 0 (else argmax). Confidence is the chosen token's probability ("max_prob", Dream's
    maskgit_plus, LLaDA's low_confidence), top-1 minus top-2 ("margin"), negative entropy ("entropy"),
    or uniform noise ("random", LLaDA's random remasking).
    """
    if sampler.temperature > 0:
        logits = logits / sampler.temperature
    if sampler.top_p < 1.0:
        logits = top_p_filter(logits, sampler.top_p)
    probs = logits.softmax(dim=-1)
    if sampler.temperature > 0:
        tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
    else:
        tokens = probs.argmax(dim=-1)
    prob = probs.gather(-1, tokens[:, None])[:, 0]
    if sampler.confidence == "max_prob":
        confidence = prob
    elif sampler.confidence == "margin":
        top2 = probs.topk(2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif sampler.confidence == "entropy":
        confidence = (probs * torch.log(probs + 1e-10)).sum(-1)  # negative entropy, Dream's epsilon
    else:
        confidence = torch.rand(prob.shape, generator=generator, device=prob.device)
    return Proposal(tokens=tokens, prob=prob, confidence=confidence)


def proposal_from_stats(stats, sampler: SamplerConfig, generator: torch.Generator | None = None) -> Proposal:
    """The same proposal from the fused LM-head epilogue's statistics (kernels.naive.TokenStats).

    The epilogue samples by Gumbel-max where `propose` uses multinomial: equal in distribution, and
    identical at temperature 0. Entropy confidence is the exact negative entropy (propose adds Dream's
    1e-10 inside the log, which moves nothing but ties).
    """
    prob = stats.sample_prob
    if sampler.confidence == "max_prob":
        confidence = prob
    elif sampler.confidence == "margin":
        confidence = stats.margin
    elif sampler.confidence == "entropy":
        confidence = -stats.entropy
    else:
        confidence = torch.rand(prob.shape, generator=generator, device=prob.device)
    return Proposal(tokens=stats.sample, prob=prob, confidence=confidence)


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (always at least the top one)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative > top_p
    drop[..., 1:] = drop[..., :-1].clone()  # shift right: the token that crosses top_p stays
    drop[..., 0] = False
    return logits.masked_fill(drop.scatter(-1, order, drop), torch.finfo(logits.dtype).min)


def commit_count(masked: int, step: int, steps: int, schedule: str, eps: float = 1e-3) -> int:
    """How many masked positions to commit at `step` (0-based) of `steps`.

    "even": ceil(masked / steps_left), which reproduces LLaDA's get_num_transfer_tokens split
    (base = n // steps, the remainder going to the first steps). "dream": Dream's linear timesteps from 1
    to eps, committing int(masked * (1 - s / t)) and everything at the last step.
    """
    if masked <= 0:
        return 0
    left = steps - step
    if left <= 1:
        return masked
    if schedule == "dream":  # float32 timesteps, as Dream computes them: int() rounds down on their values
        timesteps = torch.linspace(1, eps, steps + 1)
        return int(torch.tensor(float(masked)) * (1 - timesteps[step + 1] / timesteps[step]))
    return -(-masked // left)


def held_back_ends(proposed: Tensor, masked: Tensor, hole_start: Tensor, end_ids: Tensor) -> Tensor:
    """Masked positions proposing pad/EOS while the position before them (same hole) is still masked.

    A canvas holds the middle then pad. Ranked by confidence alone, the far pads are the surest tokens on
    the canvas, so they commit first, and each committed pad makes the next one to its left surer still:
    the pad run creeps left and squeezes the middle to a token or two. Holding an end token back until its
    left neighbour is decided lets the content fix the length instead.
    """
    left_open = masked.roll(1) & ~hole_start
    return masked & torch.isin(proposed, end_ids) & left_open


def _ranked(score: Tensor, eligible: Tensor, held: Tensor) -> Tensor:
    """Indices: eligible positions by score, best first, then held-back ones left to right."""
    free = eligible.nonzero()[:, 0]
    free = free[score[free].argsort(descending=True, stable=True)]
    return torch.cat([free, held.nonzero()[:, 0]])


def update_canvas(canvas: Tensor, masked: Tensor, proposal: Proposal, current_prob: Tensor | None, step: int,
                  sampler: SamplerConfig, mask_id: int, held: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One step's decision. Returns the new (canvas [N], masked [N]); the inputs are not modified.

    - "schedule": commit the `commit_count` most confident masked positions.
    - "threshold": commit every masked position whose probability reaches the threshold, at least the most
      confident one (so the loop always makes progress), everything at the last step.
    - "renoise" (self-correction): the committed count still follows the schedule, but the positions that
      hold it are re-chosen every step by probability: a committed token the model now finds less likely
      than a fresh proposal elsewhere is re-masked. Scores are probabilities: `current_prob` for committed
      positions (their token's probability under this step's logits), the proposal's for masked ones.
    `held` (bool [N], see held_back_ends) positions come last, left to right, whatever their confidence.
    """
    n_masked = int(masked.sum())
    if n_masked == 0:
        return canvas, masked
    held = torch.zeros_like(masked) if held is None else held & masked
    count = commit_count(n_masked, step, sampler.steps, sampler.schedule)
    if sampler.commit == "renoise" and count < n_masked:
        score = torch.where(masked, proposal.prob, current_prob)
        keep = torch.zeros_like(masked)
        keep[_ranked(score, ~held, held)[: int((~masked).sum()) + count]] = True
        commit = keep & masked
        canvas = torch.where(commit, proposal.tokens, canvas).masked_fill(~keep, mask_id)
        return canvas, ~keep
    if sampler.commit == "threshold" and count < n_masked:
        commit = masked & ~held & (proposal.prob >= sampler.threshold)
        count = 0 if bool(commit.any()) else 1
    else:
        commit = torch.zeros_like(masked)
    if count > 0:
        commit[_ranked(proposal.confidence, masked & ~held, held)[:count]] = True
    return torch.where(commit, proposal.tokens, canvas), masked & ~commit


def resize_hole(tokens: list[int], was_masked: list[bool], expand_id: int, delete_id: int, mask_id: int,
                room: int) -> tuple[list[int], int, int]:
    """DreamOn's length edits on one hole's canvas after a step's commits (DreamOn eval/generator.py
    batch_generate_with_expand_as_token; its HF _sample in the same order). Returns (tokens, expanded, deleted).

    1. The first delete token ends the middle: every position after it that was masked before the step
       becomes delete too (pad_eos_to_right / pad_delete_to_right).
    2. Delete tokens at positions masked before the step are removed: the canvas shrinks.
    3. Each expand token becomes two masks: the canvas grows by one. At most `room` of them (what is left
       of the hole's cap and expand budget), right to left as DreamOn processes them; an expand token past
       that becomes one mask. (With one commit per step, as DreamOn runs, the engine blocks the expand logit
       once room is 0, so this never binds.)
    """
    first = next((k for k, t in enumerate(tokens) if t == delete_id), len(tokens))
    tokens = [delete_id if k > first and was_masked[k] else t for k, t in enumerate(tokens)]
    kept = [t for t, m in zip(tokens, was_masked) if not (m and t == delete_id)]
    deleted = len(tokens) - len(kept)
    out: list[int] = []
    expanded = 0
    for t in reversed(kept):
        if t == expand_id:
            grow = expanded < room
            expanded += grow
            out += [mask_id] * (1 + grow)
        else:
            out.append(t)
    return out[::-1], expanded, deleted
