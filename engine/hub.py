"""Name a checkpoint: a directory, a Hugging Face repo id `org/name[@revision]`, or a cache folder.

Repo ids resolve in the local Hugging Face cache through huggingface_hub, offline unless a download is
asked for. What comes back is always a checkpoint directory: config.json, tokenizer.json and safetensors
weights. Only those kinds of files are ever downloaded, never pickles (*.bin, *.pt).
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dg_lsp.engine.config import GEMMA_FAMILY, config_from_dict, read_config
from dg_lsp.engine.errors import CheckpointError, ConfigError

Progress = Callable[[str, int, int], None]  # as engine.loader.Progress, without importing torch

# what a download fetches: weights as safetensors, configs, tokenizer files (tokenizer.json, vocab.json,
# merges.txt, tokenizer.model)
ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.txt", "tokenizer.model"]
IGNORE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl"]  # pickles are never loaded
EXPECTED = ("a checkpoint directory holding config.json, a Hugging Face repo id org/name[@revision], "
            "or a Hugging Face cache folder models--org--name")
_HEX = re.compile(r"[0-9a-f]{4,40}")


@dataclass(frozen=True)
class RepoSpec:
    repo_id: str
    revision: str | None  # branch, tag or commit hash (a unique prefix of one is enough); None: main

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_repo_spec(spec: str) -> RepoSpec | None:
    """`org/name` or `org/name@revision`, the repo id as huggingface_hub validates it; None if not one."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id, at, revision = spec.partition("@")
    if repo_id.count("/") != 1 or (at and not revision):
        return None
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return RepoSpec(repo_id, revision or None)


def hub_cache_dir() -> Path:
    """The Hugging Face cache: HF_HUB_CACHE, else HF_HOME/hub, else huggingface_hub's default. Read at
    call time: huggingface_hub reads the variables once, at import."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None)
    return Path(os.path.expandvars(os.path.expanduser(env))) if env else Path(constants.HF_HUB_CACHE)


def repo_id_of(path: str | Path) -> str | None:
    """The repo id of a snapshot directory in a Hugging Face cache (.../models--org--name/snapshots/REV)."""
    path = Path(path)
    repo = path.parent.parent.name
    if path.parent.name != "snapshots" or not repo.startswith("models--"):
        return None
    return repo.removeprefix("models--").replace("--", "/")  # repo ids cannot contain "--"


def resolve_model(spec: str | Path, *, download: bool = False, progress: Progress | None = None,
                  cache_dir: str | Path | None = None) -> Path:
    """The checkpoint directory `spec` names. A repo id is looked up in the cache (`cache_dir`, default
    `hub_cache_dir()`), downloaded first when `download` (progress is told before and after)."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: is a file: expected {EXPECTED}")
        if path.name.startswith("models--") and (path / "snapshots").is_dir():
            repo = RepoSpec(path.name.removeprefix("models--").replace("--", "/"), None)
            return _from_cache(repo, path.parent)
        if repo_id_of(path):  # a snapshot directory named directly: it must be whole too
            check_snapshot(path, repo_id_of(path))
        return path
    repo = parse_repo_spec(text)
    if repo is None:
        raise CheckpointError(f"{text}: model directory does not exist: expected {EXPECTED}")
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    if download:
        return _download(repo, cache, progress)
    return _from_cache(repo, cache)


def _from_cache(repo: RepoSpec, cache: Path) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        from huggingface_hub.errors import IncompleteSnapshotError
    except ImportError:  # older huggingface_hub keeps no file listing to compare a snapshot against
        IncompleteSnapshotError = ()
    folder = cache / repo_folder_name(repo_id=repo.repo_id, repo_type="model")
    if not (folder / "snapshots").is_dir():
        raise CheckpointError(f"{repo.repo_id} is not in the Hugging Face cache at {cache} (nor a directory of "
                              f"that name); download it with `dg-lsp pull {repo}`")
    try:
        path = Path(snapshot_download(repo.repo_id, revision=_full_hash(folder, repo.revision), cache_dir=cache,
                                      local_files_only=True, allow_patterns=ALLOW_PATTERNS,
                                      ignore_patterns=IGNORE_PATTERNS))
    except IncompleteSnapshotError as exc:
        raise CheckpointError(f"{repo}: partial snapshot in {folder}: {exc}") from exc
    except LocalEntryNotFoundError as exc:
        raise CheckpointError(
            f"{repo.repo_id}: revision {repo.revision or 'main'} is not in the Hugging Face cache at {cache}; "
            f"the cache has {_cached_revisions(folder)}. Name one of those as {repo.repo_id}@REVISION, or "
            f"download it with `dg-lsp pull {repo}`") from exc
    check_snapshot(path, str(repo))
    return path


