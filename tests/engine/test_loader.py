"""Checkpoint loading: layouts that must load, and broken ones that must fail with a clear message."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from dg_lsp.engine.engine import load
from dg_lsp.engine.errors import CheckpointError, ConfigError, TokenizerError
from dg_lsp.engine.request import InfillRequest
from dg_lsp.engine.testing import write_tiny_checkpoint

REQ = InfillRequest.at_cursor("def main():\n    ", "\n    return 0\n", 6)


@pytest.fixture
def ckpt(tmp_path):
    return write_tiny_checkpoint(tmp_path / "m", "dg", seed=3)


def logits_of(eng):
    tokens = torch.arange(1, 12)[None]
    return eng.model(tokens, torch.arange(11)[None])


def test_sharded_checkpoint_equals_single_file(tmp_path, ckpt):
    sharded = write_tiny_checkpoint(tmp_path / "s", "dg", seed=3, shard_bytes=40_000)
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    assert len(shards) > 2 and (sharded / "model.safetensors.index.json").is_file()
    a, b = load(ckpt, device="cpu"), load(sharded, device="cpu")
    assert torch.equal(logits_of(a), logits_of(b))
    assert a.complete(REQ).texts == b.complete(REQ).texts


def test_weights_within_the_shard_limit_are_one_plain_file(tmp_path, ckpt):
    fits = write_tiny_checkpoint(tmp_path / "f", "dg", seed=3, shard_bytes=10**9)
    assert sorted(p.name for p in fits.glob("model*")) == ["model.safetensors"]  # no index, no -00001-of-00001
    assert torch.equal(logits_of(load(ckpt, device="cpu")), logits_of(load(fits, device="cpu")))


def test_loaded_model_has_no_meta_tensors_and_the_requested_dtype(ckpt):
    eng = load(ckpt, device="cpu", dtype="bfloat16")
    assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in eng.model.parameters())
    assert eng.describe()["dtype"] == "bfloat16"


def test_progress_reports_every_tensor(ckpt):
    seen = []
    load(ckpt, device="cpu", progress=lambda msg, done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] == len(seen) and seen[0] == (1, len(seen))


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nope", device="cpu")


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(ConfigError, match="no config.json"):
        load(ckpt, device="cpu")


def test_corrupt_config(ckpt):
    (ckpt / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load(ckpt, device="cpu")


def test_config_with_a_bad_value_names_the_key(ckpt):
    raw = json.loads((ckpt / "config.json").read_text())
    raw["num_hidden_layers"] = "two"
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="num_hidden_layers='two': expected a positive integer"):
        load(ckpt, device="cpu")


def test_missing_weights_and_pickles_refused(ckpt):
    (ckpt / "model.safetensors").unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(CheckpointError, match="pickle checkpoints are never loaded"):
        load(ckpt, device="cpu")


def test_corrupt_safetensors(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        load(ckpt, device="cpu")


def test_missing_tensor_is_named(ckpt):
    tensors = load_file(ckpt / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.layers.1.mlp.up_proj.weight is missing .*shape \(128, 64\)"):
        load(ckpt, device="cpu")


def test_shape_mismatch_names_tensor_and_shapes(ckpt):
    tensors = load_file(ckpt / "model.safetensors")
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(48, 64)
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"k_proj.weight has shape \(48, 64\), expected \(32, 64\)"):
        load(ckpt, device="cpu")


def test_missing_shard(tmp_path):
    sharded = write_tiny_checkpoint(tmp_path / "s", "dg", shard_bytes=40_000)
    victim = sorted(sharded.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"names shard {victim.name}, which is missing"):
        load(sharded, device="cpu")


def test_missing_tokenizer(ckpt):
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load(ckpt, device="cpu")


def test_tokenizer_without_the_mask_token(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "o", "open-dcoder")
    tok = json.loads((path / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "<|mask|>"]
    tok["model"]["vocab"].pop("<|mask|>")
    (path / "tokenizer.json").write_text(json.dumps(tok))
    raw = json.loads((path / "config.json").read_text())
    raw.pop("mask_token_id")
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(TokenizerError, match="mask token '<\\|mask\\|>' of family open-dcoder is not in the vocabulary"):
        load(path, device="cpu")


def test_bad_device_and_dtype_name_the_setting(ckpt):
    with pytest.raises(ConfigError, match="device='tpu'"):
        load(ckpt, device="tpu")
    with pytest.raises(ConfigError, match="dtype='int8' is not supported"):
        load(ckpt, device="cpu", dtype="int8")


def test_llada_naming_loads_the_same_weights(tmp_path):
    """The LLaDA map reads OLMo-style names into the same modules as the HF map."""
    hf = write_tiny_checkpoint(tmp_path / "hf", "llama", seed=5)
    llada = tmp_path / "llada"
    shutil.copytree(hf, llada)
    rename = {"model.embed_tokens": "model.transformer.wte", "model.norm": "model.transformer.ln_f",
              "lm_head": "model.transformer.ff_out", "self_attn.o_proj": "attn_out", "self_attn.": "",
              "input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm", "mlp.gate_proj": "ff_proj",
              "mlp.up_proj": "up_proj", "mlp.down_proj": "ff_out", "model.layers": "model.transformer.blocks"}
    tensors = {}
    for name, t in load_file(hf / "model.safetensors").items():
        for a, b in rename.items():
            name = name.replace(a, b)
        tensors[name] = t
    save_file(tensors, llada / "model.safetensors")
    raw = json.loads((llada / "config.json").read_text())
    raw["dg_family"] = "llada"
    raw["mask_token_id"] = 2
    (llada / "config.json").write_text(json.dumps(raw))
    a = load(hf, device="cpu")
    b = load(llada, device="cpu", family="llada")
    assert torch.equal(logits_of(a), logits_of(b))
