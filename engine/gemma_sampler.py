"""DiffusionGemma's sampler: entropy-bound acceptance on a uniform-noise canvas, generated block by block.

Mirrors transformers' `DiffusionGemmaGenerationMixin.generate` (generation_diffusion_gemma.py): the same
random draws, in the same order and shapes, from the `torch.Generator` passed in, so a fixed seed
reproduces transformers' `generate` token for token (torch.manual_seed(s) and Generator().manual_seed(s)
give the same stream on CPU). Per canvas:
  randint(0, V, [B, C])                        the initial canvas
  per step s = N..1: multinomial(probs [B*C, V], 1), then randint(0, V, [B, C]) to renoise
(the renoise draw happens on every step, the last and the stopping one included).

Infill (not in the reference): pinned positions hold fixed tokens. Their processed logits are made one-hot
(entropy 0: always accepted, sampled and argmaxed to the pinned token, fed back one-hot as
self-conditioning); they are left out of the stop test. `generate(suffix_ids=...)` pins the suffix to the
last canvas positions of a single canvas, so the middle has C - len(suffix) positions and ends with
EOS + pad when shorter. Assumes the model sees the suffix through bidirectional canvas attention as it
would see its own converged tokens; quality on a real checkpoint is unknown. On the first step the
self-conditioning is zero everywhere (as the reference), so the one-hot feedback starts at step 2.
The alternative layout, the suffix encoded into the cache as context (e.g. a chat prompt holding prefix and
suffix that asks for the middle), needs no sampler support: build that prompt and call `generate` without
`suffix_ids`; it keeps the model in distribution but relies on instruction following.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from torch import Tensor

from dg_lsp.engine.errors import InfillCancelled, RequestError
from dg_lsp.engine.request import MAX_CANVAS


class GemmaLike(Protocol):
    vocab_size: int

    def encode(self, tokens: Tensor, cache: Any = None) -> Any:
        """tokens: [B, T], causal, appended at the cache's length; returns the cache."""

    def decode(self, canvas: Tensor, cache: Any, self_cond: Tensor | None = None) -> Tensor:
        """canvas: [B, C] -> logits [B, C, V] fp32, softcapped. self_cond: the previous step's processed
        logits (fp32; the model casts them to its embedding dtype), None on a canvas's first step."""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class EntropyBoundConfig:
    """Defaults are the reference's (`_get_default_generation_params`, canvas_length from the model config)."""

    steps: int = 48  # max denoising steps per canvas (max_denoising_steps)
    entropy_bound: float = 0.1  # accept lowest-entropy positions while their summed entropy stays under this
    t_min: float = 0.4  # temperature at the last step
    t_max: float = 0.8  # temperature at the first step
    stability_threshold: int = 1  # steps the argmax canvas must repeat before a stop (0: no stability test)
    confidence_threshold: float = 0.005  # ... and its mean entropy must be below this
    canvas_length: int = 256

    def __post_init__(self) -> None:
        t_min_ok = _is_number(self.t_min) and 0.0 <= self.t_min < 10.0
        checks = [
            ("steps", self.steps, _is_int(self.steps) and 1 <= self.steps <= 1024, "an integer 1..1024"),
            ("entropy_bound", self.entropy_bound, _is_number(self.entropy_bound) and self.entropy_bound > 0,
             "a number > 0"),
            ("t_min", self.t_min, t_min_ok, "a number in [0, 10)"),
            ("t_max", self.t_max, _is_number(self.t_max) and (not t_min_ok or self.t_min < self.t_max <= 10.0),
             f"a number in (t_min={self.t_min!r}, 10]"),
            ("stability_threshold", self.stability_threshold,
             _is_int(self.stability_threshold) and 0 <= self.stability_threshold <= 1024, "an integer 0..1024"),
            ("confidence_threshold", self.confidence_threshold,
             _is_number(self.confidence_threshold) and self.confidence_threshold > 0, "a number > 0"),
            ("canvas_length", self.canvas_length, _is_int(self.canvas_length) and 1 <= self.canvas_length <= MAX_CANVAS,
             f"an integer 1..{MAX_CANVAS}"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise RequestError(f"entropy-bound sampler setting {name}={value!r} is invalid: expected {expected}")


@dataclass(frozen=True)
class CanvasStep:
    step: int  # 0-based index of the decoder forward on this canvas
    remaining: int  # the reference's cur_step: N on the first step, 1 on the last
    argmax: Tensor  # [B, C] the argmax canvas (what gets committed)
    accepted: Tensor  # [B, C] bool, positions that kept their sample (the rest were renoised)
    mean_entropy: Tensor  # [B] over the free (not pinned) positions
    finished: Tensor  # [B] bool, rows whose stop test has fired
    done: bool  # every row finished, or the last step


@dataclass(frozen=True)
class GenerateState:
    block: int  # 0-based canvas index
    step: CanvasStep
    tokens: Tensor  # [B, n] committed tokens so far (prompt excluded; after an EOS, pad when pad_id is set)
    done: bool


# ---- pure functions of one step ------------------------------------------------------------------


def temperature(remaining: int, cfg: EntropyBoundConfig, device: torch.device | None = None) -> Tensor:
    """t_min + (t_max - t_min) * s / N as a float32 0-dim tensor, computed as the reference does (an int32
    step tensor), so dividing the logits by it rounds the same."""
    s = torch.tensor(remaining, dtype=torch.int32, device=device)
    return cfg.t_min + (cfg.t_max - cfg.t_min) * (s / cfg.steps)


def token_entropy(logits: Tensor) -> Tensor:
    """[..., V] -> [...]: entropy of softmax(logits), in the order of operations of
    torch.distributions.Categorical (normalise by logsumexp, clamp, -sum p log p): the acceptance rule
    compares cumulative sums to a bound, so the last bit matters for parity."""
    logp = logits - logits.logsumexp(dim=-1, keepdim=True)
    p = logp.softmax(dim=-1)
    return -(logp.clamp(min=torch.finfo(logp.dtype).min) * p).sum(-1)


def accept_mask(entropy: Tensor, bound: float) -> Tensor:
    """[B, C] -> bool [B, C]: in ascending entropy, accept position k while the sum of the entropies below
    it stays <= bound (sum of the first k minus the largest of them, an upper bound on their mutual
    information); the lowest is always accepted. Recomputed every step: nothing is frozen."""
    sorted_h, order = torch.sort(entropy, dim=-1, descending=False)
    keep = sorted_h.cumsum(dim=-1) - sorted_h <= bound
    return torch.zeros_like(keep).scatter(-1, order, keep)


def stop_rule(argmax: Tensor, history: Tensor, entropy: Tensor, free: Tensor | None,
              cfg: EntropyBoundConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Stable and confident. history: [S, B, C] the last S argmax canvases (-1 before any step).
    Returns (stop [B], new history, mean entropy [B]); pinned positions (~free) count in neither test."""
    if cfg.stability_threshold == 0:
        stable = torch.ones(argmax.shape[0], dtype=torch.bool, device=argmax.device)
    else:
        same = history == argmax[None]
        if free is not None:
            same = same | ~free[None]
        stable = same.all(dim=-1).all(dim=0)
        history = torch.cat([history[1:], argmax[None]])
    if free is None:
        mean = entropy.mean(dim=-1)
    else:
        mean = (entropy * free).sum(-1) / free.sum(-1)
    return stable & (mean < cfg.confidence_threshold), history, mean


def pin_logits(logits: Tensor, pinned: Tensor) -> Tensor:
    """logits [B, C, V]; pinned [B, C] token id, -1 = free. Pinned rows become one-hot on their token
    (0 there, the dtype's minimum elsewhere: finite, so no inf * 0 downstream)."""
    is_pinned = pinned >= 0
    one_hot = torch.full_like(logits, torch.finfo(logits.dtype).min)
    one_hot.scatter_(-1, pinned.clamp(min=0)[..., None], 0.0)
    return torch.where(is_pinned[..., None], one_hot, logits)


def finalize_block(block: Tensor, finished: Tensor, eos: Tensor, pad_id: int | None) -> tuple[Tensor, Tensor]:
    """The reference's end-of-canvas rule. block: [B, C'] argmax tokens; finished: [B] rows that ended in an
    earlier block. With a pad id, rows finished before become all pad and tokens after a row's first EOS
    become pad (the EOS stays). Returns (block, finished including rows with an EOS in this block)."""
    ended = finished | torch.isin(block, eos).any(dim=-1)
    if pad_id is not None and bool(ended.any()):
        block = block.masked_fill(finished[:, None], pad_id)
        is_eos = torch.isin(block, eos)
        seen = is_eos.cumsum(dim=-1)
        block = block.masked_fill((seen > 0) & ~((seen == 1) & is_eos), pad_id)
    return block, ended


def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise InfillCancelled("generation cancelled between denoising steps")


# ---- loops ---------------------------------------------------------------------------------------


@torch.inference_mode()
def denoise_canvas(model: GemmaLike, cache: Any, cfg: EntropyBoundConfig, generator: torch.Generator, *,
                   batch_size: int = 1, pinned: Tensor | None = None,
                   cancel: Callable[[], bool] | None = None) -> Iterator[CanvasStep]:
    """Denoise one canvas after what `cache` holds; yields after every decoder forward, the last with
    done=True. Draws on generator.device. pinned: [B, C] token id per position, -1 = free."""
    dev, V, B, C = generator.device, model.vocab_size, batch_size, cfg.canvas_length
    free = None if pinned is None else pinned < 0
    canvas = torch.randint(0, V, (B, C), generator=generator, device=dev)
    if pinned is not None:
        canvas = torch.where(free, canvas, pinned)
    argmax, sc = canvas, None
    history = torch.full((cfg.stability_threshold, B, C), -1, dtype=torch.long, device=dev)
    finished = torch.zeros(B, dtype=torch.bool, device=dev)
    for i, s in enumerate(range(cfg.steps, 0, -1)):
        _check(cancel)
        processed = model.decode(canvas, cache, sc) / temperature(s, cfg, dev)  # [B, C, V]
        if pinned is not None:
            processed = pin_logits(processed, pinned)
        probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
        sample = torch.multinomial(probs.view(-1, V), 1, generator=generator).view(B, C)
        new_argmax = processed.argmax(dim=-1)
        entropy = token_entropy(processed)
        accepted = accept_mask(entropy, cfg.entropy_bound)
        noise = torch.randint(0, V, (B, C), generator=generator, device=dev)
        new_canvas = torch.where(accepted, sample, noise)
        if bool(finished.any()):  # batch > 1: rows that stopped keep their canvas and logits
            new_argmax = torch.where(finished[:, None], argmax, new_argmax)
            new_canvas = torch.where(finished[:, None], canvas, new_canvas)
            processed = torch.where(finished[:, None, None], sc, processed)
        stop, history, mean = stop_rule(new_argmax, history, entropy, free, cfg)
        finished = finished | stop
        canvas, argmax, sc = new_canvas, new_argmax, processed
        done = bool(finished.all()) or s == 1
        yield CanvasStep(step=i, remaining=s, argmax=argmax, accepted=accepted, mean_entropy=mean,
                         finished=finished, done=done)
        if done:
            return


@torch.inference_mode()
def generate(model: GemmaLike, prompt_ids: Tensor, cfg: EntropyBoundConfig, generator: torch.Generator, *,
             max_new_tokens: int, eos_id: int | Sequence[int], pad_id: int | None = None,
             suffix_ids: Tensor | None = None, cancel: Callable[[], bool] | None = None,
             stop: Callable[[list[int]], bool] | None = None) -> Iterator[GenerateState]:
    """Block by block: encode the prompt, denoise a canvas, commit its argmax, encode it, next canvas.

    Runs ceil(max_new_tokens / C) canvases at most (output not cut to max_new_tokens, as the reference),
    fewer when every row has an EOS or `stop(tokens of row 0)` says so after a committed block. Yields
    after every decoder forward; the last state has done=True. suffix_ids ([B, S], 0 < S < C): one canvas
    whose last S positions are pinned to the suffix; tokens are the C - S middle positions."""
    if prompt_ids.ndim != 2 or 0 in prompt_ids.shape:
        raise RequestError(f"prompt_ids has shape {tuple(prompt_ids.shape)}: expected [B, T] with B, T >= 1")
    B, C = prompt_ids.shape[0], cfg.canvas_length
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise RequestError(f"max_new_tokens={max_new_tokens!r} is invalid: expected an integer >= 1")
    dev = prompt_ids.device
    eos = torch.tensor([eos_id] if _is_int(eos_id) else list(eos_id), dtype=torch.long, device=dev)
    rounds, pinned, width = math.ceil(max_new_tokens / C), None, C
    if suffix_ids is not None:
        S = suffix_ids.shape[-1]
        if suffix_ids.shape != (B, S) or not 0 < S < C:
            raise RequestError(f"suffix_ids has shape {tuple(suffix_ids.shape)}: expected [{B}, S] with "
                               f"0 < S < canvas_length={C}")
        pinned = torch.full((B, C), -1, dtype=torch.long, device=dev)
        pinned[:, C - S:] = suffix_ids
        rounds, width = 1, C - S
    tokens = prompt_ids.new_empty((B, 0))
    finished = torch.zeros(B, dtype=torch.bool, device=dev)
    pending, cache = prompt_ids, None
    for block in range(rounds):
        _check(cancel)
        cache = model.encode(pending, cache)
        for step in denoise_canvas(model, cache, cfg, generator, batch_size=B, pinned=pinned, cancel=cancel):
            if not step.done:
                yield GenerateState(block=block, step=step, tokens=tokens, done=False)
                continue
            pending, finished = finalize_block(step.argmax[:, :width], finished, eos, pad_id)
            tokens = torch.cat([tokens, pending], dim=-1)
            done = (block == rounds - 1 or bool(finished.all())
                    or (stop is not None and stop(tokens[0].tolist())))
            yield GenerateState(block=block, step=step, tokens=tokens, done=done)
            if done:
                return
