"""The compute dtype chosen at load time (engine.device), and bf16 results against fp32."""

from dataclasses import replace

import pytest
import torch

from dg_lsp.engine import device
from dg_lsp.engine.engine import load
from dg_lsp.engine.errors import ConfigError
from dg_lsp.engine.request import InfillRequest, SamplerConfig
from dg_lsp.engine.testing import tiny_config

CPU = torch.device("cpu")
WIDE = replace(tiny_config("dg"), hidden_size=896, intermediate_size=4864)  # a 0.5B model's widths


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\n")
    return path


@pytest.fixture
def cpu_flags(monkeypatch):
    def use(*flags):
        monkeypatch.setattr(device, "cpu_bf16_flags", lambda: tuple(flags))
    return use


def test_flags_are_read_from_cpuinfo(tmp_path):
    assert device.cpu_bf16_flags.__wrapped__(_cpuinfo(tmp_path, "avx512f avx512_bf16 amx_bf16 amx_tile")) == (
        "avx512_bf16", "amx_bf16")
    assert device.cpu_bf16_flags.__wrapped__(_cpuinfo(tmp_path, "avx512f avx512_vnni")) == ()
    assert device.cpu_bf16_flags.__wrapped__(tmp_path / "missing") == ()


def test_no_native_bf16_means_fp32(cpu_flags, monkeypatch):
    cpu_flags()
    monkeypatch.setattr(device, "measure_linear", lambda *a: pytest.fail("nothing to measure without bf16 units"))
    choice = device.choose_dtype(None, CPU, WIDE)
    assert choice.dtype == torch.float32 and "no avx512_bf16/amx_bf16" in choice.reason


def test_small_models_stay_fp32_without_measuring(cpu_flags, monkeypatch):
    cpu_flags("amx_bf16")
    monkeypatch.setattr(device, "measure_linear", lambda *a: pytest.fail("a small model is not measured"))
    choice = device.choose_dtype("auto", CPU, tiny_config("dg"))
    assert choice.dtype == torch.float32 and "hidden size 64" in choice.reason


@pytest.mark.parametrize("fp32_ms,bf16_ms,expected", [(6.0, 1.0, torch.bfloat16), (1.0, 1.0, torch.float32),
                                                      (1.1, 1.0, torch.float32)])
def test_bf16_only_where_measured_clearly_faster(cpu_flags, monkeypatch, fp32_ms, bf16_ms, expected):
    cpu_flags("avx512_bf16")
    shapes = []
    monkeypatch.setattr(device, "measure_linear", lambda *a: shapes.append(a) or (fp32_ms, bf16_ms))
    choice = device.choose_dtype(None, CPU, WIDE)
    assert choice.dtype == expected and shapes == [(16, 896, 4864)]  # measured at the model's own shape
    assert f"bf16 {bf16_ms:.2f} ms, fp32 {fp32_ms:.2f} ms" in choice.reason


def test_the_user_wins_and_bad_values_name_the_setting(cpu_flags):
    cpu_flags()
    assert device.choose_dtype("bfloat16", CPU, WIDE).dtype == torch.bfloat16
    assert device.choose_dtype(torch.float16, CPU, WIDE).dtype == torch.float16
    with pytest.raises(ConfigError, match="dtype='int4'.*expected auto, float32, bfloat16 or float16"):
        device.choose_dtype("int4", CPU, WIDE)


def test_measurement_runs_and_returns_positive_times():
    fp32_ms, bf16_ms = device.measure_linear.__wrapped__(4, 64, 128, repeat=2)
    assert fp32_ms > 0 and bf16_ms > 0


def test_engine_reports_its_choice(tiny_dirs):
    info = load(tiny_dirs["dg"], device="cpu").describe()
    assert info["dtype"] == "float32" and info["dtype_reason"]
    assert load(tiny_dirs["dg"], device="cpu", dtype="bfloat16").describe()["dtype_reason"] == "set by the dtype option"


@pytest.mark.parametrize("family", ["dg", "open-dcoder"])
def test_bf16_results_stay_close_to_fp32(tiny_dirs, family):
    """bf16 weights and activations against fp32 on the same checkpoint: logits within 3% relative RMS
    (bf16 keeps 8 significant bits; errors grow a little per layer), and most committed tokens agree
    (a random model's near-ties may flip)."""
    from dg_lsp.engine.forward import CanvasForward
    from dg_lsp.engine.prompt import build_layout

    prefix = "def total(values):\n    result = 0\n    for v in values:\n"
    request = InfillRequest.at_cursor(prefix, "\n    return result\n", 12)
    engines = {dt: load(tiny_dirs[family], device="cpu", dtype=dt, context_reuse="exact")
               for dt in ("float32", "bfloat16")}
    logits = {dt: CanvasForward(e, build_layout(request, e.tokenizer, e.cfg)).logits() for dt, e in engines.items()}
    ref, got = logits["float32"], logits["bfloat16"]
    finite = torch.isfinite(ref)
    assert ((got - ref)[finite].norm() / ref[finite].norm()).item() < 0.03
    sampler = SamplerConfig(steps=4, halt_when_stable=False)
    states = {dt: list(e.infill(request, sampler))[-1].canvas for dt, e in engines.items()}
    assert (states["float32"] == states["bfloat16"]).float().mean().item() >= 0.75
