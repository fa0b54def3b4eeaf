"""Naming checkpoints: Hugging Face repo ids, revisions and cache folders resolve in a cache built in
tmp_path (the layout huggingface_hub.snapshot_download leaves), offline; what is missing says so."""

import json

import pytest

from dg_lsp.engine import hub
from dg_lsp.engine.config import load_config
from dg_lsp.engine.engine import load
from dg_lsp.engine.errors import CheckpointError, ConfigError
from dg_lsp.engine.request import InfillRequest
from dg_lsp.engine.testing import cache_checkpoint, write_tiny_checkpoint

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", "dg", seed=2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache that HF_HUB_CACHE points at, with the Hub switched off."""
    root = tmp_path / "hf" / "hub"
    root.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_repo_id_loads_from_the_cache_and_infills(cache, tiny):
    snapshot = cache_checkpoint(cache, "org/tiny", tiny, revision=REV)
    eng = load("org/tiny", device="cpu")
    assert eng.cfg.name == "org/tiny" and eng.cfg.family.name == "dg"
    result = eng.complete(InfillRequest.at_cursor("def main():\n    ", "\n    return 0\n", 6))
    assert len(result.texts) == 1 and result.steps >= 1
    assert hub.resolve_model("org/tiny") == snapshot


def test_revision_tag_short_hash_and_cache_folder_resolve_to_the_snapshot(cache, tiny):
    snapshot = cache_checkpoint(cache, "org/tiny", tiny, revision=REV, refs=("main", "v1"))
    for spec in (f"org/tiny@{REV}", "org/tiny@v1", f"org/tiny@{REV[:7]}", "org/tiny@main",
                 str(cache / "models--org--tiny")):
        assert hub.resolve_model(spec) == snapshot, spec
    assert load(cache / "models--org--tiny", device="cpu").cfg.name == "org/tiny"


def test_cache_dir_can_be_passed_and_hf_home_is_honoured(tmp_path, tiny, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    snapshot = cache_checkpoint(elsewhere, "org/tiny", tiny, revision=REV)
    assert hub.resolve_model("org/tiny", cache_dir=elsewhere) == snapshot
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"


def test_model_not_in_the_cache_says_where_it_looked_and_how_to_get_it(cache):
    with pytest.raises(CheckpointError) as err:
        load("org/absent", device="cpu")
    message = str(err.value)
    assert f"org/absent is not in the Hugging Face cache at {cache}" in message
    assert "dg-lsp pull org/absent" in message


def test_missing_revision_lists_the_cached_ones(cache, tiny):
    cache_checkpoint(cache, "org/tiny", tiny, revision=REV, refs=("main", "v1"))
    with pytest.raises(CheckpointError) as err:
        hub.resolve_model("org/tiny@v2")
    message = str(err.value)
    assert "revision v2 is not in the Hugging Face cache" in message
    assert f"main -> {REV[:7]}" in message and f"v1 -> {REV[:7]}" in message
    assert "dg-lsp pull org/tiny@v2" in message


@pytest.mark.parametrize("victim", ["tokenizer.json", "model.safetensors"])
def test_partial_snapshot_names_the_missing_file(cache, tiny, victim):
    snapshot = cache_checkpoint(cache, "org/tiny", tiny, revision=REV)
    (snapshot / victim).unlink()
    with pytest.raises(CheckpointError) as err:
        load("org/tiny", device="cpu")
    assert "partial snapshot" in str(err.value) and f"missing {victim}" in str(err.value)
    assert "dg-lsp pull org/tiny" in str(err.value)


def test_partial_snapshot_names_a_missing_shard_and_a_missing_blob(cache, tmp_path):
    sharded = write_tiny_checkpoint(tmp_path / "sharded", "dg", shard_bytes=40_000)
    snapshot = cache_checkpoint(cache, "org/sharded", sharded, revision=REV)
    shard = sorted(snapshot.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"missing {shard.name} \\(named by model.safetensors.index.json\\)"):
        hub.resolve_model("org/sharded")
    blob = (snapshot / "tokenizer.json").resolve()  # an interrupted download: the link is there, its blob not
    blob.unlink()
    with pytest.raises(CheckpointError, match="missing tokenizer.json"):
        hub.resolve_model("org/sharded")


def test_a_spec_that_is_neither_a_path_nor_a_repo_id(cache):
    for spec in ("no//such/thing", "org/name@", "a/b/c"):
        with pytest.raises(CheckpointError) as err:
            hub.resolve_model(spec)
        assert spec in str(err.value) and "org/name[@revision]" in str(err.value)


def test_open_dcoder_is_recognised_by_its_repo_id_only(cache, tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "odc", "open-dcoder", seed=1)
    raw = json.loads((ckpt / "config.json").read_text())
    raw.pop("dg_family")  # as published: a plain Qwen2 config
    (ckpt / "config.json").write_text(json.dumps(raw))
    snapshot = cache_checkpoint(cache, "fredzzp/open-dcoder-0.5B", ckpt, revision=REV)
    assert load("fredzzp/open-dcoder-0.5B", device="cpu").cfg.family.name == "open-dcoder"
    assert load_config(snapshot, repo_id=hub.repo_id_of(snapshot)).family.name == "open-dcoder"
    with pytest.raises(ConfigError) as err:  # the same files in a plain directory: no repo id, no guess
        load(ckpt, device="cpu")
    assert "--family" in str(err.value) and "model.family" in str(err.value)
    assert load(ckpt, device="cpu", family="open-dcoder").cfg.family.name == "open-dcoder"


def test_describe_and_list_cached_models(cache, tiny):
    cache_checkpoint(cache, "org/tiny", tiny, revision=REV)
    nomodel = cache_checkpoint(cache, "org/tokenizer-only", tiny, revision=REV)
    (nomodel / "config.json").unlink()
    root, rows, warnings = hub.cached_models()
    assert root == cache and warnings == []
    by_name = {row.name: row for row in rows}
    ok = by_name["org/tiny"]
    assert ok.usable and ok.family == "dg" and ok.revision == REV and ok.refs == ("main",)
    assert ok.params == load_config(tiny).num_params() and ok.dtype == "float32" and ok.size_on_disk > 0
    assert not by_name["org/tokenizer-only"].usable and "no config.json" in by_name["org/tokenizer-only"].problem