def _full_hash(folder: Path, revision: str | None) -> str | None:
    """A unique prefix of a cached commit hash -> the hash (huggingface_hub wants all 40 digits)."""
    if revision is None or not _HEX.fullmatch(revision) or (folder / "refs" / revision).is_file():
        return revision
    matches = [p.name for p in (folder / "snapshots").iterdir() if p.name.startswith(revision)]
    return matches[0] if len(matches) == 1 else revision


def _cached_revisions(folder: Path) -> str:
    refs_dir = folder / "refs"
    refs = {p.relative_to(refs_dir).as_posix(): p.read_text().strip()
            for p in (refs_dir.rglob("*") if refs_dir.is_dir() else []) if p.is_file()}
    snapshots = sorted(p.name for p in (folder / "snapshots").iterdir() if p.is_dir())
    named = [f"{ref} -> {rev[:7]}" for ref, rev in sorted(refs.items())]
    named += [rev[:7] for rev in snapshots if rev not in refs.values()]
    return ", ".join(named) if named else "no revision"


def missing_files(path: Path) -> list[str]:
    """Files the engine needs that a checkpoint directory lacks (shards named by the index included)."""
    missing = [name for name in ("config.json", "tokenizer.json") if not (path / name).is_file()]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a valid shard index (expected a JSON object with "
                                  f"'weight_map'): {exc}") from exc
        missing += [f"{shard} (named by model.safetensors.index.json)" for shard in shards
                    if not (path / shard).is_file()]
    elif not (path / "model.safetensors").is_file():
        pickles = sorted(p.name for p in path.glob("*") if p.suffix in (".bin", ".pt", ".pth"))
        hint = f"; it has {', '.join(pickles)}, but pickle checkpoints are never loaded" if pickles else ""
        missing.append(f"model.safetensors or model.safetensors.index.json{hint}")
    return missing


def check_snapshot(path: Path, name: str) -> None:
    """A snapshot from the cache holds every file the engine reads; else say which ones it lacks."""
    missing = missing_files(path)
    if missing:
        raise CheckpointError(f"{name}: partial snapshot at {path}: missing {'; '.join(missing)}. Download "
                              f"the rest with `dg-lsp pull {name}`")


