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
