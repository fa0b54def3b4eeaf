"""The pinned corpus: written from a scan, rebuilt from the files it names, hashes and held-out enforced."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from dg_lsp.engine.testing import tiny_tokenizer
from dg_lsp.engine.tokenizer import Tokenizer
from dg_lsp.training.corpus import STDLIB, HeldOut, collect
from dg_lsp.training.examples import ExampleSpec
from dg_lsp.training.corpus import _totals
from dg_lsp.training.manifest import ManifestError, load_corpus, read, write, write_pack
from dg_lsp.training.batches import TextSampler, batch_at
from dg_lsp.training.train import TrainConfig

PY = platform.python_version()  # collect() pins the stdlib at the running version
CODE = "def {name}(x):\n    total = x + 1\n    for i in range(total):\n        print(i, '{name}')\n    return total\n"


def put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def dist(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    info = site / f"{name}-{version}.dist-info"
    put(info / "METADATA", f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\nLicense-Expression: MIT\n")
    for rel, text in files.items():
        put(site / rel, text)
    put(info / "RECORD", "".join(f"{rel},,\n" for rel in files) + f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


@pytest.fixture
def tree(tmp_path: Path):
    std, site = tmp_path / "std", tmp_path / "site"
    for mod in ("alpha", "beta", "gamma"):
        put(std / f"{mod}.py", CODE.format(name=mod))
    put(std / "json" / "__init__.py", CODE.format(name="held_json"))
    dist(site, "goodpkg", "1.0", {"goodpkg/__init__.py": CODE.format(name="good"),
                                  "goodpkg/core.py": CODE.format(name="core")})
    dist(site, "cattrs", "9.9", {"cattrs/__init__.py": CODE.format(name="held_cattrs")})
    held = HeldOut(stdlib_modules=("json",), distributions=("cattrs",))
    corpus = collect(held, stdlib_root=std, site_roots=[site])
    path = tmp_path / "manifest.json"
    write(path, corpus, PY)
    return std, site, path


def load(tree, **kw):
    std, site, path = tree
    return load_corpus(kw.pop("path", path), stdlib_root=std, site_roots=[site], python=PY, **kw)


@pytest.fixture(scope="module")
def tok():
    hf = tiny_tokenizer(["<|pad|>", "<|bos|>", "<|eos|>", "<|mask|>"], vocab_size=320)
    hf.encode_special_tokens = True
    return Tokenizer(hf)


def test_manifest_lists_every_file_on_its_own_line(tree):
    _, _, path = tree
    data = read(path)
    lines = path.read_text().splitlines()
    assert len([ln for ln in lines if ln.startswith('{"split"')]) == len(data["files"]) == 7
    assert {(e["split"], e["package"], e["path"]) for e in data["files"]} == {
        ("train", "goodpkg", "goodpkg/__init__.py"), ("train", "goodpkg", "goodpkg/core.py"),
        ("train", STDLIB, "alpha.py"), ("train", STDLIB, "beta.py"), ("train", STDLIB, "gamma.py"),
        ("held_out", "cattrs", "cattrs/__init__.py"), ("held_out", STDLIB, "json/__init__.py"),
    }
    entry = next(e for e in data["files"] if e["package"] == "goodpkg")
    assert entry["version"] == "1.0" and entry["license"] == "MIT" and len(entry["sha256"]) == 64
    assert next(e for e in data["files"] if e["package"] == STDLIB)["version"] == PY


def test_rebuilding_twice_gives_identical_examples(tree, tok):
    spec = ExampleSpec(seq_len=96, max_middle=16, window_chars=600)
    cfg = TrainConfig(example=spec, batch=6, seed=7)
    runs = []
    for _ in range(2):
        corpus = load(tree)
        sampler = TextSampler([f.read_text() for f in corpus.train], tok, spec)
        runs.append([batch_at(sampler, cfg, step) for step in range(3)])
    for a, b in zip(*runs):
        for x, y in zip(a, b):
            assert x.equal(y)


def test_tampered_hash_is_an_error_naming_the_file(tree):
    _, _, path = tree
    data = json.loads(path.read_text())
    victim = next(e for e in data["files"] if e["path"] == "goodpkg/core.py")
    victim["sha256"] = "0" * 64
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"goodpkg 1.0: goodpkg/core.py: SHA-256"):
        load(tree)
    corpus = load(tree, allow_missing=True)  # or skipped and counted
    assert corpus.skipped == {"hash_mismatch": 1}
    assert "goodpkg/core.py" not in {f.relpath for f in corpus.train} and len(corpus.train) == 4


def test_changed_file_on_disk_is_caught(tree):
    std, _, _ = tree
    (std / "beta.py").write_text("x = 2\n")
    with pytest.raises(ManifestError, match=rf"python-stdlib {PY}: beta.py: SHA-256"):
        load(tree)


def test_missing_package_and_other_version_are_errors_with_counts(tree):
    std, site, path = tree
    for f in (site / "goodpkg-1.0.dist-info").iterdir():
        f.unlink()
    (site / "goodpkg-1.0.dist-info").rmdir()
    with pytest.raises(ManifestError, match=r"(?s)2 of 7 .*missing_package.*goodpkg is not installed"):
        load(tree)
    with pytest.raises(ManifestError, match=rf"(?s)6 of 7 .*version_mismatch.*needs Python {PY}, this is 3.1.0"):
        load_corpus(path, stdlib_root=std, site_roots=[site], python="3.1.0")


def test_held_out_never_leaks_into_train(tree):
    corpus = load(tree)
    held = {f.sha256 for f in corpus.held_out}
    assert {f.relpath for f in corpus.held_out} == {"json/__init__.py", "cattrs/__init__.py"}
    assert not held & {f.sha256 for f in corpus.train}
    assert not any(f.module in ("json", "cattrs") for f in corpus.train)
    # a manifest that moves a held-out file into train is refused, by package or by content
    _, _, path = tree
    data = json.loads(path.read_text())
    moved = next(e for e in data["files"] if e["path"] == "json/__init__.py")
    moved["split"] = "train"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"python-stdlib:json/__init__.py belongs to a held-out package"):
        load(tree)
    moved.update(split="held_out")
    copy = dict(moved, split="train", package="goodpkg", version="1.0", path="goodpkg/copy.py")
    data["files"].append(copy)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"goodpkg:goodpkg/copy.py has the bytes of a held-out file"):
        load(tree)


def test_committed_manifest_is_valid_and_keeps_held_out_apart():
    path = Path(__file__).parents[2] / "training" / "corpus_manifest.json"
    if not path.is_file():
        pytest.skip("no committed manifest")
    data = read(path)  # structure and held-out rules; the files themselves are checked by `manifest check`
    assert data["held_out"]["stdlib_modules"] and data["totals"]["train"]["files"] == sum(
        e["split"] == "train" for e in data["files"])
    assert len(path.read_text().splitlines()) < len(data["files"]) + 30  # one line per file


def test_examples_are_a_function_of_seed_and_step(tok):
    texts = [CODE.format(name=n) * 3 for n in ("a", "b", "c")]
    spec = ExampleSpec(seq_len=96, max_middle=16, window_chars=600)
    sampler = TextSampler(texts, tok, spec)
    cfg = TrainConfig(example=spec, batch=4, seed=1)
    late = batch_at(sampler, cfg, 5)
    for step in range(5):
        batch_at(sampler, cfg, step)
    assert all(x.equal(y) for x, y in zip(late, batch_at(sampler, cfg, 5)))
    assert not batch_at(sampler, cfg, 4)[0].equal(late[0]) or not np.array_equal(
        batch_at(sampler, cfg, 4)[1].numpy(), late[1].numpy())


def test_a_pack_rebuilds_the_identical_corpus_where_nothing_is_installed(tree, tok, tmp_path):
    std, site, path = tree
    pack = tmp_path / "out" / "corpus.tar.xz"
    write_pack(path, pack, stdlib_root=std, site_roots=[site], python=PY)
    here = load(tree)
    # elsewhere: none of the packages, another Python; the pack alone must give the same splits and examples
    there = load_corpus(path, stdlib_root=tmp_path / "none", site_roots=[], python="3.99.0", pack=pack)
    for split in ("train", "held_out"):
        assert _totals(getattr(there, split)) == _totals(getattr(here, split))
    assert [f.read_text() for f in there.train] == [f.read_text() for f in here.train]
    assert all(f.path.is_relative_to(tmp_path / "out" / "corpus.d") for f in there.train)
    spec = ExampleSpec(seq_len=96, max_middle=16, window_chars=600)
    cfg = TrainConfig(example=spec, batch=6, seed=7)
    a = TextSampler([f.read_text() for f in here.train], tok, spec)
    b = TextSampler([f.read_text() for f in there.train], tok, spec)
    assert all(x.equal(y) for x, y in zip(batch_at(a, cfg, 2), batch_at(b, cfg, 2)))


def test_a_pack_is_hash_checked_and_a_missing_pack_is_a_clear_error(tree, tmp_path):
    std, site, path = tree
    with pytest.raises(ManifestError, match=r"--pack .*nope.tar.xz: no such file .*manifest pack"):
        load_corpus(path, pack=tmp_path / "nope.tar.xz")
    pack = tmp_path / "corpus.tar.xz"
    write_pack(path, pack, stdlib_root=std, site_roots=[site], python=PY)
    load_corpus(path, pack=pack)
    (tmp_path / "corpus.d" / "goodpkg" / "goodpkg" / "core.py").write_text("x = 1\n")  # edited after unpacking
    with pytest.raises(ManifestError, match=r"goodpkg 1.0: goodpkg/core.py: SHA-256 .* in the pack"):
        load_corpus(path, pack=pack)
    assert load_corpus(path, pack=pack, allow_missing=True).skipped == {"hash_mismatch": 1}
    (tmp_path / "corpus.tar.xz").write_bytes(b"not a tar")
    with pytest.raises(ManifestError, match=r"not a readable corpus pack"):
        load_corpus(path, pack=pack)
