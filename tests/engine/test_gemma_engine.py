"""DiffusionGemma through engine.load like every family: a transformers-saved sharded checkpoint, infill in its
three layouts (block by block, pinned suffix, several holes), our model + sampler against transformers'
generate, cancellation, the CLI, and the errors that name what is wrong."""

import subprocess
import sys

import pytest
import torch

from dg_lsp.engine.engine import load
from dg_lsp.engine.errors import CheckpointError, ConfigError, InfillCancelled, RequestError
from dg_lsp.engine.gemma_engine import GemmaEngine
from dg_lsp.engine.gemma_sampler import EntropyBoundConfig, generate
from dg_lsp.engine.request import Hole, InfillRequest, SamplerConfig

pytest.importorskip("transformers")
from dg_lsp.engine.testing import write_tiny_gemma_checkpoint  # noqa: E402

PREFIX, SUFFIX = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
QUICK = SamplerConfig(max_steps=3)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    path = write_tiny_gemma_checkpoint(tmp_path_factory.mktemp("gemma") / "tiny-gemma", seed=3)
    assert (path / "model.safetensors.index.json").is_file()  # sharded, as save_pretrained wrote it
    return path


@pytest.fixture(scope="module")
def eng(gemma_dir):
    return load(gemma_dir, device="cpu")


def test_loads_by_path_with_no_conversion_and_says_what_it_skipped(eng):
    assert isinstance(eng, GemmaEngine)
    info = eng.describe()
    assert info["family"] == "diffusion-gemma" and info["model"] == "tiny-gemma"
    assert "vision tower not loaded" in info["skipped"] and info["dtype"] == "float32"


def test_a_hole_with_nothing_after_it_is_written_block_by_block(eng):
    budget = 3 * eng.cfg.canvas_length - 2  # three canvases of the checkpoint's length
    states = list(eng.infill(InfillRequest.at_cursor(PREFIX, "", budget), SamplerConfig(max_steps=2,
                                                                                         stability_threshold=0)))
    assert states[-1].done and not any(s.done for s in states[:-1])
    assert len(states[-1].canvas) <= budget
    result = eng.complete(InfillRequest.at_cursor(PREFIX, "", budget), SamplerConfig(max_steps=2))
    assert result.steps >= 2 and isinstance(result.text, str)


def test_pinned_suffix_and_several_holes(eng):
    one = eng.complete(InfillRequest.at_cursor(PREFIX, SUFFIX, 6), QUICK)
    assert len(one.texts) == 1 and one.canvas_tokens == 6
    two = eng.complete(InfillRequest(segments=("import os\n", "\ndef main():\n    ", "\n"),
                                     holes=(Hole(4), Hole(5))), QUICK)
    assert len(two.texts) == 2 and two.canvas_tokens == 9
    again = eng.complete(InfillRequest.at_cursor(PREFIX, SUFFIX, 6), QUICK)
    assert again.texts == one.texts  # no generator given: seed 0 per request


def test_our_engine_reproduces_transformers_generate(gemma_dir, eng):
    """Our model and sampler, end to end, against transformers' model and generate: same seed, same tokens."""
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

    hf = DiffusionGemmaForBlockDiffusion.from_pretrained(gemma_dir, dtype=torch.float32).eval()
    prompt = torch.tensor([[2, 17, 33, 5, 41, 9]])
    cfg = EntropyBoundConfig(steps=5, entropy_bound=0.5, canvas_length=eng.cfg.canvas_length)
    for seed in (0, 1):
        torch.manual_seed(seed)
        expected = hf.generate(prompt, max_new_tokens=2 * cfg.canvas_length, max_denoising_steps=cfg.steps,
                               sampler_config=EntropyBoundSamplerConfig(entropy_bound=cfg.entropy_bound),
                               t_min=cfg.t_min, t_max=cfg.t_max, stability_threshold=cfg.stability_threshold,
                               confidence_threshold=cfg.confidence_threshold, eos_token_id=-1).sequences[:, 6:]
        got = list(generate(eng.model, prompt, cfg, torch.Generator().manual_seed(seed),
                            max_new_tokens=2 * cfg.canvas_length, eos_id=-1))[-1].tokens
        assert got.tolist() == expected.tolist(), seed


def test_cancelled_between_steps(eng):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(InfillCancelled):
        list(eng.infill(InfillRequest.at_cursor(PREFIX, SUFFIX, 6), SamplerConfig(max_steps=8), cancel=cancel))
    assert len(calls) == 3


def test_bad_input_names_it(gemma_dir, eng, tmp_path):
    with pytest.raises(RequestError, match=r"canvas 600 tokens.*context of 512"):
        eng.complete(InfillRequest.at_cursor(PREFIX, "", 600), QUICK)
    with pytest.raises(ConfigError, match="quantize='int8'"):
        load(gemma_dir, device="cpu", quantize="int8")
    with pytest.raises(RequestError, match="max_steps=0 is invalid: expected null or an integer 1..1024"):
        SamplerConfig(max_steps=0)
    with pytest.raises(RequestError, match="entropy_bound=-1"):
        SamplerConfig(entropy_bound=-1.0)
    broken = write_tiny_gemma_checkpoint(tmp_path / "broken", seed=1, shard_bytes=10_000_000)
    (broken / "model.safetensors").rename(broken / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load(broken, device="cpu")


def test_cli_infill_runs_on_the_checkpoint_directory(gemma_dir, tmp_path):
    source = tmp_path / "add.py"
    source.write_text(PREFIX + "\n" + SUFFIX)
    proc = subprocess.run([sys.executable, "-m", "dg_lsp.cli", "infill", f"{source}:2:5", "--model", str(gemma_dir),
                           "--device", "cpu", "--canvas", "6", "--steps", "3", "--entropy-bound", "0.2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "diffusion-gemma" in proc.stderr and "denoising steps" in proc.stderr


def test_the_servers_long_block_path_is_one_ordinary_request(gemma_dir, eng):
    # the server asks block completions for several canvases; DiffusionGemma continues inside its own engine
    from dg_lsp.backend import EngineBackend

    backend = EngineBackend(str(gemma_dir), device="cpu")
    backend.load()
    request, heard = InfillRequest.at_cursor(PREFIX, SUFFIX, 8), []
    result = backend.complete(request, QUICK, canvases=4, stop=lambda text: True, partial=heard.append)
    assert result.texts == eng.complete(request, QUICK).texts and heard == []
