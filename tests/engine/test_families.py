"""Golden tests: each family's conventions, and the prompt its reference code builds for the same strings."""

import json

import pytest
from tokenizers import Tokenizer as HFTokenizer

from dg_lsp.engine.config import FAMILIES, config_from_dict, load_config, resolve_family
from dg_lsp.engine.engine import load
from dg_lsp.engine.errors import ConfigError
from dg_lsp.engine.prompt import build_layout, predictor_rows
from dg_lsp.engine.request import Hole, InfillRequest

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


def test_family_table_pins_reference_conventions():
    dream, llada, odc, ours = FAMILIES["dream"], FAMILIES["llada"], FAMILIES["open-dcoder"], FAMILIES["dg"]
    # Dream / Dream-Coder / DreamOn / DiffuCoder (configuration_dream.py, generation_utils.py)
    assert (dream.shift_logits, dream.mask_id, dream.pad_id, dream.eos_id, dream.bos_id) == (True, 151666, 151643, 151643, 151665)
    assert dream.context_attention == "bidirectional"
    # LLaDA (generate.py: mask_id=126336; no shift; EOS padding)
    assert (llada.shift_logits, llada.mask_id, llada.eos_id) == (False, 126336, 126081)
    # Open-dCoder: shifted, mask from the tokenizer
    assert (odc.shift_logits, odc.mask_id, odc.mask_token) == (True, None, "<|mask|>")
    # ours: unshifted, causal context so the cache is exact
    assert (ours.shift_logits, ours.context_attention, ours.mask_id, ours.pad_id) == (False, "causal", 3, 0)


def test_dream_config_without_ids_takes_the_family_defaults():
    raw = {"model_type": "Dream", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
           "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4}
    cfg = config_from_dict(raw)
    assert (cfg.family.name, cfg.mask_id, cfg.pad_id, cfg.eos_id) == ("dream", 151666, 151643, 151643)
    assert cfg.attention_bias and cfg.head_dim == 128


def test_llada_native_config_keys_are_mapped():
    raw = {"model_type": "llada", "vocab_size": 126464, "d_model": 4096, "n_heads": 32, "n_kv_heads": 32,
           "n_layers": 32, "mlp_hidden_size": 12288, "max_sequence_length": 4096, "weight_tying": False,
           "include_bias": False, "rope_theta": 500000.0, "mask_token_id": 126336}
    cfg = config_from_dict(raw)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.max_position_embeddings) == (4096, 32, 12288, 4096)
    assert not cfg.attention_bias and cfg.mask_id == 126336 and not cfg.family.shift_logits


def test_autoregressive_model_type_needs_an_explicit_family():
    raw = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 8, "intermediate_size": 8,
           "num_hidden_layers": 1, "num_attention_heads": 2}
    with pytest.raises(ConfigError, match="dg_family"):
        config_from_dict(raw)
    assert config_from_dict(raw, family="open-dcoder").family.shift_logits


def test_unknown_family_is_a_clear_error():
    raw = {"model_type": "mamba", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
           "num_hidden_layers": 1, "num_attention_heads": 2}
    with pytest.raises(ConfigError, match="cannot tell which diffusion family"):
        config_from_dict(raw)
    with pytest.raises(ConfigError, match="unknown family 'gpt'"):
        config_from_dict(dict(raw, dg_family="gpt"))


