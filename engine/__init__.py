"""dg-lsp's diffusion infill engine.

`import engine` is light (no torch): the request types and errors are plain Python, and `load` imports
the torch modules only when called, so the language server starts fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from dg_lsp.engine.errors import (CheckpointError, ConfigError, EngineError, InfillCancelled, RequestError,
                           TokenizerError)
from dg_lsp.engine.request import Hole, InfillRequest, InfillResult, SamplerConfig

if TYPE_CHECKING:
    from dg_lsp.engine.engine import Engine

DEFAULT_MODEL = "dg-coder-tiny"

__all__ = [
    "CheckpointError", "ConfigError", "EngineError", "Hole", "InfillCancelled", "InfillRequest", "InfillResult",
    "RequestError", "SamplerConfig", "TokenizerError", "default_model_dir", "load",
]


def default_model_dir() -> Path:
    """The embedded model shipped in the repository (override with DG_LSP_MODEL)."""
    override = os.environ.get("DG_LSP_MODEL")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "models" / DEFAULT_MODEL


def load(model: str | Path | None = None, device: str | None = "auto", dtype=None, progress=None,
         family: str | None = None, refresh_context_every: int | None = None,
         quantize: str | None = None, context_reuse: str = "auto") -> "Engine":
    """Load a checkpoint; see dg_lsp.engine.engine.load."""
    from dg_lsp.engine.engine import load as _load

    return _load(model, device=device, dtype=dtype, progress=progress, family=family,
                 refresh_context_every=refresh_context_every, quantize=quantize, context_reuse=context_reuse)
