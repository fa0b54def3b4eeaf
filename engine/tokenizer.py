"""tokenizer.json through `tokenizers`, with the special tokens the family needs resolved up front."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from dg_lsp.engine.config import ModelConfig
from dg_lsp.engine.errors import TokenizerError


@dataclass
class Tokenizer:
    hf: _HFTokenizer

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, with no BOS/EOS added: the prompt builder places those."""
        if not text:
            return []
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)


def read_tokenizer(model_dir: str | Path) -> Tokenizer:
    """tokenizer.json of a model directory, special-token text kept as text."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"{path}: no tokenizer.json in the model directory {model_dir}")
    try:
        hf = _HFTokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed files
        raise TokenizerError(f"{path}: not a valid tokenizer.json ({exc})") from exc
    # Text from a user's file is code, not a prompt template: a literal "<|mask|>" in it must stay text.
    hf.encode_special_tokens = True
    return Tokenizer(hf)


def load_tokenizer(model_dir: str | Path, cfg: ModelConfig) -> tuple[Tokenizer, ModelConfig]:
    """The tokenizer, and the config with mask_id filled from it when config.json does not give one."""
    path = Path(model_dir) / "tokenizer.json"
    hf = read_tokenizer(model_dir).hf
    mask = cfg.family.mask_token
    token_id = hf.token_to_id(mask)
    if token_id is None and cfg.mask_id is None:
        raise TokenizerError(f"{path}: the mask token {mask!r} of family {cfg.family.name} is not in the "
                             "vocabulary and config.json gives no mask_token_id")
    if token_id is not None and cfg.mask_id is not None and token_id != cfg.mask_id:
        raise TokenizerError(f"{path}: {mask!r} has id {token_id} but config.json says "
                             f"mask_token_id={cfg.mask_id}: the two must agree")
    size = hf.get_vocab_size(with_added_tokens=True)
    if size > cfg.vocab_size:
        raise TokenizerError(f"{path}: {size} tokens do not fit the model's vocab_size={cfg.vocab_size}")
    if cfg.mask_id is None:
        cfg = replace(cfg, mask_id=token_id)
    return Tokenizer(hf), length_tokens(hf, cfg)


EXPAND_TOKEN, DELETE_TOKEN = "<|expand|>", "<|delete|>"


def length_tokens(hf: _HFTokenizer, cfg: ModelConfig) -> ModelConfig:
    """The config with expand/delete ids when the tokenizer has DreamOn's "<|expand|>" (151667 in DreamOn).

    Delete is "<|delete|>" when the tokenizer has it, else EOS: DreamOn's published eval loop
    (eval/generator.py, delete_eos_token) deletes canvas positions that become EOS."""
    expand = hf.token_to_id(EXPAND_TOKEN)
    if expand is None:
        return cfg
    delete = hf.token_to_id(DELETE_TOKEN)
    delete = cfg.eos_id if delete is None else delete
    if delete is None or expand == cfg.mask_id or delete == cfg.mask_id:
        raise TokenizerError(f"{EXPAND_TOKEN} has id {expand} but the delete token ({DELETE_TOKEN} or EOS) is "
                             f"{delete} and the mask is {cfg.mask_id}: expected a delete token distinct from the mask")
    return replace(cfg, expand_id=expand, delete_id=delete)
