"""A pinned training corpus: every file, train and held-out, with its package, version, license, path and hash.

``training/corpus_manifest.json`` is written once by ``write`` from a scan (training/corpus.py) and checked
in. ``load_corpus`` rebuilds exactly that corpus on another machine, whatever else is installed there: each
file is found through its named package (the stdlib directory of this interpreter, or the installed
distribution of that name, via its metadata) and must have the pinned SHA-256.

Policy when something does not match (a package not installed, another version, a file missing or with
other bytes): by default a ``ManifestError`` that names every such file (the first 20) and counts them by
reason, so one run shows all that must be installed. With ``allow_missing`` those files are skipped
instead and the counts are reported (``Corpus.skipped``): the result is a subset of the pinned corpus,
never a different one. Held-out stays held out: the manifest names the held-out modules and
distributions, and loading refuses a manifest whose train split holds a file of a held-out package or
the bytes of any held-out file.

Format (JSON, one line per file so diffs stay readable)::

    {"format": "dg-corpus-manifest/1", "python": "3.12.3", "held_out": {...}, "totals": {...},
     "files": [
      {"split": "train", "package": "numpy", "version": "2.3.1", "license": "BSD-3-Clause", "path": "numpy/core.py", "sha256": "…", "bytes": 1234},
      …
     ]}

A machine without the pinned packages (a GPU box with only torch, or another Python, whose stdlib files
differ) rebuilds from a *pack* instead: ``pack`` writes every pinned file into one tar.xz (~1/6 of the
bytes), ``load_corpus(pack=...)`` unpacks it once beside itself and reads each file from there, checking
the same hashes, so the corpus is the same whatever that machine has installed.

CLI::

    python -m dg_lsp.training.manifest write [--out training/corpus_manifest.json]   # scan and pin
    python -m dg_lsp.training.manifest check [--manifest ...] [--allow-missing] [--pack P]  # rebuild, verify
    python -m dg_lsp.training.manifest pack --out runs/corpus.tar.xz                  # for another machine
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from dg_lsp.training.corpus import (
    STDLIB,
    Corpus,
    HeldOut,
    SourceFile,
    _normalise,
    _totals,
    collect,
    default_site_roots,
    default_stdlib_root,
)

FORMAT = "dg-corpus-manifest/1"
DEFAULT_PATH = Path(__file__).with_name("corpus_manifest.json")
FIELDS = ("split", "package", "version", "license", "path", "sha256", "bytes")
SPLITS = ("train", "held_out")
SHOWN_PROBLEMS = 20


class ManifestError(Exception):
    """The manifest cannot be rebuilt as pinned, or is not a valid manifest; the message names the files."""


# ------------------------------------------------------------------------------------------------ write


def manifest_text(corpus: Corpus, python: str) -> str:
    """The manifest of a scanned corpus as JSON text, one file per line."""
    head = {
        "format": FORMAT,
        "python": python,
        "held_out": {"stdlib_modules": list(corpus.held_out_spec.stdlib_modules),
                     "distributions": list(corpus.held_out_spec.distributions)},
        "totals": {split: _totals(files) for split, files in (("train", corpus.train), ("held_out", corpus.held_out))},
    }
    lines = [
        json.dumps({"split": split, "package": f.package, "version": f.version, "license": f.license,
                    "path": f.relpath, "sha256": f.sha256, "bytes": f.size}, ensure_ascii=False)
        for split, files in (("train", corpus.train), ("held_out", corpus.held_out))
        for f in files
    ]
    body = json.dumps(head, indent=1)[:-2]  # drop the closing "\n}" to append the file list
    return body + ',\n "files": [\n' + ",\n".join(lines) + "\n ]\n}\n"


def write(path: Path | str, corpus: Corpus, python: str) -> dict:
    text = manifest_text(corpus, python)
    Path(path).write_text(text, encoding="utf-8")
    return json.loads(text)


# ------------------------------------------------------------------------------------------------- load


def read(path: Path | str) -> dict:
    """Parse and validate a manifest's structure (not the files)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: not a readable JSON manifest ({exc})") from exc
    if data.get("format") != FORMAT:
        raise ManifestError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    for i, entry in enumerate(data.get("files", [])):
        missing = [k for k in FIELDS if k not in entry]
        if missing or entry["split"] not in SPLITS:
            raise ManifestError(f"{path}: file entry {i} ({entry.get('path')!r}): missing {missing} or bad split "
                                f"{entry.get('split')!r} (expected one of {SPLITS})")
    check_held_out(data)
    return data


