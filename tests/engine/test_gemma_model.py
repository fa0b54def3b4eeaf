"""Our DiffusionGemma text model against transformers', loaded from the checkpoint transformers saves.

transformers is the reference: its encoder (`model.model.encoder`) fills a DynamicCache (the static cache
is wrong past one sliding window), its full model called with `decoder_input_ids` and that cache (no
`input_ids`) runs one denoising step, as `generate`'s `_denoising_step` does. Float32, CPU.
"""

import json
import shutil

import pytest
import torch

from dg_lsp.engine.errors import CheckpointError, ConfigError
from dg_lsp.engine.gemma import GemmaCache, load_gemma
from dg_lsp.engine.gemma_config import gemma_config_from_dict, load_gemma_config
from dg_lsp.engine import moe
from dg_lsp.engine.moe import moe_grouped, moe_reference, route
from dg_lsp.engine.testing import write_tiny_gemma_checkpoint

transformers = pytest.importorskip("transformers")

# name -> (text-config overrides, prompt length); the tiny model's window is sliding_window
CONFIGS = {
    "window<prompt,kv1,top2": (dict(sliding_window=6, num_global_key_value_heads=1, top_k_experts=2), 13),
    "window>prompt,kv2,top1": (dict(sliding_window=32, num_global_key_value_heads=2, top_k_experts=1), 9),
    "window=2,kv2,top3": (dict(sliding_window=2, num_global_key_value_heads=2, top_k_experts=3), 7),
}
TOL = 1e-4  # max abs error, float32


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemma")
    return {name: write_tiny_gemma_checkpoint(root / str(n), seed=n, **over)
            for n, (name, (over, _)) in enumerate(CONFIGS.items())}


def max_err(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def check_cache(ours: GemmaCache, ref, where: str) -> float:
    assert ours.length == ref.get_seq_length(), where
    worst = 0.0
    for i, layer in enumerate(ref.layers):
        for name, got, want in (("k", ours.k[i], layer.keys), ("v", ours.v[i], layer.values)):
            assert got.shape == want.shape, f"{where} layer {i} {name}: {tuple(got.shape)} vs {tuple(want.shape)}"
            worst = max(worst, max_err(got, want))
    assert worst <= TOL, f"{where}: cache K/V max abs error {worst:.2e}"
    return worst


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encoder_cache_and_decoder_logits_match_transformers(checkpoints, name):
    """Two blocks: encode the prompt, two denoising steps (the second self-conditioned on the first's
    processed logits), encode the committed canvas, one more step on the next canvas."""
    path, prompt_len = checkpoints[name], CONFIGS[name][1]
    hf = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(path, dtype=torch.float32).eval()
    model, cfg = load_gemma(path, "cpu", torch.float32)
    gen = torch.Generator().manual_seed(0)
    v, c = cfg.vocab_size, cfg.canvas_length
    prompt = torch.randint(0, v, (2, prompt_len), generator=gen)
    canvases = [torch.randint(0, v, (2, c), generator=gen) for _ in range(3)]
    ref_cache = transformers.DynamicCache(config=hf.config.get_text_config(decoder=True))
    errors = {}
    with torch.no_grad():
        hf.model.encoder(input_ids=prompt, cache=ref_cache)
        cache = model.encode(prompt)
        errors["prompt cache"] = check_cache(cache, ref_cache, "prompt")

        want = hf(decoder_input_ids=canvases[0], cache=ref_cache).logits
        got = model.decode(canvases[0], cache)
        errors["step 1"] = max_err(got, want)
        processed = want / 0.7  # what generate feeds back: the logits after its temperature processor
        want = hf(decoder_input_ids=canvases[1], cache=ref_cache, self_conditioning_logits=processed).logits
        got = model.decode(canvases[1], cache, self_cond=processed)
        errors["step 2 (self-cond)"] = max_err(got, want)
        assert got.dtype == torch.float32 and got.shape == (2, c, v)
        assert got.abs().max() < cfg.final_logit_softcapping

        committed = want.argmax(-1)
        before = [t.clone() for t in cache.k]
        hf.model.encoder(input_ids=committed, cache=ref_cache)
        cache2 = model.encode(committed, cache)
        errors["block 2 cache"] = check_cache(cache2, ref_cache, "block 2")
        assert all(torch.equal(a, b) for a, b in zip(before, cache.k)), "encode must not change the cache it extends"
        want = hf(decoder_input_ids=canvases[2], cache=ref_cache, self_conditioning_logits=processed).logits
        errors["block 2 step"] = max_err(model.decode(canvases[2], cache2, self_cond=processed), want)
    print(name, {k: f"{e:.1e}" for k, e in errors.items()})
    assert max(errors.values()) <= TOL, errors


def test_sliding_layers_keep_the_last_window_minus_one(checkpoints):
    path = checkpoints["window<prompt,kv1,top2"]
    model, cfg = load_gemma(path, "cpu", torch.float32)
    with torch.no_grad():
        cache = model.encode(torch.randint(0, cfg.vocab_size, (1, 13)))
        before = [t.clone() for t in cache.k]
        model.decode(torch.randint(0, cfg.vocab_size, (1, cfg.canvas_length)), cache)
    for i, k in enumerate(cache.k):
        assert k.shape[2] == (cfg.sliding_window - 1 if cfg.is_sliding(i) else 13)
        assert k.shape[1] == cfg.layer_kv_heads(i) and k.shape[3] == cfg.layer_head_dim(i)
        assert torch.equal(k, before[i]), "decode must write nothing to the cache"


def test_config_reads_what_transformers_saved(checkpoints):
    path = checkpoints["window<prompt,kv1,top2"]
    cfg = load_gemma_config(path)
    assert (cfg.head_dim, cfg.global_head_dim) == (16, 32)
    assert (cfg.num_key_value_heads, cfg.num_global_key_value_heads) == (2, 1)
    assert (cfg.num_experts, cfg.top_k_experts, cfg.moe_intermediate_size, cfg.sliding_window) == (8, 2, 32, 6)
    assert cfg.layer_types == ("sliding_attention", "full_attention") * 2
    assert (cfg.rope_sliding.theta, cfg.rope_full.theta, cfg.rope_full.partial_rotary_factor) == (1e4, 1e6, 0.25)
    assert cfg.rope_full.rotated_pairs(32) == 4 and cfg.rope_sliding.rotated_pairs(16) == 8
    assert (cfg.pad_id, cfg.eos_id, cfg.bos_id, cfg.canvas_length, cfg.final_logit_softcapping) == (0, 1, 2, 8, 30.0)
    vocab = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocab) == cfg.vocab_size


