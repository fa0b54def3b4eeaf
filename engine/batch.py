"""Several users' infill requests at once: the serving path's batch entry point.

`complete_batch` fills every request and returns one outcome per request, in order: its `InfillResult`,
or the exception that request raised (one bad request never costs the others their answers). `cancels`
gives each request its own cancel check (a client that went away), polled between denoising steps.

`complete_sequential` is the reference: the same signature, one `Engine.complete` after another.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from dg_lsp.engine.request import InfillRequest, InfillResult, SamplerConfig

CancelCheck = Callable[[], bool]
Outcome = InfillResult | Exception


def complete_sequential(eng, requests: Sequence[InfillRequest], sampler: SamplerConfig,
                        cancels: Sequence[CancelCheck | None] | None = None,
                        generators: Sequence[torch.Generator | None] | None = None) -> list[Outcome]:
    """One request after another through `eng.complete`: what any batched path must match."""
    cancels = list(cancels) if cancels is not None else [None] * len(requests)
    generators = list(generators) if generators is not None else [None] * len(requests)
    if not len(cancels) == len(generators) == len(requests):
        raise ValueError(f"{len(requests)} requests, {len(cancels)} cancel checks, {len(generators)} generators: "
                         "expected one of each per request")
    out: list[Outcome] = []
    for request, cancel, generator in zip(requests, cancels, generators):
        try:
            out.append(eng.complete(request, sampler, generator=generator, cancel=cancel))
        except Exception as exc:  # noqa: BLE001 - handed back in its request's place
            out.append(exc)
    return out


complete_batch = complete_sequential  # until a batched forward lands beside it
