"""Our transformer against transformers' Qwen2 and Llama, loaded from the checkpoint they save."""

import pytest
import torch

from dg_lsp.engine.config import load_config
from dg_lsp.engine.engine import load
from dg_lsp.engine.loader import load_weights
from dg_lsp.engine.model import Transformer

transformers = pytest.importorskip("transformers")

SHAPE = dict(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             max_position_embeddings=128, rope_theta=10000.0)


def hf_model(arch: str, kv_heads: int, tie: bool):
    cls_cfg, cls = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
                    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM)}[arch]
    torch.manual_seed(0)
    model = cls(cls_cfg(num_key_value_heads=kv_heads, tie_word_embeddings=tie, **SHAPE)).eval()
    with torch.no_grad():  # HF initialises norms to ones and biases to zeros: perturb them so they count
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.3)
    return model


def ours(path) -> Transformer:
    cfg = load_config(path, family="llama")  # a plain AR checkpoint: name the family explicitly
    with torch.device("meta"):
        model = Transformer(cfg)
    load_weights(model, path, torch.device("cpu"), torch.float32)
    return model.eval()


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("kv_heads,tie", [(4, False), (2, True), (1, False)])
def test_causal_logits_match_transformers(tmp_path, arch, kv_heads, tie):
    hf = hf_model(arch, kv_heads, tie)
    hf.save_pretrained(tmp_path)
    model = ours(tmp_path)
    assert model.cfg.attention_bias == (arch == "qwen2")
    tokens = torch.randint(0, SHAPE["vocab_size"], (2, 23))
    positions = torch.arange(23).expand(2, -1)
    with torch.no_grad():
        expected = hf(tokens).logits
        got = model(tokens, positions, causal=True)
    assert rel(got, expected) <= 1e-5


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_bidirectional_is_the_causal_computation_without_the_mask(tmp_path, arch):
    hf = hf_model(arch, 2, False)
    hf.save_pretrained(tmp_path)
    model = ours(tmp_path)
    tokens = torch.randint(0, SHAPE["vocab_size"], (1, 19))
    positions = torch.arange(19)[None]
    full = torch.ones(1, 1, 19, 19, dtype=torch.bool)  # transformers takes a 4D mask as given
    with torch.no_grad():
        expected = hf(tokens, attention_mask=full).logits
        got = model(tokens, positions)
        causal = model(tokens, positions, causal=True)
    assert rel(got, expected) <= 1e-5
    assert rel(got, causal) > 1e-2  # and it really is a different computation


def test_engine_cached_canvas_rows_equal_the_full_forward(tiny_dirs):
    """denoise() over cached context K/V gives the rows a full forward under the family mask gives."""
    from dg_lsp.engine.prompt import attention_mask, build_layout
    from dg_lsp.engine.request import InfillRequest

    eng = load(tiny_dirs["dg"], device="cpu", dtype="float64")
    layout = build_layout(InfillRequest.at_cursor("def f(x):\n    return", "\n\nprint(f(2))\n", 7),
                          eng.tokenizer, eng.cfg)
    tokens = torch.tensor(layout.tokens)[None]
    positions = torch.arange(tokens.shape[1])[None]
    canvas = layout.canvas_index
    tokens[0, canvas[:3]] = torch.tensor([5, 9, 11])  # a partly committed canvas
    with torch.no_grad():
        full = eng.model(tokens, positions, attention_mask(layout, eng.cfg)[None])[0, canvas]
        ctx = eng.model.encode(tokens[:, layout.context_index], positions[:, layout.context_index])
        fast = eng.model.logits(eng.model.denoise(tokens[:, canvas], positions[:, canvas], ctx))[0]
    assert rel(fast, full) <= 1e-10