def test_vision_weights_are_skipped_and_recorded(checkpoints):
    model, _ = load_gemma(checkpoints["window>prompt,kv2,top1"], "cpu", torch.float32)
    assert model.skipped_weights.get("model.encoder.vision_tower.", 0) > 0
    assert model.skipped_weights.get("model.encoder.embed_vision.", 0) > 0
    assert not any("vision" in name for name, _ in model.named_parameters())


def test_missing_expert_tensor_names_it_and_the_file(checkpoints, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(checkpoints["window>prompt,kv2,top1"], path)
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.decoder.layers.1.experts.gate_up_proj"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json.*layers\.1\.experts\.gate_up_proj"):
        load_gemma(path, "cpu", torch.float32)


def gemma_raw(checkpoints) -> dict:
    return json.loads((checkpoints["window>prompt,kv2,top1"] / "config.json").read_text())


@pytest.mark.parametrize("key", ["num_experts", "top_k_experts", "moe_intermediate_size"])
def test_config_of_another_version_names_the_missing_key(checkpoints, key):
    raw = gemma_raw(checkpoints)
    del raw["text_config"][key]
    with pytest.raises(ConfigError, match=key):
        gemma_config_from_dict(raw)


def test_config_rejects_unknown_layer_types_and_per_layer_overrides(checkpoints):
    raw = gemma_raw(checkpoints)
    raw["text_config"]["layer_types"][0] = "chunked_attention"
    with pytest.raises(ConfigError, match="chunked_attention"):
        gemma_config_from_dict(raw)
    raw = gemma_raw(checkpoints)
    raw["text_config"]["per_layer_config"] = {"1": {"head_dim": 32, "intermediate_size": 7}}
    with pytest.raises(ConfigError, match="intermediate_size"):
        gemma_config_from_dict(raw)
    raw = gemma_raw(checkpoints)
    raw["model_type"] = "gemma4"
    with pytest.raises(ConfigError, match="diffusion_gemma"):
        gemma_config_from_dict(raw)


# MoE: the grouped fast path against the reference loop, on the same routing.
MOE_TOL = {torch.float32: 1e-6, torch.bfloat16: 1e-2}  # relative RMS error


def rel_rms(got, want) -> float:
    return ((got.double() - want.double()).pow(2).mean().sqrt() / want.double().pow(2).mean().sqrt()).item()


@pytest.mark.parametrize("n", [1, 15, 63, 300])
@pytest.mark.parametrize("top_k", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("path", ["grouped_mm", "slice loop"])
def test_moe_grouped_matches_reference(monkeypatch, n, top_k, dtype, path):
    if path == "slice loop":
        monkeypatch.setattr(moe, "_grouped_mm_ok", lambda *_: False)
    elif not moe._grouped_mm_ok("cpu", dtype):
        pytest.skip(f"torch._grouped_mm does not run on CPU for {dtype}")
    gen = torch.Generator().manual_seed(n * 10 + top_k)
    e, h, i = 8, 64, 32
    x = torch.randn(n, h, generator=gen).to(dtype)
    gate_up = (torch.randn(e, 2 * i, h, generator=gen) * h ** -0.5).to(dtype)
    down = (torch.randn(e, h, i, generator=gen) * i ** -0.5).to(dtype)
    weights, index = route(x, torch.rand(h, generator=gen).to(dtype) + 0.5,
                           torch.randn(e, h, generator=gen).to(dtype), torch.rand(e, generator=gen).to(dtype) + 0.5,
                           top_k, 1e-6)
    assert weights.dtype == torch.float32 and index.shape == (n, top_k)
    want = moe_reference(x, weights, index, gate_up, down)
    got = moe_grouped(x, weights, index, gate_up, down)
    assert got.dtype == dtype and got.shape == (n, h)
    assert rel_rms(got, want) <= MOE_TOL[dtype], f"output: rel RMS {rel_rms(got, want):.2e}"
