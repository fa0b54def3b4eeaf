"""Shared setup for the kernel tests: the interpreter switch and a by-name relative-RMS comparison.

Fast paths run on CUDA when present, else on CPU under the Triton interpreter (tiny shapes only: it
executes every program in numpy). Each test module picks its device and per-dtype tolerances.
TRITON_INTERPRET is also set by tests/conftest.py; it is repeated here so this directory keeps working
if run with another root conftest. It must be set before triton or kernels.* is first imported.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _full_fp32_matmul():
    """References must not silently run fp32 matmuls in TF32 (a global another test may have set)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = actual.double(), expected.double()
    return ((a - e).pow(2).mean().sqrt() / e.pow(2).mean().sqrt().clamp_min(1e-30)).item()


@pytest.fixture
def assert_close():
    """assert_close(name, actual, expected, tol): shape, dtype, finiteness and relative RMS error, by name."""

    def check(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
        assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
        assert torch.isfinite(actual).all(), f"{name}: non-finite values"
        err = rel_rms(actual, expected)
        assert err <= tol, f"{name}: relative RMS error {err:.3g} > {tol:.3g}"

    return check
