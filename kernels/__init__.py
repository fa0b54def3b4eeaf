"""Kernels: Triton on CUDA, plain torch elsewhere (`kernels.naive`, the references, with the CPU fast
paths of `kernels.cpu`).

`ops_for(device)` is the one dispatch point. Every kernel set exposes the same names: rms_norm, rope,
canvas_attention, lm_head_epilogue, TokenStats. Set KERNELS_FORCE_NAIVE=1 to take the references on every
device (debugging, A/B checks). This package imports nothing from the server or the engine.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import torch


@functools.cache
def triton_available() -> bool:
    """True when `import triton` works (Linux x86_64 wheels; never on macOS)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


class _NoTriton:
    """Stands in for `triton` and `triton.language` where triton is missing, so kernel modules import:
    `@triton.jit` leaves the function as is and `tl.constexpr` annotations evaluate to None."""

    constexpr = None

    @staticmethod
    def jit(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


def require_triton(op: str, x: torch.Tensor) -> None:
    """Launcher preamble: triton imports, x is 16-bit or fp32, and on CUDA unless the interpreter runs."""
    if not triton_available():
        raise RuntimeError(f"kernels: {op} needs triton, which is not installed; use kernels.ops_for(device)")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"kernels: {op} supports float16, bfloat16 and float32, got {x.dtype}; "
                        "dg_lsp.kernels.naive covers float64")
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"kernels: {op} got a {x.device.type} tensor; Triton runs on CUDA "
                         "(or on CPU under TRITON_INTERPRET=1); use kernels.ops_for(device)")


@functools.cache
def _triton_ops() -> SimpleNamespace:
    from dg_lsp.kernels.attention import canvas_attention
    from dg_lsp.kernels.epilogue import lm_head_epilogue
    from dg_lsp.kernels.naive import TokenStats
    from dg_lsp.kernels.rmsnorm import rms_norm
    from dg_lsp.kernels.rope import rope

    return SimpleNamespace(
        name="triton", rms_norm=rms_norm, rope=rope, canvas_attention=canvas_attention,
        lm_head_epilogue=lm_head_epilogue, TokenStats=TokenStats,
    )


@functools.cache
def _cpu_ops() -> SimpleNamespace:
    from dg_lsp.kernels import cpu, naive

    return SimpleNamespace(
        name="torch", rms_norm=naive.rms_norm, rope=naive.rope, canvas_attention=cpu.canvas_attention,
        lm_head_epilogue=cpu.lm_head_epilogue, TokenStats=naive.TokenStats,
    )


def ops_for(device: torch.device | str):
    """The kernel set for `device`: Triton launchers on CUDA (if triton imports); on CPU the reference
    with the fast epilogue of `kernels.cpu`; `kernels.naive` itself where forced or nothing better runs."""
    from dg_lsp.kernels import naive

    if os.environ.get("KERNELS_FORCE_NAIVE", "0") == "1":
        return naive
    kind = torch.device(device).type
    if kind == "cuda" and triton_available():
        return _triton_ops()
    return _cpu_ops() if kind == "cpu" else naive