def check_held_out(data: dict) -> None:
    """Raise unless no train entry belongs to a held-out package or repeats a held-out file's bytes."""
    spec = data["held_out"]
    modules, dists = set(spec["stdlib_modules"]), {_normalise(d) for d in spec["distributions"]}
    held_hashes = {e["sha256"] for e in data["files"] if e["split"] == "held_out"}
    for e in data["files"]:
        if e["split"] != "train":
            continue
        top = Path(e["path"]).parts[0].removesuffix(".py")
        if (e["package"] == STDLIB and top in modules) or (e["package"] != STDLIB and _normalise(e["package"]) in dists):
            raise ManifestError(f"train entry {e['package']}:{e['path']} belongs to a held-out package")
        if e["sha256"] in held_hashes:
            raise ManifestError(f"train entry {e['package']}:{e['path']} has the bytes of a held-out file")


def load_corpus(
    path: Path | str = DEFAULT_PATH,
    *,
    allow_missing: bool = False,
    stdlib_root: Path | None = None,
    site_roots: Iterable[Path] | None = None,
    python: str | None = None,
    pack: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Corpus:
    """Rebuild the pinned corpus from the files installed here, or from `pack` (see the module doc).

    ``stdlib_root``, ``site_roots`` and ``python`` (the stdlib's version) default to this interpreter's;
    tests pass small temporary trees.
    """
    import platform

    say = progress or (lambda _msg: None)
    start = time.monotonic()
    data = read(path)
    if pack is not None:
        pack = Path(pack)
        root = _unpack(pack, say)
        return _verify(data, f"{path} (pack {pack})", lambda e: _locate_in_pack(e, root, pack),
                       f" in the pack {pack}", allow_missing, say, start)
    python = python or platform.python_version()
    std = Path(stdlib_root) if stdlib_root is not None else default_stdlib_root()
    roots = [Path(r) for r in site_roots] if site_roots is not None else default_site_roots()
    dists: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions(path=[str(r) for r in roots]):
        name = dist.metadata["Name"]
        if name:
            dists.setdefault(_normalise(name), dist)  # the first root wins, as for imports
    return _verify(data, path, lambda e: _locate(e, std, python, dists), "", allow_missing, say, start)


def _verify(data: dict, path, locate, source: str, allow_missing: bool, say, start) -> Corpus:
    """Every manifest entry found by `locate` (entry -> path on disk, or why not) and hash-checked."""
    splits: dict[str, list[SourceFile]] = {s: [] for s in SPLITS}
    problems: list[tuple[str, str]] = []  # (reason, message)
    for n, e in enumerate(data["files"]):
        rel = Path(e["path"])
        if rel.is_absolute() or ".." in rel.parts:
            found, problem = None, ("bad_path", f"{_label(e)}: path must be relative and inside its package")
        else:
            found, problem = locate(e)
        if problem is None:
            blob = found.read_bytes()
            digest = hashlib.sha256(blob).hexdigest()
            if digest != e["sha256"]:
                problem = ("hash_mismatch", f"{_label(e)}: SHA-256 {digest[:16]}…{source}, "
                                            f"pinned {e['sha256'][:16]}… ({found})")
        if problem is not None:
            problems.append(problem)
            continue
        splits[e["split"]].append(SourceFile(found, e["path"], e["package"], e["version"], e["license"],
                                             e["sha256"], len(blob)))
        if (n + 1) % 2000 == 0:
            say(f"verified {n + 1}/{len(data['files'])} files ({time.monotonic() - start:.1f}s)")
    return _finish(data, path, splits, problems, allow_missing, say, start)


def _label(entry: dict) -> str:
    return f"{entry['package']} {entry['version']}: {entry['path']}"


def _finish(data, path, splits, problems, allow_missing, say, start) -> Corpus:
    skipped = dict(sorted(Counter(reason for reason, _ in problems).items()))
    if problems and not allow_missing:
        shown = "\n  ".join(msg for _, msg in problems[:SHOWN_PROBLEMS])
        more = f"\n  … and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        raise ManifestError(f"{path}: {len(problems)} of {len(data['files'])} pinned files cannot be used "
                            f"({skipped}); install the named versions, or pass allow_missing to skip them:"
                            f"\n  {shown}{more}")
    spec = HeldOut(tuple(data["held_out"]["stdlib_modules"]), tuple(data["held_out"]["distributions"]))
    say(f"corpus from {path}: train {len(splits['train'])} files, held-out {len(splits['held_out'])}"
        + (f"; skipped {skipped}" if skipped else "") + f" ({time.monotonic() - start:.1f}s)")
    return Corpus(splits["train"], splits["held_out"], spec, [], skipped, [])


def _member(entry: dict) -> str:
    """Where a pinned file lives inside a pack: by package, so two packages' same path never collide."""
    return f"{entry['package']}/{entry['path']}"


