"""`dg-lsp serve` and the application builder, up to where Ray would start: loopback unless told, the
token file, capacity on a local Ray, the Ray resources each replica declares, and the builder's args."""

from __future__ import annotations

import pytest

from dg_lsp.cli import build_parser, main

app = pytest.importorskip("dg_lsp.serving.app", reason="Ray Serve is not installed")
from dg_lsp.serving.serve_cmd import _capacity_problem  # noqa: E402


def test_serve_defaults_to_loopback_cpu_and_batching():
    args = build_parser().parse_args(["serve"])
    assert (args.serve_host, args.serve_port, args.device, args.replicas, args.max_batch_size) == \
        ("127.0.0.1", 8000, "cpu", 1, 8)
    assert args.max_body_bytes == 1024 * 1024 and args.serve_token_file is None


def test_a_host_others_can_reach_needs_allow_remote(capsys):
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "pass --allow-remote" in capsys.readouterr().err


def test_an_empty_token_file_is_refused_before_ray_starts(tmp_path, capsys):
    (tmp_path / "token").write_text("\n")
    assert main(["serve", "--token-file", str(tmp_path / "token")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_a_local_ray_too_small_for_the_replicas_is_refused():
    cfg = app.ServeArgs(replicas=3, threads=2)
    assert "need 6 CPU(s) but this machine has 2" in _capacity_problem(cfg, {"CPU": 2.0})
    assert "need 2 GPU(s) but this machine has 1" in _capacity_problem(app.ServeArgs(replicas=2, device="cuda"),
                                                                       {"CPU": 8.0, "GPU": 1.0})
    assert _capacity_problem(app.ServeArgs(replicas=2), {"CPU": 2.0}) is None


def test_replicas_declare_one_gpu_each_on_cuda_and_their_threads_on_cpu():
    cuda = app.deployment_options(app.ServeArgs(device="cuda", replicas=4, max_batch_size=16))
    assert cuda == {"num_replicas": 4, "ray_actor_options": {"num_gpus": 1, "num_cpus": 1}, "max_ongoing_requests": 32}
    cpu = app.deployment_options(app.ServeArgs(replicas=2, threads=3))
    assert cpu["ray_actor_options"] == {"num_cpus": 3} and cpu["max_ongoing_requests"] == 16


def test_the_builder_validates_its_args_by_name():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="replica"):
        app.build({"replica": 2})  # a typo of replicas
    with pytest.raises(ValidationError, match="device"):
        app.build({"device": "tpu"})
    assert app.build({"replicas": "2", "max_batch_size": "4"}) is not None  # `serve run ... replicas=2` gives strings


def test_the_token_comes_from_the_file_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(app.TOKEN_ENV, raising=False)
    assert app.read_token(None) is None
    monkeypatch.setenv(app.TOKEN_ENV, "from-env")
    assert app.read_token(None) == "from-env"
    (tmp_path / "t").write_text(" s3cret\n")
    assert app.read_token(str(tmp_path / "t")) == "s3cret"
