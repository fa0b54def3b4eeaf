"""int8 weight-only quantization (torchao) against the unquantized model, on tiny random checkpoints.

Tolerances, at hidden 128 / intermediate 256 / 2 layers / vocab 384 (measured on CPU in brackets):
- linear-layer bytes fp32 / int8 in [3.5, 4.0]: int8 values plus one fp32 scale and one int8 zero
  point per output row, so 4 * in / (in + 5) for `in` input features [3.85 for in=128, 3.92 for 256];
- logits relative RMS error vs the same-dtype unquantized model: fp32 < 1% [0.1-0.15%], bf16 < 2% [0.4-0.5%];
- greedy (temperature 0) committed tokens equal to the unquantized model's on a fixed set of 12 requests:
  fp32 >= 95% [99-100%]. Random tiny models have flat logits, so a near tie can flip: the logits bound is
  the primary check and agreement the reported one (bench/bench_quantize.py measures it at real shapes).
"""

import sys

import pytest
import torch
from torch import nn

from dg_lsp.engine import ConfigError
from dg_lsp.engine.engine import load
from dg_lsp.engine.graphs import StepGraphs
from dg_lsp.engine.quantize import check_scheme, quantize_model, tensor_bytes
from dg_lsp.engine.request import InfillRequest, SamplerConfig
from dg_lsp.engine.testing import write_tiny_checkpoint

SHAPE = dict(hidden=128, intermediate=256, heads=4, kv_heads=2, layers=2)
REQUESTS = [InfillRequest.at_cursor(f"def f{i}(x):\n    x = {i}\n    ", "\n\nprint(f(1))\n", 8 + i) for i in range(12)]
GREEDY = SamplerConfig(steps=4, halt_when_stable=False)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """dg: causal context, tied LM head; dream: bidirectional, shifted logits; llada: bidirectional, untied."""
    root = tmp_path_factory.mktemp("quant")
    return {"dg": write_tiny_checkpoint(root / "dg", "dg", seed=3, **SHAPE),
            "dream": write_tiny_checkpoint(root / "dream", "dream", seed=3, **SHAPE),
            "llada": write_tiny_checkpoint(root / "llada", "llada", seed=3, tie=False, **SHAPE)}


def block_linears(model) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name.startswith("layers.")}


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).pow(2).mean().sqrt() / expected.pow(2).mean().sqrt())


def logits(eng, causal: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, eng.cfg.vocab_size, (2, 40), generator=gen)
    with torch.inference_mode():
        return eng.model(tokens, torch.arange(40)[None].expand(2, -1), causal=causal).float()


@pytest.mark.parametrize("family", ["dg", "llada"])
def test_block_linears_are_int8_and_the_lm_head_stays_dense(ckpts, family):
    plain = load(ckpts[family], device="cpu")
    quant = load(ckpts[family], device="cpu", quantize="int8")
    linears = block_linears(quant.model)
    assert len(linears) == 4 * SHAPE["layers"]  # wqkv, wo, w13, w2 per block
    for name, linear in linears.items():
        assert linear.weight.qdata.dtype == torch.int8, name
        assert linear.weight.shape == block_linears(plain.model)[name].weight.shape
    for weight in (quant.model.lm_head_weight, quant.model.tok_embeddings.weight):
        assert type(weight) is nn.Parameter and weight.dtype == torch.float32  # tied or untied: dense
    assert quant.describe()["quantize"] == "int8" and plain.describe()["quantize"] == "none"


def test_linear_memory_is_about_a_quarter_of_fp32(ckpts):
    plain = load(ckpts["dg"], device="cpu")
    quant = load(ckpts["dg"], device="cpu", quantize="int8")
    dense = {n: tensor_bytes(m.weight) for n, m in block_linears(plain.model).items()}
    packed = {n: tensor_bytes(m.weight) for n, m in block_linears(quant.model).items()}
    for name in dense:
        assert 3.5 <= dense[name] / packed[name] <= 4.0, (name, dense[name], packed[name])
    saved = sum(dense.values()) - sum(packed.values())
    assert plain.describe()["weight_bytes"] - quant.describe()["weight_bytes"] == saved


