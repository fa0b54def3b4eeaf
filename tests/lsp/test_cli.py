"""The command line: `dg-lsp --tcp` on loopback, `dg-lsp doctor` on a tiny checkpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from dg_lsp.cli import build_parser

from .conftest import frame


def test_tcp_binds_loopback_unless_a_host_is_given():
    assert build_parser().parse_args(["--tcp"]).host == "127.0.0.1"
    assert build_parser().parse_args(["--tcp", "--host", "0.0.0.0"]).host == "0.0.0.0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_message(sock: socket.socket) -> dict:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a reply"
        data += chunk
    header, rest = data.split(b"\r\n\r\n", 1)
    lengths = [line.split(b":")[1] for line in header.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return json.loads(rest[:length])


def test_tcp_server_answers_initialize():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dg_lsp.cli", "--tcp", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        sock = None
        for _ in range(600):  # wait for the listener; nothing is timed
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.05)
        assert sock is not None
        with sock:
            sock.sendall(frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                 "params": {"processId": None, "rootUri": None, "capabilities": {},
                                            "initializationOptions": {"backend": "fake"}}}))
            reply = _read_message(sock)
            while reply.get("id") != 1:
                reply = _read_message(sock)
            assert reply["result"]["serverInfo"]["name"] == "dg-lsp"
            assert reply["result"]["capabilities"]["inlineCompletionProvider"] is not None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_doctor_reports_device_model_kernels_and_a_timed_infill(tmp_path):
    testing = pytest.importorskip("dg_lsp.engine.testing", reason="dg_lsp.engine.testing is not available yet")
    checkpoint = testing.write_tiny_checkpoint(tmp_path / "ckpt")
    out = subprocess.run([sys.executable, "-m", "dg_lsp.cli", "doctor", "--model", str(checkpoint), "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    for label in ("device", "model", "kernels", "infill warm", "CUDA available"):
        assert label in out.stdout
    missing = subprocess.run([sys.executable, "-m", "dg_lsp.cli", "doctor", "--model", str(tmp_path / "none")],
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode == 1 and "FAILED" in missing.stdout and "does not exist" in missing.stdout


def test_doctor_reports_quantize_and_weight_memory(tmp_path, capsys):
    from dg_lsp.doctor import run

    testing = pytest.importorskip("dg_lsp.engine.testing", reason="dg_lsp.engine.testing is not available yet")
    checkpoint = str(testing.write_tiny_checkpoint(tmp_path / "ckpt"))
    for scheme, label in ([], "none"), (["--quantize", "int8"], "int8"):
        args = build_parser().parse_args(["doctor", "--model", checkpoint, "--device", "cpu", *scheme])
        assert run(args) == 0
        lines = capsys.readouterr().out.splitlines()
        assert any(line.split() == ["quantize", label] for line in lines), lines
        assert any(line.split()[:1] == ["weights"] and "MiB" in line for line in lines), lines


def test_demo_takes_a_family_like_the_other_model_commands():
    assert build_parser().parse_args(["demo", "--family", "open-dcoder"]).family == "open-dcoder"
    assert build_parser().parse_args(["pull", "org/name@v1"]).repo == "org/name@v1"


def test_infill_and_models_name_a_checkpoint_in_the_hf_cache(tmp_path, monkeypatch, capsys):
    testing = pytest.importorskip("dg_lsp.engine.testing", reason="dg_lsp.engine.testing is not available yet")
    from dg_lsp.cli import main
    from dg_lsp.models_cmd import format_bytes

    cache = tmp_path / "hub"
    ckpt = testing.write_tiny_checkpoint(tmp_path / "ckpt", "dream")
    testing.cache_checkpoint(cache, "org/tiny-dream", ckpt, revision="ab" * 20)
    nomodel = testing.cache_checkpoint(cache, "org/tokenizer-only", ckpt)
    for path in nomodel.iterdir():
        if path.name != "tokenizer.json":
            path.unlink()
    dataset = cache / "datasets--org--data" / "snapshots" / ("cd" * 20)
    dataset.mkdir(parents=True)
    (dataset / "train.json").write_text("[]")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    source = tmp_path / "a.py"
    source.write_text("def add(a, b):\n    \n")
    assert main(["infill", f"{source}:2:5", "--model", "org/tiny-dream", "--device", "cpu", "--steps", "2",
                 "--canvas", "4"]) == 0
    assert "model org/tiny-dream (dream" in capsys.readouterr().err

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("org/tiny-dream"))
    size = sum(p.stat().st_size for p in (cache / "models--org--tiny-dream" / "blobs").iterdir())
    assert "abababa (main)" in row and " dream " in row and format_bytes(size) in row and "not usable" not in row
    nomodel_row = next(line for line in out.splitlines() if line.startswith("org/tokenizer-only"))
    assert "not usable: no config.json" in nomodel_row
    assert "org/data" not in out and "dg-coder-tiny (embedded" in out


def test_pull_without_network_is_a_clear_error_with_exit_2(tmp_path, monkeypatch, capsys):
    from dg_lsp.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["pull", "org/name"]) == 2
    assert "cannot download org/name: HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert main(["pull", "not-a-repo-id"]) == 2
    assert "expected org/name" in capsys.readouterr().err
    # an unreachable Hub: connection refused on a loopback port nothing listens on, so it fails at once
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="5",
               HF_HUB_DOWNLOAD_TIMEOUT="5")
    out = subprocess.run([sys.executable, "-m", "dg_lsp.cli", "pull", "org/name@v1"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cannot download org/name@v1 from http://127.0.0.1:9" in out.stderr


def test_models_lists_a_diffusion_gemma_checkpoint(tmp_path, monkeypatch, capsys):
    """Its parameters are the text model's (the vision tower's tensors are not counted)."""
    pytest.importorskip("transformers")
    import torch

    from dg_lsp.cli import main
    from dg_lsp.engine import testing
    from dg_lsp.engine.gemma import load_gemma
    from dg_lsp.models_cmd import format_params

    cache = tmp_path / "hub"
    ckpt = testing.write_tiny_gemma_checkpoint(tmp_path / "gemma")
    testing.cache_checkpoint(cache, "org/tiny-gemma", ckpt)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("org/tiny-gemma"))
    model, _ = load_gemma(ckpt, "cpu", torch.float32)
    # what the engine holds, with the layer scalars once per mode as saved
    stored = sum(p.numel() for p in model.parameters()) + sum(b.numel() for _, b in model.named_buffers())
    assert "diffusion-gemma" in row and "not usable" not in row
    assert format_params(stored) in row, (row, stored)
