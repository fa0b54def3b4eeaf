"""The VS Code extension (editors/vscode): the TypeScript build, its unit tests (node:test against a
hand-written `vscode` mock), packaging to a .vsix, and its settings against the server's options.

`npm ci` runs first when node_modules is missing (it needs the npm registry or cache); building, testing
and packaging need no network.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import typing
import zipfile
from pathlib import Path

import pytest

from dg_lsp.options import Options, camel, parse_options

EXTENSION = Path(__file__).resolve().parents[2] / "editors" / "vscode"
NPM = shutil.which("npm")
CLIENT_KEYS = ("server.", "trace.")  # settings of the extension itself, not server options

pytestmark = pytest.mark.skipif(NPM is None, reason="npm (Node.js 20+) is not installed: the VS Code extension "
                                "cannot be built or tested")


def npm(*args: str) -> str:
    proc = subprocess.run([NPM, *args], cwd=EXTENSION, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"npm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def built() -> Path:
    if not (EXTENSION / "node_modules").is_dir():
        npm("ci", "--no-audit", "--no-fund")
    npm("run", "build")
    return EXTENSION


def test_unit_tests_pass(built: Path) -> None:
    out = npm("test")
    assert "# fail 0" in out, out


def test_packages_to_a_vsix(built: Path, tmp_path: Path) -> None:
    vsix = tmp_path / "dg-lsp.vsix"
    npm("run", "package", "--", "--out", str(vsix))
    names = zipfile.ZipFile(vsix).namelist()
    for needed in ("extension/package.json", "extension/out/extension.js", "extension/out/server.js",
                   "extension/node_modules/vscode-languageclient/package.json"):
        assert needed in names, f"{needed} missing from the .vsix"
    assert not [n for n in names if n.startswith(("extension/src/", "extension/out/test/"))], names


def server_defaults() -> dict[str, typing.Any]:
    """Every server option (dotted camelCase key) and its default, from the server's own dataclasses."""
    found: dict[str, typing.Any] = {}

    def walk(obj: typing.Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = prefix + camel(f.name)
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            else:
                found[key] = value

    walk(Options(), "")
    return found


def test_settings_are_server_options_with_the_server_defaults() -> None:
    properties = json.loads((EXTENSION / "package.json").read_text())["contributes"]["configuration"]["properties"]
    declared = {key.removeprefix("dg-lsp."): spec for key, spec in properties.items()
                if not key.removeprefix("dg-lsp.").startswith(CLIENT_KEYS)}
    defaults = server_defaults()
    undeclared = sorted(k for k in defaults if k not in declared and not k.startswith("fake."))
    assert not undeclared, f"server options without a VS Code setting: {undeclared}"
    nested: dict[str, typing.Any] = {}
    for key, spec in declared.items():
        assert key in defaults, f"setting dg-lsp.{key} is not a server option"
        assert spec["default"] == defaults[key], f"dg-lsp.{key}: default {spec['default']!r}, server {defaults[key]!r}"
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = spec["default"]
    options, problems = parse_options(nested)
    assert problems == [] and options == Options()