@pytest.mark.parametrize("dtype, tol", [("float32", 0.01), ("bfloat16", 0.02)])
@pytest.mark.parametrize("family", ["dg", "dream", "llada"])
def test_logits_are_close_to_the_unquantized_model(ckpts, family, dtype, tol):
    plain = load(ckpts[family], device="cpu", dtype=dtype)
    quant = load(ckpts[family], device="cpu", dtype=dtype, quantize="int8")
    causal = family == "dg"
    assert rel_rms(logits(quant, causal), logits(plain, causal)) < tol


@pytest.mark.parametrize("family", ["dg", "dream", "llada"])
def test_greedy_infill_commits_mostly_the_same_tokens(ckpts, family):
    plain = load(ckpts[family], device="cpu")
    quant = load(ckpts[family], device="cpu", quantize="int8")
    same = total = 0
    for request in REQUESTS:
        a = list(plain.infill(request, GREEDY))[-1].canvas
        b = list(quant.infill(request, GREEDY))[-1].canvas
        same, total = same + int((a == b).sum()), total + len(a)
    assert same / total >= 0.95, f"{family}: {same}/{total} committed tokens agree"


PATHS = {  # sampler settings -> the engine path they take
    "fused argmax": SamplerConfig(steps=4),
    "fused sample": SamplerConfig(steps=4, temperature=0.8),
    "logits renoise": SamplerConfig(steps=4, commit="renoise"),
    "logits top-p": SamplerConfig(steps=4, temperature=0.8, top_p=0.9),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", ["dg", "dream", "llada"])
def test_every_engine_path_runs_quantized(ckpts, family, path):
    eng = load(ckpts[family], device="cpu", quantize="int8")
    sampler = PATHS[path]
    requests = [REQUESTS[0], InfillRequest.rewrite("def f(x):\n    ", "return x + 1", "\n", 8)]  # rewrite: renoise init
    for request in requests:
        gen = torch.Generator().manual_seed(0)
        last = list(eng.infill(request, sampler, generator=gen))[-1]
        assert last.done and not bool((last.canvas == eng.cfg.mask_id).any())
    assert all(m.weight.qdata.dtype == torch.int8 for m in block_linears(eng.model).values())


def test_graph_step_buffers_run_quantized(ckpts):
    """The static-buffer step a CUDA graph captures (eager here) with int8 linears: as the eager path."""
    eng = load(ckpts["dg"], device="cpu", quantize="int8")
    expected = [s.canvas.tolist() for s in eng.infill(REQUESTS[1], GREEDY)]
    eng.graphs = StepGraphs(eng.model, eng.cfg.mask_id, capture=False)
    assert [s.canvas.tolist() for s in eng.infill(REQUESTS[1], GREEDY)] == expected
    assert eng.graphs.graphs, "the graph path was not taken"


@pytest.mark.parametrize("scheme, words", [
    ("int3", ["quantize='int3'", "expected int8"]),
    ("INT8", ["quantize='INT8'", "expected int8"]),
    ("int4", ["quantize='int4'", "CUDA only", "left out", "expected int8"]),
])
def test_bad_schemes_name_the_setting_and_the_allowed_values(ckpts, scheme, words):
    with pytest.raises(ConfigError) as err:
        load(ckpts["dg"], device="cpu", quantize=scheme)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_none_is_no_quantization_and_fp64_is_refused(ckpts):
    assert check_scheme(None) is None and check_scheme("none") is None and check_scheme("int8") == "int8"
    assert load(ckpts["dg"], device="cpu", quantize="none").describe()["quantize"] == "none"
    with pytest.raises(ConfigError, match="quantize='int8' needs a float32, bfloat16 or float16 compute dtype"):
        load(ckpts["dg"], device="cpu", dtype=torch.float64, quantize="int8")


def test_a_torchao_that_will_not_import_is_a_clear_error(ckpts, monkeypatch):
    eng = load(ckpts["dg"], device="cpu")
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # makes the import raise ImportError
    with pytest.raises(ConfigError, match=r"needs torchao \(pip install"):
        quantize_model(eng.model, "int8")