# Golden configs: the fields of each published config.json that the family rules read, plus its shapes.
# The Hub was not reachable from here: the values were checked against public copies of these files and
# the code that reads them (HKUNLP/Dream configuration_dream.py: model_type "Dream"; ML-GSAI/LLaDA
# generate.py: mask 126336; Open-dCoder's scripts load fredzzp/open-dcoder-0.5B as a Qwen2ForCausalLM).
PUBLISHED = {
    # Dream-org/Dream-v0-Base-7B config.json
    "Dream-org/Dream-v0-Base-7B": {
        "architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "mask_token_id": 151666, "eos_token_id": 151643, "pad_token_id": 151643, "rope_theta": 1000000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    },
    # Dream-org/Dream-Coder-v0-Instruct-7B config.json (Qwen2.5-Coder-7B shapes; BOS is <|beginoftext|>)
    "Dream-org/Dream-Coder-v0-Instruct-7B": {
        "architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "mask_token_id": 151666, "bos_token_id": 151665, "eos_token_id": 151643, "pad_token_id": 151643,
        "torch_dtype": "bfloat16",
    },
    # apple/DiffuCoder-7B-Instruct config.json (config pad 151643; its tokenizer pads with <|dlm_pad|>)
    "apple/DiffuCoder-7B-Instruct": {
        "architectures": ["DreamModel"], "model_type": "Dream", "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
        "mask_token_id": 151666, "eos_token_id": 151643, "pad_token_id": 151643, "torch_dtype": "bfloat16",
    },
    # GSAI-ML/LLaDA-8B-Base config.json (OLMo-style key names)
    "GSAI-ML/LLaDA-8B-Base": {
        "architectures": ["LLaDAModelLM"], "model_type": "llada", "d_model": 4096, "n_heads": 32,
        "n_kv_heads": 32, "n_layers": 32, "mlp_hidden_size": 12288, "vocab_size": 126464,
        "embedding_size": 126464, "max_sequence_length": 4096, "rope_theta": 500000.0, "mask_token_id": 126336,
        "eos_token_id": 126081, "pad_token_id": 126081, "weight_tying": False, "include_bias": False,
        "include_qkv_bias": False, "activation_type": "silu", "rms_norm_eps": 1e-05,
    },
    # fredzzp/open-dcoder-0.5B config.json: a plain Qwen2 config (Qwen2.5-Coder-0.5B shapes)
    "fredzzp/open-dcoder-0.5B": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "vocab_size": 151936, "rope_theta": 1000000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    },
}
EXPECTED_FAMILY = {"Dream-org/Dream-v0-Base-7B": "dream", "Dream-org/Dream-Coder-v0-Instruct-7B": "dream",
                   "apple/DiffuCoder-7B-Instruct": "dream", "GSAI-ML/LLaDA-8B-Base": "llada",
                   "fredzzp/open-dcoder-0.5B": "open-dcoder"}


@pytest.mark.parametrize("repo_id", sorted(PUBLISHED))
def test_published_configs_resolve_to_their_family(repo_id):
    raw = PUBLISHED[repo_id]
    assert config_from_dict(raw, repo_id=repo_id).family.name == EXPECTED_FAMILY[repo_id]
    if raw["model_type"] != "qwen2":  # their config alone says it: the repo id is not needed
        assert config_from_dict(raw).family.name == EXPECTED_FAMILY[repo_id]


def test_published_config_fields_map_to_the_model():
    dream = config_from_dict(PUBLISHED["Dream-org/Dream-Coder-v0-Instruct-7B"])
    ids = (dream.mask_id, dream.bos_id, dream.eos_id, dream.pad_id)
    assert ids == (151666, 151665, 151643, 151643) and dream.head_dim == 128
    llada = config_from_dict(PUBLISHED["GSAI-ML/LLaDA-8B-Base"])
    assert (llada.hidden_size, llada.num_hidden_layers, llada.mask_id, llada.eos_id) == (4096, 32, 126336, 126081)
    assert round(llada.num_params() / 1e9, 1) == 8.0
    odc = config_from_dict(PUBLISHED["fredzzp/open-dcoder-0.5B"], repo_id="fredzzp/open-dcoder-0.5B")
    assert odc.attention_bias and odc.tie_word_embeddings and odc.mask_id is None  # mask from the tokenizer
    assert round(odc.num_params() / 1e6) == 494  # Qwen2.5-Coder-0.5B: 0.49B


def test_a_qwen2_config_without_a_known_repo_asks_for_the_family():
    raw = PUBLISHED["fredzzp/open-dcoder-0.5B"]
    for repo_id in (None, "someone/qwen2-finetune"):
        with pytest.raises(ConfigError) as err:
            config_from_dict(raw, repo_id=repo_id)
        assert "--family" in str(err.value) and "model.family" in str(err.value)
    # the Hub matches repo ids without regard to case, and so do we
    assert config_from_dict(raw, repo_id="FredZZP/Open-dCoder-0.5B").family.name == "open-dcoder"


def test_architectures_alone_name_the_family_and_an_explicit_family_wins():
    assert resolve_family({"architectures": ["DreamModel"]}, None, "x").name == "dream"
    assert resolve_family({"architectures": ["LLaDAModelLM"]}, None, "x").name == "llada"
    assert resolve_family(PUBLISHED["Dream-org/Dream-v0-Base-7B"], "open-dcoder", "x").name == "open-dcoder"
    odc = PUBLISHED["fredzzp/open-dcoder-0.5B"]
    assert resolve_family(odc, "dream", "x", repo_id="fredzzp/open-dcoder-0.5B").name == "dream"
    assert resolve_family(dict(odc, dg_family="dg"), None, "x", repo_id="fredzzp/open-dcoder-0.5B").name == "dg"


def hf_tok(path) -> HFTokenizer:
    return HFTokenizer.from_file(str(path / "tokenizer.json"))


