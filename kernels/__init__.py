"""Kernels: Triton on CUDA, plain torch elsewhere (`kernels.naive`, the references, with the CPU fast
paths of `kernels.cpu`).

`ops_for(device)` is the one dispatch point. Every kernel set exposes the same names: rms_norm, rope,
canvas_attention, lm_head_epilogue, TokenStats. Set KERNELS_FORCE_NAIVE=1 to take the references on every
device (debugging, A/B checks). This package imports nothing from the server or the engine.

Where a Triton kernel does not cover a call (canvas attention at a head dim without tiles, say), the
Triton set takes the reference for that call and notes it: `supports(op, ...)` asks beforehand (model code
picking an op per layer), `fallbacks()` lists what fell back so far (`dg-lsp doctor` prints it).
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


OPS = ("rms_norm", "rope", "canvas_attention", "lm_head_epilogue")
_fallbacks: set[str] = set()  # "canvas_attention head_dim 96: torch reference", one per kind of call


def _triton_limit(op: str, head_dim: int | None, dtype: torch.dtype | None) -> str | None:
    """Why the Triton kernel of `op` does not take a call with this head dim / dtype (None: any); None when
    it does."""
    if op == "canvas_attention":
        from dg_lsp.kernels.attention import unsupported

        return unsupported(head_dim, dtype)
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return f"dtype {str(dtype).removeprefix('torch.')}"
    if op == "rope" and head_dim is not None and head_dim % 2:
        return f"head_dim {head_dim}"
    return None


# kernels.cpu's fast paths by the dtypes they take (every other op and dtype is the reference there)
_CPU_FAST = {"canvas_attention": (torch.float16, torch.bfloat16, torch.float32),
             "lm_head_epilogue": (torch.float16, torch.bfloat16)}


def supports(op: str, *, head_dim: int | None = None, dtype: torch.dtype | None = None,
             device: torch.device | str = "cuda") -> bool:
    """True when `ops_for(device).<op>` runs a fast path, not the torch reference, for a call with this head
    dim and dtype (None: any). On CUDA that is the Triton kernel's coverage, e.g.
    supports("canvas_attention", head_dim=512, dtype=torch.bfloat16); on CPU the fast paths of kernels.cpu.
    Asking records nothing in fallbacks()."""
    if op not in OPS:
        raise ValueError(f"kernels: unknown op {op!r}; expected one of {OPS}")
    kind = _set_kind(device)
    if kind == "triton":
        return _triton_limit(op, head_dim, dtype) is None
    if kind == "cpu":
        return op in _CPU_FAST and (dtype is None or dtype in _CPU_FAST[op])
    return False


def fallbacks() -> list[str]:
    """What took the torch reference where a fast path was expected, one line per kind of call, sorted:
    e.g. "canvas_attention head_dim 96: torch reference". Kept for the life of the process."""
    return sorted(_fallbacks)


def _attention_or_reference(fast, ref):
    """`fast` (the Triton launcher) for the calls it covers, else `ref`, noted in fallbacks()."""

    @functools.wraps(fast)  # same name, module and signature as the launcher
    def canvas_attention(q, k_ctx, v_ctx, k_canvas, v_canvas, scale, ctx_len=None):
        why = _triton_limit("canvas_attention", q.shape[-1], q.dtype)
        if why is None:
            return fast(q, k_ctx, v_ctx, k_canvas, v_canvas, scale, ctx_len)
        _fallbacks.add(f"canvas_attention {why}: torch reference")
        return ref(q, k_ctx, v_ctx, k_canvas, v_canvas, scale, ctx_len)

    return canvas_attention


@functools.cache
def _triton_ops() -> SimpleNamespace:
    from dg_lsp.kernels import naive
    from dg_lsp.kernels.attention import canvas_attention
    from dg_lsp.kernels.epilogue import lm_head_epilogue
    from dg_lsp.kernels.rmsnorm import rms_norm
    from dg_lsp.kernels.rope import rope

    return SimpleNamespace(
        name="triton", rms_norm=rms_norm, rope=rope,
        canvas_attention=_attention_or_reference(canvas_attention, naive.canvas_attention),
        lm_head_epilogue=lm_head_epilogue, TokenStats=naive.TokenStats,
    )


@functools.cache
def _cpu_ops() -> SimpleNamespace:
    from dg_lsp.kernels import cpu, naive

    return SimpleNamespace(
        name="torch", rms_norm=naive.rms_norm, rope=naive.rope, canvas_attention=cpu.canvas_attention,
        lm_head_epilogue=cpu.lm_head_epilogue, TokenStats=naive.TokenStats,
    )


def _set_kind(device: torch.device | str) -> str:
    """"naive", "triton" or "cpu": which kernel set ops_for(device) returns."""
    if os.environ.get("KERNELS_FORCE_NAIVE", "0") == "1":
        return "naive"
    kind = torch.device(device).type
    if kind == "cuda":
        return "triton" if triton_available() else "naive"
    return "cpu" if kind == "cpu" else "naive"


def ops_for(device: torch.device | str):
    """The kernel set for `device`: Triton launchers on CUDA (if triton imports); on CPU the reference
    with the fast paths of `kernels.cpu`; `kernels.naive` itself where forced or nothing better runs."""
    from dg_lsp.kernels import naive

    kind = _set_kind(device)
    if kind == "triton":
        return _triton_ops()
    if kind == "cpu":
        return _cpu_ops()
    if torch.device(device).type == "cuda" and not triton_available():
        _fallbacks.add("all kernels on cuda (triton is not installed): torch reference")
    return naive
