"""The engine's fast paths against its plain ones: Triton kernels on vs off, graph buffers vs eager."""

import pytest
import torch

from dg_lsp import kernels
from dg_lsp.engine.engine import load
from dg_lsp.engine.graphs import CAPACITY_STEP, StepGraphs
from dg_lsp.engine.request import Hole, InfillRequest, SamplerConfig
from dg_lsp.engine.testing import write_tiny_checkpoint

PREFIX = "def read_lines(path):\n    with open(path, encoding=\"utf-8\") as f:\n        return"
SUFFIX = "\n\n\ndef main(argv=None):\n    return 0\n"
REQUESTS = [InfillRequest.at_cursor(PREFIX, SUFFIX, 7),
            InfillRequest(segments=("import os\n", "\ndef main():\n    ", "\n"), holes=(Hole(3), Hole(4)))]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # head_dim 32: the smallest the Triton attention kernel is built for
    return write_tiny_checkpoint(tmp_path_factory.mktemp("fast") / "m", "dg", seed=4, hidden=64, heads=2, kv_heads=1)


def canvases(eng, request, sampler):
    return [s.canvas.tolist() for s in eng.infill(request, sampler)]


@pytest.mark.skipif(not kernels.triton_available(), reason="triton is not installed")
@pytest.mark.parametrize("request_index", [0, 1])
def test_triton_kernels_commit_the_same_tokens(ckpt, monkeypatch, request_index):
    """Every denoising step, not just the result: the kernels run under TRITON_INTERPRET=1 on CPU."""
    sampler = SamplerConfig(steps=4, halt_when_stable=False)
    plain = load(ckpt, device="cpu")
    expected = canvases(plain, REQUESTS[request_index], sampler)
    fast = load(ckpt, device="cpu")
    triton_ops = kernels._triton_ops()
    monkeypatch.setattr("dg_lsp.engine.model.ops_for", lambda device: triton_ops)
    assert fast.model.ops(torch.zeros(1)) is triton_ops
    assert canvases(fast, REQUESTS[request_index], sampler) == expected


@pytest.mark.parametrize("family", ["dg", "dream"])
def test_graph_buffers_step_equals_the_eager_step(tiny_dirs, family):
    """The static-buffer step a CUDA graph captures (run eagerly here) commits what the eager path does."""
    sampler = SamplerConfig(steps=5, halt_when_stable=False)
    plain = load(tiny_dirs[family], device="cpu")
    graphed = load(tiny_dirs[family], device="cpu")
    graphed.graphs = StepGraphs(graphed.model, graphed.cfg.mask_id, capture=False)
    for request in REQUESTS:
        assert canvases(graphed, request, sampler) == canvases(plain, request, sampler)
    if family == "dg":  # shifted families never take the graph (their predictor rows are not the canvas)
        assert graphed.graphs.graphs, "the graph path was not taken"
        (rows, capacity), graph = next(iter(graphed.graphs.graphs.items()))
        assert capacity % CAPACITY_STEP == 0 and int(graph.ctx_len) <= capacity


def test_graph_is_reused_across_requests_of_one_canvas_length(tiny_dirs):
    eng = load(tiny_dirs["dg"], device="cpu")
    eng.graphs = StepGraphs(eng.model, eng.cfg.mask_id, capture=False)
    sampler = SamplerConfig(steps=3, halt_when_stable=False)
    first = eng.complete(InfillRequest.at_cursor(PREFIX, SUFFIX, 7), sampler)
    eng.complete(InfillRequest.at_cursor(PREFIX + " x", SUFFIX, 7), sampler)
    assert len(eng.graphs.graphs) == 1
    eng.complete(InfillRequest.at_cursor(PREFIX, SUFFIX, 9), sampler)
    assert len(eng.graphs.graphs) == 2
    assert eng.complete(InfillRequest.at_cursor(PREFIX, SUFFIX, 7), sampler).texts == first.texts


def test_fused_and_logits_paths_agree_at_temperature_zero(tiny_dirs):
    """top_p < 1 forces the logits path; with a nucleus of 1.0 it must pick what the fused path picks."""
    eng = load(tiny_dirs["dg"], device="cpu")
    fused = canvases(eng, REQUESTS[0], SamplerConfig(steps=4, halt_when_stable=False))
    logits = canvases(eng, REQUESTS[0], SamplerConfig(steps=4, halt_when_stable=False, top_p=0.999999))
    assert fused == logits