def _download(repo: RepoSpec, cache: Path, progress: Progress | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise CheckpointError(f"cannot download {repo}: HF_HUB_OFFLINE is set, so the Hugging Face Hub is not "
                              "contacted; unset it to download")
    if progress is not None:
        progress(f"downloading {repo}", 0, 1)
    try:
        path = Path(snapshot_download(repo.repo_id, revision=repo.revision, cache_dir=cache, endpoint=endpoint,
                                      allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS))
    except GatedRepoError as exc:
        raise CheckpointError(f"{repo.repo_id} is gated on {endpoint}: accept its terms on the model page and "
                              "log in with `hf auth login`") from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(f"{repo.repo_id}: no such model on {endpoint} (or it is private: log in with "
                              "`hf auth login`)") from exc
    except RevisionNotFoundError as exc:
        raise CheckpointError(f"{repo.repo_id} has no revision {repo.revision!r} on {endpoint}") from exc
    except Exception as exc:  # no network, refused connection, timeout, Hub error: say which, briefly
        cause = exc.__cause__ or exc  # huggingface_hub wraps a connection error in LocalEntryNotFoundError
        reason = (str(cause).strip().splitlines() or [""])[0]
        raise CheckpointError(f"cannot download {repo} from {endpoint}: {type(cause).__name__}: {reason}. Check "
                              f"the network connection (and HF_ENDPOINT); cache: {cache}") from exc
    if progress is not None:
        progress(f"downloaded {repo}", 1, 1)
    check_snapshot(path, str(repo))
    return path


@dataclass(frozen=True)
class CheckpointInfo:
    """What `dg-lsp models` shows of one checkpoint, read from its config and file headers only."""

    name: str  # repo id, or the directory name
    path: Path
    revision: str | None  # commit hash of a cached snapshot
    refs: tuple[str, ...]
    size_on_disk: int
    family: str | None
    params: int | None
    dtype: str | None
    problem: str | None  # why it cannot be loaded as is; None: usable

    @property
    def usable(self) -> bool:
        return self.problem is None


def describe_checkpoint(path: Path, repo_id: str | None = None, *, revision: str | None = None,
                        refs: tuple[str, ...] = (), size_on_disk: int | None = None) -> CheckpointInfo:
    path = Path(path)
    family = params = dtype = None
    problems = []
    if not (path / "config.json").is_file():
        problems.append("no config.json: not a model checkpoint")
    else:
        try:
            raw = read_config(path)
            dtype = (raw.get("torch_dtype") or raw.get("dtype")) if isinstance(raw, dict) else None
            if isinstance(raw, dict) and raw.get("model_type") == "diffusion_gemma":
                from dg_lsp.engine.gemma_config import SKIPPED_PREFIXES, gemma_config_from_dict

                gemma_config_from_dict(raw)  # validates; its parameters are counted from the weights' headers
                family, params = GEMMA_FAMILY, _safetensors_params(path, skip=SKIPPED_PREFIXES)
            else:
                cfg = config_from_dict(raw, where="config.json", repo_id=repo_id)
                family, params = cfg.family.name, cfg.num_params()
        except ConfigError as exc:
            problems.append(str(exc))
        try:
            missing = missing_files(path)
            problems += [f"missing {'; '.join(missing)}"] if missing else []
        except CheckpointError as exc:
            problems.append(str(exc))
        dtype = dtype or _safetensors_dtype(path)
    if size_on_disk is None:
        size_on_disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return CheckpointInfo(name=repo_id or path.resolve().name, path=path, revision=revision, refs=refs,
                          size_on_disk=size_on_disk, family=family, params=params, dtype=dtype,
                          problem="; ".join(problems) or None)


def cached_models(cache_dir: str | Path | None = None) -> tuple[Path, list[CheckpointInfo], list[str]]:
    """Every model snapshot in the Hugging Face cache (through huggingface_hub.scan_cache_dir), newest
    revision of a repo first, and the scan's warnings (repos it could not read)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.utils import CacheNotFound

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    try:
        scan = scan_cache_dir(cache)
    except CacheNotFound:
        return cache, [], []
    rows = [describe_checkpoint(rev.snapshot_path, repo.repo_id, revision=rev.commit_hash,
                                refs=tuple(sorted(rev.refs)), size_on_disk=rev.size_on_disk)
            for repo in sorted(scan.repos, key=lambda r: r.repo_id.lower()) if repo.repo_type == "model"
            for rev in sorted(repo.revisions, key=lambda r: -r.last_modified)]
    return cache, rows, [str(w) for w in scan.warnings]


_ST_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64", "I8": "int8",
              "U8": "uint8", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _headers(path: Path) -> list[dict]:
    """The JSON headers of the weight files (8-byte length, then JSON); files that cannot be read are left out."""
    out = []
    for file in sorted(path.glob("*.safetensors")):
        try:
            with open(file, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                out.append(json.loads(f.read(min(length, 100_000_000))))
        except (OSError, ValueError, struct.error):
            continue
    return out


def _safetensors_params(path: Path, skip: tuple[str, ...] = ()) -> int | None:
    """Parameters stored in the weight files, tensors under the `skip` prefixes left out."""
    total = 0
    for header in _headers(path):
        for name, meta in header.items():
            if name != "__metadata__" and isinstance(meta, dict) and not name.startswith(skip):
                n = 1
                for d in meta.get("shape", []):
                    n *= d
                total += n
    return total or None


def _safetensors_dtype(path: Path) -> str | None:
    """The most common tensor dtype in the first weight file's header (8-byte length, then JSON)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    try:
        with open(files[0], "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(length, 100_000_000)))
    except (OSError, ValueError, struct.error):
        return None
    counts = Counter(v["dtype"] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict))
    if not counts:
        return None
    top = counts.most_common(1)[0][0]
    return _ST_DTYPES.get(top, top.lower())
