"""Byte-level BPE tokenizer for the embedded model, trained on the train split of ``training.corpus``.

Special tokens have fixed ids, first in the vocabulary::

    0 <|pad|>   padding, and the end of a generated middle
    1 <|bos|>   2 <|eos|>   3 <|mask|>   (the diffusion mask)

There is no normalizer and no post-processor: text goes byte for byte through the GPT-2 ByteLevel
pre-tokenizer (no prefix space) and comes back through the ByteLevel decoder, so
``decode(encode(s).ids) == s`` for every string, and nothing (no BOS/EOS) is added when encoding.

Literal special-token text. ``tokenizers`` matches added tokens in the *input text* before anything
else, and ``encode(..., add_special_tokens=False)`` does not stop that (the flag only controls the
post-processor). The switch that does is ``Tokenizer.encode_special_tokens = True``, but it is not saved in
tokenizer.json: a fresh ``Tokenizer.from_file`` would turn the text "<|mask|>" in a user's file into the
mask id. So load with ``load_tokenizer`` (or set the flag yourself after ``from_file``), and put special
ids into a sequence by id, never by encoding their text.

CLI: ``python -m dg_lsp.training.tokenizer --out models/dg-coder-tiny [--vocab 8192]`` writes tokenizer.json and
DATA.json (the corpus manifest plus tokenizer statistics).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from dg_lsp.training.corpus import DEFAULT_HELD_OUT, SourceFile, collect, write_manifest

SPECIAL_TOKENS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>")
PAD_ID, BOS_ID, EOS_ID, MASK_ID = range(len(SPECIAL_TOKENS))
DEFAULT_VOCAB = 8192
DEFAULT_SAMPLE_BYTES = 30_000_000


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB) -> Tokenizer:
    """Train a byte-level BPE of ``vocab_size`` entries (special tokens and the 256 bytes included).

    The result encodes with ``encode_special_tokens = True``, like ``load_tokenizer``.
    """
    minimum = len(SPECIAL_TOKENS) + 256
    if vocab_size < minimum:
        raise ValueError(f"vocab_size must be at least {minimum} (specials + 256 bytes), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, seen or not: no unknown tokens
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    check_special_tokens(tok)
    tok.encode_special_tokens = True
    return tok


def load_tokenizer(path: Path | str) -> Tokenizer:
    """``Tokenizer.from_file`` with special tokens checked and never matched in text (see module doc)."""
    tok = Tokenizer.from_file(str(path))
    check_special_tokens(tok)
    tok.encode_special_tokens = True
    return tok


def check_special_tokens(tok: Tokenizer) -> None:
    """Raise ValueError unless every special token has its fixed id and is marked special."""
    for expected, text in enumerate(SPECIAL_TOKENS):
        actual = tok.token_to_id(text)
        if actual != expected:
            raise ValueError(f"special token {text!r}: expected id {expected}, got {actual}")
    added = tok.get_added_tokens_decoder()
    for i, text in enumerate(SPECIAL_TOKENS):
        if i not in added or not added[i].special:
            raise ValueError(f"special token {text!r} (id {i}) is not registered as a special added token")


def sample_files(files: Sequence[SourceFile], max_bytes: int = DEFAULT_SAMPLE_BYTES) -> list[SourceFile]:
    """Whole files, at most ``max_bytes`` in all, chosen in SHA-256 order.

    Content-hash order is a fixed shuffle: every package is sampled in proportion to its size, and the
    choice does not depend on where files live or the order they were found in.
    """
    chosen, total = [], 0
    for f in sorted(files, key=lambda f: f.sha256):
        if total + f.size <= max_bytes:
            chosen.append(f)
            total += f.size
    return chosen


def tokens_per_byte(tok: Tokenizer, texts: Sequence[str]) -> float:
    """Encoded tokens per UTF-8 byte over ``texts`` (lower is better compression)."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(list(texts)))
    return n_tokens / max(n_bytes, 1)


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dg_lsp.training.tokenizer", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for tokenizer.json and DATA.json")
    parser.add_argument("--vocab", type=int, default=DEFAULT_VOCAB, help=f"vocab size (default {DEFAULT_VOCAB})")
    parser.add_argument(
        "--sample-bytes",
        type=int,
        default=DEFAULT_SAMPLE_BYTES,
        help=f"train on at most this many bytes of the train split (default {DEFAULT_SAMPLE_BYTES:,})",
    )
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    start = time.monotonic()
    corpus = collect(DEFAULT_HELD_OUT, progress=say)
    n_train, b_train = len(corpus.train), sum(f.size for f in corpus.train)
    n_held, b_held = len(corpus.held_out), sum(f.size for f in corpus.held_out)
    say(f"corpus: train {n_train} files {b_train:,} B; held-out {n_held} files {b_held:,} B; skipped {corpus.skipped}")
    if corpus.missing_held_out:
        say(f"WARNING: held-out distributions not installed: {corpus.missing_held_out}")

    sample = sample_files(corpus.train, args.sample_bytes)
    sample_bytes = sum(f.size for f in sample)
    say(f"training BPE (vocab {args.vocab}) on {len(sample)} files, {sample_bytes:,} B")
    tok = train_tokenizer((f.read_text() for f in sample), args.vocab)
    say(f"trained: vocab {tok.get_vocab_size()}")

    held_texts = [f.read_text() for f in corpus.held_out]
    for f, text in zip(corpus.held_out, held_texts):
        if tok.decode(tok.encode(text).ids, skip_special_tokens=False) != text:
            raise SystemExit(f"round trip failed on held-out file {f.package}:{f.relpath}")
    tpb = tokens_per_byte(tok, held_texts)
    say(f"held-out: {tpb:.4f} tokens/byte ({1 / tpb:.2f} bytes/token), round trip exact on {len(held_texts)} files")

    args.out.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out / "tokenizer.json"))
    stats = {
        "vocab_size": tok.get_vocab_size(),
        "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
        "sample": {"files": len(sample), "bytes": sample_bytes, "order": "sha256"},
        "held_out_tokens_per_byte": round(tpb, 5),
    }
    write_manifest(corpus, args.out / "DATA.json", extra={"tokenizer": stats})
    say(f"wrote {args.out / 'tokenizer.json'} and {args.out / 'DATA.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
