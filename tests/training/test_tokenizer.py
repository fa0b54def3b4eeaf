"""dg_lsp.training.tokenizer on a tiny corpus: fixed special ids, exact round trip, literal special-token text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from dg_lsp.training.corpus import SourceFile
from dg_lsp.training.tokenizer import (
    MASK_ID,
    SPECIAL_TOKENS,
    check_special_tokens,
    load_tokenizer,
    sample_files,
    tokens_per_byte,
    train_tokenizer,
)

SNIPPETS = [
    "def area(width, height):\n    return width * height\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    if i % 2:\n        print(i)\n    else:\n        continue\n",
    "import os\nimport sys\n\n\ndef main():\n    return os.getcwd()\n",
    "with open(path) as f:\n        for line in f:\n            yield line.rstrip()\n",
]
TINY_CORPUS = SNIPPETS * 40
VOCAB = 400


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(TINY_CORPUS, VOCAB)


@pytest.fixture(scope="module")
def saved(tok: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_special_token_ids_are_fixed(tok, saved):
    for loaded in (tok, load_tokenizer(saved), Tokenizer.from_file(str(saved))):
        assert [loaded.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
        assert [loaded.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)
    assert MASK_ID == 3
    assert 256 + len(SPECIAL_TOKENS) < tok.get_vocab_size() <= VOCAB


def test_training_is_deterministic(tok):
    assert train_tokenizer(TINY_CORPUS, VOCAB).to_str() == tok.to_str()


def test_vocab_too_small_is_rejected():
    with pytest.raises(ValueError, match="at least 260"):
        train_tokenizer(TINY_CORPUS, 100)


def test_check_special_tokens_names_the_wrong_id():
    bad = Tokenizer.from_str(train_tokenizer(TINY_CORPUS, VOCAB).to_str())
    bad.add_special_tokens(["<|extra|>"])
    check_special_tokens(bad)  # extra specials after the fixed ones are fine
    plain = Tokenizer.from_str(bad.to_str().replace('"<|mask|>"', '"<|MASK|>"'))
    with pytest.raises(ValueError, match=r"'<\|mask\|>': expected id 3, got None"):
        check_special_tokens(plain)


def test_indentation_runs_are_one_or_two_tokens(tok):
    for text in (" " * 4, " " * 8, "\n        ", "\n    "):
        assert 1 <= len(tok.encode(text).ids) <= 2, (text, tok.encode(text).tokens)


def test_literal_special_text_is_ordinary_text(tok, saved):
    text = "x = '<|mask|>'  # <|pad|><|bos|><|eos|>\n"
    for loaded in (tok, load_tokenizer(saved)):
        for enc in (loaded.encode(text), loaded.encode(text, add_special_tokens=False), loaded.encode_batch([text])[0]):
            assert not set(enc.ids) & {0, 1, 2, 3}
            assert loaded.decode(enc.ids) == text


def test_plain_from_file_does_match_special_text(saved):
    """Why load_tokenizer exists: the encode_special_tokens flag is not saved in tokenizer.json.

    If this starts failing, tokenizers has changed how added tokens are matched; revisit load_tokenizer.
    """
    plain = Tokenizer.from_file(str(saved))
    assert MASK_ID in plain.encode("a<|mask|>b").ids
    assert MASK_ID in plain.encode("a<|mask|>b", add_special_tokens=False).ids


def test_special_ids_decode_to_their_text_unless_skipped(tok):
    ids = tok.encode("a = 1").ids
    assert tok.decode([1, *ids, MASK_ID, 2], skip_special_tokens=False) == "<|bos|>a = 1<|mask|><|eos|>"
    assert tok.decode([1, *ids, MASK_ID, 2]) == "a = 1"


ODD = ["\t", "\r\n", "\r", "\n", "    ", "é", "日本語", "😀", "\x00", "\u200b", "<|mask|>", "<|pad|>", "<|", "|>",
       "def ", "return", "'''", '"', "\\", "\ufeff"]  # fmt: skip
code_like = st.lists(st.sampled_from(ODD + SNIPPETS) | st.text(max_size=8), max_size=30).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text() | code_like)
def test_round_trip_and_no_special_ids(tok, text):
    ids = tok.encode(text).ids
    assert not set(ids) & {0, 1, 2, 3}
    assert tok.decode(ids, skip_special_tokens=False) == text


def test_round_trip_after_load(saved):
    loaded = load_tokenizer(saved)
    text = "\tif x:\r\n\t\treturn '<|mask|>' + \"caf\u00e9 \U0001f600\"\n" + "".join(SNIPPETS)
    ids = loaded.encode(text).ids
    assert loaded.decode(ids) == text and MASK_ID not in ids


def source(sha: str, size: int) -> SourceFile:
    return SourceFile(Path(f"/x/{sha}.py"), f"{sha}.py", "p", "1", "MIT", sha, size)


def test_sample_files_is_order_independent_and_within_budget():
    files = [source(f"{i:02x}" * 32, size) for i, size in enumerate([50, 30, 40, 10, 60, 20])]
    chosen = sample_files(files, max_bytes=100)
    assert chosen == sample_files(list(reversed(files)), max_bytes=100)
    assert [f.size for f in chosen] == [50, 30, 10]  # sha order, skipping what no longer fits
    assert sample_files(files, max_bytes=10**6) == sorted(files, key=lambda f: f.sha256)


def test_tokens_per_byte(tok):
    tpb = tokens_per_byte(tok, SNIPPETS)
    assert 0 < tpb < 1  # merges learned on these very snippets compress them
    assert tokens_per_byte(tok, ["\u00e9"]) == 1.0  # 2 UTF-8 bytes, never merged in this corpus: 2 tokens