def write_pack(path: Path | str, out: Path | str, progress: Callable[[str], None] | None = None, **where) -> dict:
    """Every file of the manifest at `path`, rebuilt and verified here, into the tar.xz `out`."""
    say = progress or (lambda _msg: None)
    corpus = load_corpus(path, progress=say, **where)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    entries = [(f, {"package": f.package, "path": f.relpath}) for f in corpus.train + corpus.held_out]
    with tarfile.open(out, "w:xz") as tar:
        for n, (f, entry) in enumerate(entries):
            info = tar.gettarinfo(str(f.path), arcname=_member(entry))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0  # the same files give the same archive members whoever packs them
            with open(f.path, "rb") as handle:
                tar.addfile(info, handle)
            if (n + 1) % 2000 == 0:
                say(f"packed {n + 1}/{len(entries)} files")
    say(f"wrote {out}: {len(entries)} files, {out.stat().st_size / 2**20:.1f} MiB")
    return {"files": len(entries), "bytes": out.stat().st_size}


def _unpack(pack: Path, say) -> Path:
    """The pack unpacked once into `<pack name>.d/` beside it (reused while the pack is unchanged)."""
    if not pack.is_file():
        raise ManifestError(f"--pack {pack}: no such file (write one with `python -m "
                            f"dg_lsp.training.manifest pack --out {pack}` on a machine that has the packages)")
    root = pack.with_name(pack.name.split(".")[0] + ".d")
    stamp = root / ".unpacked"
    if not stamp.is_file() or stamp.read_text() != f"{pack.stat().st_size} {pack.stat().st_mtime_ns}":
        say(f"unpacking {pack} into {root} ...")
        try:
            with tarfile.open(pack, "r:*") as tar:
                tar.extractall(root, filter="data")  # "data": no absolute paths, links out or devices
        except (tarfile.TarError, OSError) as exc:
            raise ManifestError(f"--pack {pack}: not a readable corpus pack ({exc})") from exc
        stamp.write_text(f"{pack.stat().st_size} {pack.stat().st_mtime_ns}")
    return root


def _locate_in_pack(entry: dict, root: Path, pack: Path) -> tuple[Path | None, tuple[str, str] | None]:
    found = root / _member(entry)
    if not found.is_file():
        return None, ("missing_file", f"{_label(entry)}: not in the pack {pack}")
    return found, None


def _locate(entry: dict, std: Path, python: str, dists: dict) -> tuple[Path | None, tuple[str, str] | None]:
    """The file of a manifest entry on this machine, or the reason and message why it cannot be used."""
    label, rel = _label(entry), Path(entry["path"])  # a safe relative path: checked by _verify
    if entry["package"] == STDLIB:
        if entry["version"] != python:
            return None, ("version_mismatch", f"{label}: needs Python {entry['version']}, this is {python}")
        path = std / rel
    else:
        dist = dists.get(_normalise(entry["package"]))
        if dist is None:
            return None, ("missing_package", f"{label}: distribution {entry['package']} is not installed")
        if dist.version != entry["version"]:
            return None, ("version_mismatch", f"{label}: {entry['package']} {dist.version} is installed")
        path = Path(str(dist.locate_file(entry["path"])))
    if not path.is_file():
        return None, ("missing_file", f"{label}: no such file {path}")
    return path, None


# -------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    import platform

    parser = argparse.ArgumentParser(prog="python -m dg_lsp.training.manifest", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="scan this interpreter's permissive code and pin it")
    w.add_argument("--out", type=Path, default=DEFAULT_PATH)
    c = sub.add_parser("check", help="rebuild the corpus from a manifest and verify every hash")
    c.add_argument("--manifest", type=Path, default=DEFAULT_PATH)
    c.add_argument("--allow-missing", action="store_true")
    c.add_argument("--pack", type=Path, default=None, help="rebuild from this pack instead of the installed packages")
    k = sub.add_parser("pack", help="write every pinned file into one tar.xz, for a machine without the packages")
    k.add_argument("--manifest", type=Path, default=DEFAULT_PATH)
    k.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.command == "write":
        corpus = collect(progress=say)
        data = write(args.out, corpus, platform.python_version())
        say(f"wrote {args.out}: {json.dumps(data['totals'])}")
        return 0
    try:
        if args.command == "pack":
            write_pack(args.manifest, args.out, progress=say)
            return 0
        corpus = load_corpus(args.manifest, allow_missing=args.allow_missing, pack=args.pack, progress=say)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pinned = read(args.manifest)["totals"]
    for split, files in (("train", corpus.train), ("held_out", corpus.held_out)):
        got = _totals(files)
        verdict = "identical" if got["fingerprint"] == pinned[split]["fingerprint"] else "a subset"
        print(f"{split}: {got['files']} files, {got['bytes']:,} bytes ({verdict}: pinned {pinned[split]['files']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
