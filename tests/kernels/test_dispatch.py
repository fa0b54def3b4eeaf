"""dg_lsp.kernels.ops_for: one dispatch point, same names and signatures on both sides."""

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dg_lsp import kernels
from dg_lsp.kernels import naive

OPS = ["rms_norm", "rope", "canvas_attention", "lm_head_epilogue"]


def test_cpu_gets_the_references_with_the_fast_epilogue(monkeypatch):
    from dg_lsp.kernels import cpu

    monkeypatch.delenv("KERNELS_FORCE_NAIVE", raising=False)
    ops = kernels.ops_for("cpu")
    assert ops is kernels.ops_for(torch.device("cpu"))
    for name in ("lm_head_epilogue", "canvas_attention"):
        assert getattr(ops, name) is getattr(cpu, name)
        assert inspect.signature(getattr(cpu, name)) == inspect.signature(getattr(naive, name)), name
    for name in ("rms_norm", "rope", "TokenStats"):
        assert getattr(ops, name) is getattr(naive, name), name
    monkeypatch.setenv("KERNELS_FORCE_NAIVE", "1")
    assert kernels.ops_for("cpu") is naive


@pytest.mark.skipif(not kernels.triton_available(), reason="triton is not installed")
def test_cuda_gets_triton_unless_forced_naive(monkeypatch):
    monkeypatch.delenv("KERNELS_FORCE_NAIVE", raising=False)
    fast = kernels.ops_for("cuda")
    assert fast is not naive
    assert fast.TokenStats is naive.TokenStats
    for name in OPS:
        assert getattr(fast, name).__module__.startswith("dg_lsp.kernels.") and getattr(fast, name) is not getattr(naive, name)
        assert inspect.signature(getattr(fast, name)) == inspect.signature(getattr(naive, name)), name
    monkeypatch.setenv("KERNELS_FORCE_NAIVE", "1")
    assert kernels.ops_for("cuda:0") is naive


def _project_imports(folder: Path) -> dict[str, set[str]]:
    """file name -> the dg_lsp modules it imports (absolute imports; the project uses no relative ones)."""
    out = {}
    for path in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                names.update(f"{node.module}.{a.name}" for a in node.names)
        out[path.name] = {n for n in names if n.split(".")[0] in ("dg_lsp", "engine", "kernels", "training")}
    return out


def test_imports_go_one_way():
    """dg_lsp (server) -> dg_lsp.engine -> dg_lsp.kernels; the engine and kernels never import the server
    (the GPU machines run them from a source tree without the server's dependencies)."""
    root = Path(kernels.__file__).parent.parent
    for name, names in _project_imports(root / "kernels").items():
        assert all(n.startswith("dg_lsp.kernels.") for n in names), f"kernels/{name} imports {names}"
    for name, names in _project_imports(root / "engine").items():
        assert all(n.startswith(("dg_lsp.engine.", "dg_lsp.kernels.")) for n in names), f"engine/{name} imports {names}"


def test_without_triton_modules_import_and_launchers_raise():
    """macOS has no triton: kernel modules must still import, dispatch falls back, launchers say why."""
    code = """
import sys
sys.modules["triton"] = None  # makes `import triton` raise ImportError
import torch
from dg_lsp import kernels
from dg_lsp.kernels import naive
from dg_lsp.kernels.rmsnorm import rms_norm
import dg_lsp.kernels.attention, dg_lsp.kernels.epilogue, dg_lsp.kernels.rope
assert not kernels.triton_available()
assert kernels.ops_for("cuda") is naive
assert kernels.fallbacks() == ["all kernels on cuda (triton is not installed): torch reference"]
assert not kernels.supports("canvas_attention", head_dim=64, dtype=torch.bfloat16)
try:
    rms_norm(torch.ones(2, 4), torch.ones(4), 1e-6)
except RuntimeError as e:
    assert "triton" in str(e), e
else:
    raise AssertionError("expected RuntimeError")
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(kernels.__file__).parent.parent
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_supports_answers_per_device_and_shape(monkeypatch):
    """kernels.supports: what the model asks per layer before it picks an op (DiffusionGemma: head dims 256
    and 512, both covered by the Triton kernel)."""
    monkeypatch.delenv("KERNELS_FORCE_NAIVE", raising=False)
    bf16 = torch.bfloat16
    assert kernels.supports("canvas_attention", head_dim=64, dtype=torch.float32, device="cpu")
    assert kernels.supports("canvas_attention", head_dim=512, dtype=bf16, device="cpu")
    assert not kernels.supports("canvas_attention", dtype=torch.float64, device="cpu")
    assert kernels.supports("lm_head_epilogue", dtype=bf16, device="cpu")
    assert not kernels.supports("lm_head_epilogue", dtype=torch.float32, device="cpu")  # reference, by design
    assert not kernels.supports("rms_norm", device="cpu")
    if kernels.triton_available():
        for d in (64, 128, 256, 512):
            assert kernels.supports("canvas_attention", head_dim=d, dtype=bf16), d
        assert not kernels.supports("canvas_attention", head_dim=96, dtype=bf16)
        assert not kernels.supports("canvas_attention", head_dim=1024)
        assert not kernels.supports("canvas_attention", head_dim=256, dtype=torch.float64)
        assert kernels.supports("lm_head_epilogue", dtype=bf16, device=torch.device("cuda", 0))
        assert not kernels.supports("rope", head_dim=7)
    assert not kernels.supports("canvas_attention", device="meta")
    monkeypatch.setenv("KERNELS_FORCE_NAIVE", "1")
    assert not kernels.supports("canvas_attention", head_dim=64, dtype=bf16, device="cpu")
    with pytest.raises(ValueError, match="unknown op"):
        kernels.supports("flash_attention")


@pytest.mark.skipif(not kernels.triton_available(), reason="triton is not installed")
def test_triton_set_falls_back_per_call_and_says_so(monkeypatch):
    """A head dim the kernel has no tiles for takes the reference for that call and is listed in
    fallbacks(); a covered one (512) runs the kernel and lists nothing. On CPU the launcher runs under
    TRITON_INTERPRET=1 (set by the conftests)."""
    attention = kernels._triton_ops().canvas_attention
    g = torch.Generator().manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    def call(d, dtype=torch.float32):
        q = torch.randn(1, 2, 2, d, generator=g).to(device, dtype)
        kv = torch.randn(1, 1, 3, d, generator=g).to(device, dtype)
        out = attention(q, kv, kv, kv[:, :, :2], kv[:, :, :2], 1.0, 1)
        ref = naive.canvas_attention(q, kv, kv, kv[:, :, :2], kv[:, :, :2], 1.0, 1)
        return out, ref

    out, ref = call(96)
    assert torch.equal(out, ref)
    out, ref = call(16, torch.float64)
    assert torch.equal(out, ref)
    before = set(kernels.fallbacks())
    out, ref = call(512)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert set(kernels.fallbacks()) == before, "head_dim 512 must run the kernel"
    assert "canvas_attention head_dim 96: torch reference" in before
    assert "canvas_attention dtype float64: torch reference" in before
    assert kernels.fallbacks() == sorted(kernels.fallbacks())