def test_dreamon_prompt_layout(tiny_dirs):
    """DreamOn readme: [bos] + encode(prefix) + [mask] * n + encode(suffix) + [eos]."""
    cfg = load_config(tiny_dirs["dream"])
    tok = hf_tok(tiny_dirs["dream"])
    bos, mask, eos = tok.token_to_id("<|beginoftext|>"), tok.token_to_id("<|mask|>"), tok.token_to_id("<|endoftext|>")
    expected = ([bos] + tok.encode(PREFIX, add_special_tokens=False).ids + [mask] * 6
                + tok.encode(SUFFIX, add_special_tokens=False).ids + [eos])
    eng = load(tiny_dirs["dream"], device="cpu")
    layout = build_layout(InfillRequest.at_cursor(PREFIX, SUFFIX, 6), eng.tokenizer, eng.cfg)
    assert list(layout.tokens) == expected
    assert (cfg.bos_id, cfg.mask_id, cfg.eos_id) == (bos, mask, eos)


def test_open_dcoder_prompt_layout(tiny_dirs):
    """Open-dLLM eval_infill.py: encode(prefix) + [mask] * n + encode(suffix); Qwen2 adds no BOS/EOS."""
    tok = hf_tok(tiny_dirs["open-dcoder"])
    mask = tok.token_to_id("<|mask|>")
    expected = tok.encode(PREFIX).ids + [mask] * 6 + tok.encode(SUFFIX, add_special_tokens=False).ids
    eng = load(tiny_dirs["open-dcoder"], device="cpu")
    assert eng.cfg.mask_id == mask  # taken from the tokenizer: the family has no fixed id
    layout = build_layout(InfillRequest.at_cursor(PREFIX, SUFFIX, 6), eng.tokenizer, eng.cfg)
    assert list(layout.tokens) == expected


def test_llada_prompt_layout(tiny_dirs):
    """LLaDA: the tokenizer adds BOS; the canvas of mask 126336-style ids follows the prompt."""
    tok = hf_tok(tiny_dirs["llada"])
    bos, mask = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|mdm_mask|>")
    expected = [bos] + tok.encode(PREFIX).ids + [mask] * 6 + tok.encode(SUFFIX).ids
    eng = load(tiny_dirs["llada"], device="cpu")
    layout = build_layout(InfillRequest.at_cursor(PREFIX, SUFFIX, 6), eng.tokenizer, eng.cfg)
    assert list(layout.tokens) == expected


def test_multi_hole_layout_and_positions(tiny_dirs):
    eng = load(tiny_dirs["dg"], device="cpu")
    request = InfillRequest(segments=("a = ", "\nb = ", "\n"), holes=(Hole(3), Hole(4)))
    layout = build_layout(request, eng.tokenizer, eng.cfg)
    enc = eng.tokenizer.encode
    m = eng.cfg.mask_id
    assert list(layout.tokens) == [eng.cfg.bos_id] + enc("a = ") + [m] * 3 + enc("\nb = ") + [m] * 4 + enc("\n")
    (s0, e0), (s1, e1) = layout.holes
    assert (e0 - s0, e1 - s1) == (3, 4) and all(layout.tokens[i] == m for i in layout.canvas_index.tolist())


def test_shift_picks_the_row_before_the_canvas(tiny_dirs):
    for family, shifted in (("dream", True), ("dg", False)):
        eng = load(tiny_dirs[family], device="cpu")
        layout = build_layout(InfillRequest.at_cursor(PREFIX, SUFFIX, 4), eng.tokenizer, eng.cfg)
        idx = layout.canvas_index
        assert predictor_rows(layout, eng.cfg).tolist() == (idx - 1 if shifted else idx).tolist()


def test_literal_mask_text_in_a_file_stays_text(tiny_dirs):
    eng = load(tiny_dirs["dg"], device="cpu")
    ids = eng.tokenizer.encode('MASK = "<|mask|>"')
    assert eng.cfg.mask_id not in ids
    assert eng.tokenizer.decode(ids) == 'MASK = "<|mask|>"'


def test_written_config_round_trips(tiny_dirs):
    cfg = load_config(tiny_dirs["dg"])
    raw = json.loads((tiny_dirs["dg"] / "config.json").read_text())
    assert raw["dg_family"] == "dg" and raw["mask_token_id"] == cfg.mask_id
    again = config_from_dict(cfg.to_dict())
    assert (again.hidden_size, again.family, again.mask_id, again.head_dim) == (cfg.hidden_size, cfg.family, cfg.mask_id, cfg.head_dim)
