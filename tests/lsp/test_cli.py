"""The command line: `dg-lsp --tcp` on loopback, `dg-lsp doctor` on a tiny checkpoint."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from dg_lsp.cli import build_parser


def test_tcp_binds_loopback_unless_a_host_is_given():
    assert build_parser().parse_args(["--tcp"]).host == "127.0.0.1"
    assert build_parser().parse_args(["--tcp", "--host", "0.0.0.0"]).host == "0.0.0.0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


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
            sock.sendall(_frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
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
