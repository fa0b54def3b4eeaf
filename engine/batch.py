"""Several users' infill requests at once: the serving path's batch entry point.

`complete_batch` fills every request and returns one outcome per request, in order: its `InfillResult`,
or the exception that request raised (one bad request never costs the others their answers: a request
the layout rejects gets its RequestError, a cancelled one its InfillCancelled, and the rest go on).
`cancels` gives each request its own cancel check (a client that went away), polled between denoising
steps; `generators` its own random stream (give each request its own: a shared one is drawn in another
order than one request after another).

Every request is served as `Engine.complete` serves it on an engine whose context cache is empty: the
requests of a batch come from different users, so neither path reads or writes `eng.context` (that cache
belongs to one editor's keystroke stream; the fallback swaps in a scratch cache for each request).

`complete_batch` runs the common case batched (engine.batch_forward): fill holes on a fixed-length
checkpoint with the fused epilogue (top_p 1, commit "schedule" or "threshold", any confidence, any
temperature, one block), every denoising step one padded forward over all those requests' running canvas
rows. The rest goes through `Engine.complete`, one request after another, after the batch: rewrite holes
(init text), commit "renoise", top_p < 1, semi-AR blocks (block_length shorter than the canvas),
variable-length checkpoints (DreamOn), an engine with `refresh_context_every`, and engines of another
kind (DiffusionGemma). Those are rare in completion traffic or restructure the loop per request. A
canvas-length probe (sampler.canvas_length "probe") runs per request while the layouts are built; where
the engine reuses context approximately (bidirectional families by default) the loop after it would
reuse the probe's context approximately, so those requests take the fallback too.

`complete_sequential` is the reference: the same signature, one isolated `Engine.complete` after another.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch

from dg_lsp.engine.batch_forward import Member, PaddedCanvas, batchable, lm_head
from dg_lsp.engine.context_cache import ContextCache
from dg_lsp.engine.engine import Engine
from dg_lsp.engine.prompt import build_layout
from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig

CancelCheck = Callable[[], bool]
Outcome = InfillResult | Exception


def complete_sequential(eng, requests: Sequence[InfillRequest], sampler: SamplerConfig,
                        cancels: Sequence[CancelCheck | None] | None = None,
                        generators: Sequence[torch.Generator | None] | None = None) -> list[Outcome]:
    """One request after another through `eng.complete`, each on an empty context cache: what the
    batched path must match."""
    cancels, generators = _per_request(requests, cancels, generators)
    return [_isolated(eng, r, sampler, g, c) for r, c, g in zip(requests, cancels, generators)]


def complete_batch(eng, requests: Sequence[InfillRequest], sampler: SamplerConfig,
                   cancels: Sequence[CancelCheck | None] | None = None,
                   generators: Sequence[torch.Generator | None] | None = None) -> list[Outcome]:
    """`complete_sequential`'s outcomes, with the batchable requests' denoising steps run together."""
    cancels, generators = _per_request(requests, cancels, generators)
    if not isinstance(eng, Engine):
        return complete_sequential(eng, requests, sampler, cancels, generators)
    out: list[Outcome | None] = [None] * len(requests)
    members: list[Member] = []
    where: list[int] = []  # each member's request index
    for i, request in enumerate(requests):
        try:
            layout = build_layout(request, eng.tokenizer, eng.cfg)
            if batchable(eng, layout, sampler) and sampler.canvas_length != "fixed":
                with _scratch_context(eng):  # the probe runs a forward: not on the engine's cache
                    layout = eng.layout_for(request, sampler, cancels[i])  # only shortens fill holes
        except Exception as exc:  # noqa: BLE001 - handed back in its request's place
            out[i] = exc
            continue
        if batchable(eng, layout, sampler):
            members.append(Member(eng, layout, sampler, generators[i], cancels[i]))
            where.append(i)
    for i, outcome in zip(where, denoise(eng, members)):
        out[i] = outcome
    for i, request in enumerate(requests):
        if out[i] is None:
            out[i] = _isolated(eng, request, sampler, generators[i], cancels[i])
    return out


@torch.inference_mode()
def denoise(eng: Engine, members: list[Member], compact: bool = True) -> list[Outcome]:
    """Run the members' loops in lockstep; one outcome per member, in order. `compact`: a member that
    finished or was cancelled leaves the padded batch (False: its rows stay as padding; bench only)."""
    outcomes: dict[int, Outcome] = {}
    going = []
    for m in members:  # causal context: each request's own encode, up front (nothing for bidirectional)
        try:
            m.encode()
            going.append(m)
        except Exception as exc:  # noqa: BLE001 - that request's failure only
            outcomes[id(m)] = exc
    padded: PaddedCanvas | None = None
    try:
        while going:
            stepping = []
            for m in going:  # polled before every step the request takes, as Engine polls it
                try:
                    m.check_cancel()
                    stepping.append(m)
                except Exception as exc:  # noqa: BLE001 - InfillCancelled, or whatever the check raised
                    outcomes[id(m)] = exc
            if not stepping:
                break
            t0 = time.perf_counter()
            if padded is None and stepping[0].bidirectional:  # first step: each request's full forward
                hidden = [m.full_forward() for m in stepping]
                padded = PaddedCanvas(stepping)
            else:
                if padded is None:
                    padded = PaddedCanvas(stepping)
                elif compact and len(stepping) < len(padded.members):
                    padded.keep(stepping)
                rows = padded.forward(stepping)
                hidden = [m.after_forward(h) for m, h in zip(stepping, rows)]
            done = [m.commit(part) for m, part in zip(stepping, lm_head(eng, hidden, stepping))]
            if eng.device.type == "cuda":
                torch.cuda.synchronize(eng.device)
            step_ms = (time.perf_counter() - t0) * 1e3
            going = []
            for m, finished in zip(stepping, done):
                m.denoise_ms += step_ms  # the whole batched step: what this request waited for it
                if finished:
                    outcomes[id(m)] = m.result()
                else:
                    going.append(m)
    except Exception as exc:  # noqa: BLE001 - a shared forward failed: every request still open gets it
        for m in members:
            outcomes.setdefault(id(m), exc)
    assert len(outcomes) == len(members), "a request left the batch without an outcome"
    return [outcomes[id(m)] for m in members]


def _isolated(eng, request: InfillRequest, sampler: SamplerConfig, generator: torch.Generator | None,
              cancel: CancelCheck | None) -> Outcome:
    """`eng.complete` on a scratch context cache (when the engine has one)."""
    try:
        with _scratch_context(eng):
            return eng.complete(request, sampler, generator=generator, cancel=cancel)
    except Exception as exc:  # noqa: BLE001 - handed back in its request's place
        return exc


@contextmanager
def _scratch_context(eng) -> Iterator[None]:
    """An empty context cache in the engine's place for the block's duration; its own is put back."""
    kept = getattr(eng, "context", None)
    if not isinstance(kept, ContextCache):  # an engine of another kind (DiffusionGemma)
        yield
        return
    eng.context = ContextCache(max_reuse=kept.max_reuse, min_share=kept.min_share)
    try:
        yield
    finally:
        eng.context = kept


def _per_request(requests, cancels, generators) -> tuple[list, list]:
    cancels = list(cancels) if cancels is not None else [None] * len(requests)
    generators = list(generators) if generators is not None else [None] * len(requests)
    if not len(cancels) == len(generators) == len(requests):
        raise ValueError(f"{len(requests)} requests, {len(cancels)} cancel checks, {len(generators)} generators: "
                         "expected one of each per request")
    return cancels, generators
