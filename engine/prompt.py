"""An InfillRequest becomes the token layout [prefix | canvas | (middle | canvas)* | suffix] of the family.

Position ids are sequence indices, so a canvas occupies the positions its text will take, and the
suffix sits after the canvas exactly as in the family's reference prompt (DreamOn, Open-dCoder, LLaDA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dg_lsp.engine.config import ModelConfig
from dg_lsp.engine.errors import RequestError
from dg_lsp.engine.request import InfillRequest
from dg_lsp.engine.tokenizer import Tokenizer


@dataclass(frozen=True)
class Layout:
    tokens: tuple[int, ...]  # the whole sequence; canvas positions hold the mask (or the text to rewrite)
    holes: tuple[tuple[int, int], ...]  # (start, end) of each canvas in `tokens`
    init: tuple[tuple[int, ...], ...]  # per hole, the tokens of the text being rewritten (empty: fill)

    @property
    def canvas_index(self) -> Tensor:
        """Sequence index of every canvas position, holes in order: [N]."""
        return torch.cat([torch.arange(s, e) for s, e in self.holes])

    @property
    def is_canvas(self) -> Tensor:
        flags = torch.zeros(len(self.tokens), dtype=torch.bool)
        for s, e in self.holes:
            flags[s:e] = True
        return flags

    @property
    def context_index(self) -> Tensor:
        return (~self.is_canvas).nonzero()[:, 0]

    def hole_of(self) -> list[int]:
        """For each canvas position, the hole it belongs to."""
        return [h for h, (s, e) in enumerate(self.holes) for _ in range(s, e)]


def build_layout(request: InfillRequest, tok: Tokenizer, cfg: ModelConfig) -> Layout:
    fam = cfg.family
    ids: list[int] = []
    if fam.bos_before_prefix and cfg.bos_id is not None:
        ids.append(cfg.bos_id)
    holes, inits = [], []
    for i, hole in enumerate(request.holes):
        ids += tok.encode(request.segments[i])
        init = tok.encode(hole.init)
        if len(init) > hole.canvas:
            raise RequestError(f"hole {i}: the text to rewrite is {len(init)} tokens, longer than its canvas of "
                               f"{hole.canvas}: expected a canvas of at least {len(init)}")
        start = len(ids)
        ids += init + [cfg.mask_id] * (hole.canvas - len(init))
        holes.append((start, len(ids)))
        inits.append(tuple(init))
    ids += tok.encode(request.segments[-1])
    if fam.eos_after_suffix and cfg.eos_id is not None:
        ids.append(cfg.eos_id)
    if len(ids) > cfg.max_position_embeddings:
        raise RequestError(f"prompt is {len(ids)} tokens (canvas included), longer than the model's context of "
                           f"{cfg.max_position_embeddings} (max_position_embeddings): shorten the prefix/suffix window")
    return Layout(tokens=tuple(ids), holes=tuple(holes), init=tuple(inits))


def with_canvases(layout: Layout, canvases: list[list[int]], cfg: ModelConfig) -> Layout:
    """The layout with each hole's canvas replaced by `canvases[h]`, of any length (expand/delete tokens):
    context tokens are kept, and the rows after a hole that grew or shrank take the positions that follow."""
    ids: list[int] = []
    holes, done = [], 0
    for (start, end), canvas in zip(layout.holes, canvases):
        ids += layout.tokens[done:start]
        holes.append((len(ids), len(ids) + len(canvas)))
        ids += canvas
        done = end
    ids += layout.tokens[done:]
    if len(ids) > cfg.max_position_embeddings:
        raise RequestError(f"the canvas grew to a prompt of {len(ids)} tokens, longer than the model's context of "
                           f"{cfg.max_position_embeddings}")
    return Layout(tokens=tuple(ids), holes=tuple(holes), init=layout.init)


def continue_after(layout: Layout, ids: list[int], canvas: int, cfg: ModelConfig) -> Layout | None:
    """A one-hole layout with `ids` (the committed canvas) moved into the prefix and a fresh canvas of
    `canvas` masks at the new end, before the same suffix; None when that no longer fits the context."""
    (start, end), = layout.holes
    head = layout.tokens[:start] + tuple(ids)
    tokens = head + (cfg.mask_id,) * canvas + layout.tokens[end:]
    if len(tokens) > cfg.max_position_embeddings:
        return None
    return Layout(tokens=tokens, holes=((len(head), len(head) + canvas),), init=((),))


def attention_mask(layout: Layout, cfg: ModelConfig) -> Tensor | None:
    """[T, T] bool (True = may attend) for a full forward over the layout; None = every row sees every row.

    Causal-context families: a context row sees earlier context rows only (never the canvas), a canvas
    row sees everything. That is what makes their prefix/suffix cache exact.
    """
    if cfg.family.context_attention == "bidirectional":
        return None
    return context_causal_mask(layout.is_canvas)


def context_causal_mask(is_canvas: Tensor) -> Tensor:
    """is_canvas: [..., T] bool -> [..., T, T]. Batched for training."""
    t = is_canvas.shape[-1]
    tril = torch.ones(t, t, dtype=torch.bool, device=is_canvas.device).tril()
    return is_canvas[..., :, None] | (~is_canvas[..., None, :] & tril)


def predictor_rows(layout: Layout, cfg: ModelConfig) -> Tensor:
    """The row whose logits predict each canvas position: itself, or the row before for shifted families.

    Row 0 predicts itself under the shift, as Dream's cat([logits[:, :1], logits[:, :-1]]) does.
    """
    idx = layout.canvas_index
    return (idx - 1).clamp_min(0) if cfg.family.shift_logits else idx
