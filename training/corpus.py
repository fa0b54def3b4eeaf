"""Permissively licensed Python source for training the embedded model, split into train and held-out.

Sources, both found through the running interpreter (no hard-coded paths):

* the standard library, ``sysconfig.get_paths()["stdlib"]``, licensed PSF-2.0;
* installed distributions, found with ``importlib.metadata`` under the site directories, each kept only if
  its license resolves to a permissive one (see ``LICENSE_RULE``); their files come from RECORD.

Files are kept only if they are ``.py``, at most ``MAX_FILE_BYTES``, valid UTF-8, non-empty, outside test,
vendored and cache directories, and do not look generated (``_pb2.py``, a line over ``MAX_LINE_CHARS``,
or a "generated / do not edit" marker in the first lines). Identical files are kept once, by SHA-256;
a file whose content is held out is never kept in train, whichever package it came from.

The held-out set (``DEFAULT_HELD_OUT``) is named, fixed, and never trained on. Order is deterministic:
files sort by (package, relative path), packages by normalised name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import site
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

STDLIB = "python-stdlib"
STDLIB_LICENSE = "PSF-2.0"

MAX_FILE_BYTES = 512 * 1024
MAX_LINE_CHARS = 1000  # hand-written Python stays far below; data tables and minified blobs do not
HEADER_LINES = 10  # where a "generated" marker is looked for
SKIP_DIRS = frozenset(
    {
        "test", "tests", "idle_test",  # test suites (stdlib test/, idlelib/idle_test, lib2to3/tests, pkg/tests)
        "_vendor", "vendor", "_vendored", "vendored", "third_party", "_third_party",  # copies of others' code
        "__pycache__", "site-packages", "dist-packages",
    }
)  # fmt: skip
# a generator's banner: in a comment, or unmistakable anywhere (stdlib codecs: "generated from X with gencodec.py")
_GENERATED_COMMENT = re.compile(r"#.*(?:auto-?generated|generated (?:by|from|with))", re.IGNORECASE)
_GENERATED_ANYWHERE = re.compile(r"do not (?:edit|modify)\b|generated (?:by|from) .* with \S+\.py\b", re.IGNORECASE)

# SPDX ids we train on. MIT / BSD / Apache-2.0 / PSF / ISC / Unlicense families, plus the few equally
# permissive ids that appear inside AND-expressions of common wheels (numpy, torch, regex, pillow).
PERMISSIVE_SPDX = frozenset(
    {
        "MIT", "MIT-0", "MIT-CMU", "BSD", "0BSD", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "PSF-2.0",
        "Python-2.0", "Python-2.0.1", "CNRI-Python", "ISC", "Unlicense", "Zlib", "BSL-1.0", "CC0-1.0",
    }
)  # fmt: skip
_SPDX_CANON = {s.lower(): s for s in PERMISSIVE_SPDX} | {"mpl-2.0": "MPL-2.0"}
_SPDX_COPYLEFT = re.compile(r"^(?:A?GPL|LGPL|MPL|EPL|EUPL|CDDL|OSL|CPL|SSPL|CC-BY-(?:NC|SA))", re.IGNORECASE)

LICENSE_RULE = (
    "A distribution is kept only if its license resolves to permissive SPDX ids: "
    + ", ".join(sorted(PERMISSIVE_SPDX))
    + ". Resolution order: the License-Expression field (SPDX; AND needs every part permissive, OR needs one, "
    "WITH exceptions only add permissions), else the 'License ::' trove classifiers (every one must be "
    "permissive), else the free-text License field (a short name or SPDX expression, or the first line of a "
    "full license text). Anything unresolved is excluded. MPL-2.0 is excluded: it is file-level copyleft, "
    "and we ship weights learned from the text. The standard library is PSF-2.0."
)

_CLASSIFIER_SPDX = {
    "MIT License": "MIT",
    "MIT No Attribution License (MIT-0)": "MIT-0",
    "BSD License": "BSD",
    "Zero-Clause BSD (0BSD)": "0BSD",
    "Apache Software License": "Apache-2.0",
    "Python Software Foundation License": "PSF-2.0",
    "ISC License (ISCL)": "ISC",
    "The Unlicense (Unlicense)": "Unlicense",
    "zlib/libpng License": "Zlib",
    "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
}

# free-text License field, after _license_key(): words only, "license"/"the"/"version"/... dropped
_LICENSE_ALIASES = {
    "mit": "MIT",
    "expat": "MIT",
    "bsd": "BSD",
    "new bsd": "BSD-3-Clause",
    "modified bsd": "BSD-3-Clause",
    "bsd 3 clause": "BSD-3-Clause",
    "3 clause bsd": "BSD-3-Clause",
    "bsd 2 clause": "BSD-2-Clause",
    "2 clause bsd": "BSD-2-Clause",
    "simplified bsd": "BSD-2-Clause",
    "apache": "Apache-2.0",
    "apache 2": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "asl 2.0": "Apache-2.0",
    "psf": "PSF-2.0",
    "psfl": "PSF-2.0",
    "python foundation": "PSF-2.0",
    "isc": "ISC",
    "isc iscl": "ISC",
    "unlicense": "Unlicense",
    "mpl 2.0": "MPL-2.0",
    "mozilla public 2.0": "MPL-2.0",
}
_KEY_STOPWORDS = frozenset({"license", "licence", "the", "version", "v", "software"})


@dataclass(frozen=True)
class HeldOut:
    """Never trained on: whole top-level stdlib modules and whole distributions (by normalised name)."""

    stdlib_modules: tuple[str, ...] = ("email", "html", "http", "json")
    distributions: tuple[str, ...] = ("cattrs",)


DEFAULT_HELD_OUT = HeldOut()


@dataclass(frozen=True)
class License:
    expression: str  # SPDX-like, e.g. "MIT", "Apache-2.0 OR BSD-2-Clause"; "UNKNOWN" when unresolved
    source: str  # "License-Expression", "classifiers", "License", "stdlib" or "none"
    permissive: bool


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute, on this machine
    relpath: str  # POSIX path inside the stdlib / site directory: stable across machines
    package: str  # distribution name as its metadata spells it, or STDLIB
    version: str
    license: str
    sha256: str
    size: int  # bytes

    @property
    def module(self) -> str:
        """Top-level import name: ``email/parser.py`` -> ``email``, ``abc.py`` -> ``abc``."""
        return PurePosixPath(self.relpath).parts[0].removesuffix(".py")

    def read_text(self) -> str:
        """The file as text, byte for byte (no newline translation); raises if it changed since collect."""
        return self.path.read_bytes().decode("utf-8")


@dataclass(frozen=True)
class ExcludedPackage:
    name: str
    version: str
    license: str
    reason: str


@dataclass
class Corpus:
    train: list[SourceFile]
    held_out: list[SourceFile]
    held_out_spec: HeldOut
    excluded_packages: list[ExcludedPackage] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> files
    missing_held_out: list[str] = field(default_factory=list)  # named held-out distributions not installed


# ---------------------------------------------------------------------------------------------- collect


def collect(
    held_out: HeldOut = DEFAULT_HELD_OUT,
    *,
    stdlib_root: Path | None = None,
    site_roots: Iterable[Path] | None = None,
    include_stdlib: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Corpus:
    """Scan the stdlib and permissive distributions; return deduplicated train / held-out file lists.

    ``stdlib_root`` and ``site_roots`` default to this interpreter's (``default_stdlib_root``,
    ``default_site_roots``); tests pass small temporary trees.
    """
    say = progress or (lambda _msg: None)
    start = time.monotonic()
    skipped: Counter[str] = Counter()
    candidates: list[SourceFile] = []

    if include_stdlib:
        root = Path(stdlib_root) if stdlib_root is not None else default_stdlib_root()
        found = list(_scan_files(_walk_py(root), STDLIB, platform.python_version(), STDLIB_LICENSE, skipped))
        candidates += found
        say(f"stdlib {root}: kept {len(found)} files, {_mb(found)} ({time.monotonic() - start:.1f}s)")

    roots = [Path(r) for r in site_roots] if site_roots is not None else default_site_roots()
    excluded: list[ExcludedPackage] = []
    dists = _distributions(roots)
    for dist in dists:
        name, version = dist.metadata["Name"], dist.version
        lic = resolve_license(dist.metadata)
        if not lic.permissive:
            excluded.append(ExcludedPackage(name, version, lic.expression, f"license not permissive ({lic.source})"))
            continue
        files = [(Path(str(dist.locate_file(f))), f.as_posix()) for f in dist.files or () if _is_package_py(f)]
        found = list(_scan_files(files, name, version, lic.expression, skipped))
        if not found and not dist.files:
            excluded.append(ExcludedPackage(name, version, lic.expression, "no RECORD file list"))
        candidates += found
    say(
        f"site {', '.join(map(str, roots))}: {len(dists)} distributions, {len(excluded)} excluded, "
        f"{len(candidates)} files kept so far ({time.monotonic() - start:.1f}s)"
    )

    held_names = {_normalise(d) for d in held_out.distributions}

    def is_held(f: SourceFile) -> bool:
        return f.module in held_out.stdlib_modules if f.package == STDLIB else _normalise(f.package) in held_names

    candidates.sort(key=lambda f: (_normalise(f.package), f.relpath))
    held = _dedup([f for f in candidates if is_held(f)], set(), skipped)
    train = _dedup([f for f in candidates if not is_held(f)], {f.sha256 for f in held}, skipped)
    installed = {_normalise(d.metadata["Name"]) for d in dists}
    missing = sorted(d for d in held_out.distributions if _normalise(d) not in installed)
    return Corpus(train, held, held_out, excluded, dict(sorted(skipped.items())), missing)


def default_stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def default_site_roots() -> list[Path]:
    """This interpreter's site directories (venv or system), in import order, existing ones only."""
    paths = sysconfig.get_paths()
    candidates = [paths["purelib"], paths["platlib"], *getattr(site, "getsitepackages", list)()]
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    seen: list[Path] = []
    for c in candidates:
        p = Path(c).resolve()
        if p.is_dir() and p not in seen:
            seen.append(p)
    return seen


def _distributions(roots: list[Path]) -> list[importlib.metadata.Distribution]:
    """One distribution per normalised name (the first root wins, as for imports), sorted by name."""
    by_name: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions(path=[str(r) for r in roots]):
        name = dist.metadata["Name"]
        if name and _normalise(name) not in by_name:
            by_name[_normalise(name)] = dist
    return [by_name[k] for k in sorted(by_name)]


def _walk_py(root: Path) -> Iterator[tuple[Path, str]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath, name)
                yield path, path.relative_to(root).as_posix()


def _is_package_py(f: PurePosixPath) -> bool:
    """A RECORD entry that is a .py file of the package itself (not metadata, not outside the site dir)."""
    parts = PurePosixPath(f).parts
    return (
        parts[-1].endswith(".py")
        and ".." not in parts
        and not PurePosixPath(f).is_absolute()
        and not parts[0].endswith((".dist-info", ".egg-info", ".data"))
        and not parts[0].startswith("__editable__")
    )


def _scan_files(
    files: Iterable[tuple[Path, str]],
    package: str,
    version: str,
    license: str,
    skipped: Counter[str],
) -> Iterator[SourceFile]:
    for path, relpath in files:
        reason = skip_path_reason(relpath)
        if reason is None:
            try:
                size = path.stat().st_size
            except OSError:
                reason = "missing"
            else:
                reason = "too_large" if size > MAX_FILE_BYTES else None
        if reason is None:
            data = path.read_bytes()
            reason = skip_content_reason(data)
        if reason is not None:
            skipped[reason] += 1
            continue
        yield SourceFile(path, relpath, package, version, license, hashlib.sha256(data).hexdigest(), len(data))


def skip_path_reason(relpath: str) -> str | None:
    """Why a file is skipped from its path alone, or None. ``relpath`` is POSIX, relative to its root."""
    parts = PurePosixPath(relpath).parts
    if not parts[-1].endswith(".py"):
        return "not_py"
    if any(p in SKIP_DIRS for p in parts[:-1]):
        return "test_or_vendored_dir"
    if parts[-1].endswith(("_pb2.py", "_pb2_grpc.py")):
        return "generated"
    return None


def skip_content_reason(data: bytes) -> str | None:
    """Why a file is skipped from its bytes, or None."""
    if len(data) > MAX_FILE_BYTES:
        return "too_large"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    if not text.strip():
        return "empty"
    lines = text.splitlines()
    if max(map(len, lines)) > MAX_LINE_CHARS:
        return "long_lines"
    if any(_GENERATED_COMMENT.match(s.lstrip()) or _GENERATED_ANYWHERE.search(s) for s in lines[:HEADER_LINES]):
        return "generated"
    return None


def _dedup(files: list[SourceFile], taken: set[str], skipped: Counter[str]) -> list[SourceFile]:
    """Keep the first file of each content hash not already in ``taken`` (which is updated)."""
    out = []
    for f in files:
        if f.sha256 in taken:
            skipped["duplicate"] += 1
            continue
        taken.add(f.sha256)
        out.append(f)
    return out


# --------------------------------------------------------------------------------------------- licenses


def resolve_license(metadata: importlib.metadata.PackageMetadata) -> License:
    """The distribution's license per ``LICENSE_RULE``."""
    expression = (metadata.get("License-Expression") or "").strip()
    if expression:
        permissive = _spdx_permissive(expression)
        return License(expression, "License-Expression", bool(permissive))

    classifiers = [c for c in metadata.get_all("Classifier") or [] if c.startswith("License ::")]
    named = [c.split(" :: ")[-1] for c in classifiers if c.count(" :: ") >= 2 or "OSI Approved" not in c]
    if named:
        ids = [_CLASSIFIER_SPDX.get(n, n) for n in named]
        return License(", ".join(ids), "classifiers", all(i in PERMISSIVE_SPDX for i in ids))

    text = (metadata.get("License") or "").strip()
    if text:
        spdx = _license_from_text(text)
        if spdx is not None:
            return License(spdx, "License", bool(_spdx_permissive(spdx)))
    return License("UNKNOWN", "none", False)


def _license_from_text(text: str) -> str | None:
    """An SPDX expression for a free-text License field, or None if unrecognised."""
    first = next(line.strip() for line in text.splitlines() if line.strip())
    for candidate in (text, first) if "\n" in text else (text,):
        if _spdx_permissive(candidate, strict=True) is not None:
            return candidate
        alias = _LICENSE_ALIASES.get(_license_key(candidate))
        if alias is not None:
            return alias
    return None


def _license_key(text: str) -> str:
    words = re.sub(r"[^a-z0-9.]+", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _KEY_STOPWORDS).rstrip(".")


def _spdx_permissive(expression: str, strict: bool = False) -> bool | None:
    """Whether an SPDX expression allows us to train on the code.

    Unknown ids count as not permissive; with ``strict`` an id that is not a known SPDX id, or a parse
    error, returns None instead (so free text such as "BSD License" falls through to the alias table).
    """
    tokens = re.findall(r"\(|\)|[^\s()]+", expression)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def or_expr() -> bool:
        value = and_expr()
        while (peek() or "").upper() == "OR":
            take()
            value = and_expr() or value  # evaluate both sides: parse errors must surface
        return value

    def and_expr() -> bool:
        value = atom()
        while (peek() or "").upper() == "AND":
            take()
            value = atom() and value
        return value

    def atom() -> bool:
        tok = take() if peek() is not None else ""
        if tok == "(":
            value = or_expr()
            if take() != ")":
                raise ValueError("unbalanced parenthesis")
            return value
        if tok in ("", ")") or tok.upper() in ("AND", "OR", "WITH"):
            raise ValueError(f"unexpected {tok!r}")
        ident = tok.removesuffix("+")
        if (peek() or "").upper() == "WITH":  # exceptions only grant extra permissions
            take()
            take()
        known = ident.lower() in _SPDX_CANON or _SPDX_COPYLEFT.match(ident)
        if strict and not known:
            raise ValueError(f"unknown id {ident!r}")
        return _SPDX_CANON.get(ident.lower()) in PERMISSIVE_SPDX

    try:
        value = or_expr()
        if peek() is not None:
            raise ValueError(f"trailing {peek()!r}")
        return value
    except (ValueError, IndexError):
        return None if strict else False


# --------------------------------------------------------------------------------------------- manifest


def manifest(corpus: Corpus) -> dict:
    """JSON-ready description of the corpus: packages with version, license, split, file and byte counts."""
    packages = []
    for split, files in (("train", corpus.train), ("held_out", corpus.held_out)):
        groups: dict[str, list[SourceFile]] = {}
        for f in files:
            groups.setdefault(f.package, []).append(f)
        for name in sorted(groups, key=_normalise):
            fs = groups[name]
            entry = {
                "name": name,
                "version": fs[0].version,
                "license": fs[0].license,
                "split": split,
                "files": len(fs),
                "bytes": sum(f.size for f in fs),
            }
            if name == STDLIB and split == "held_out":
                entry["modules"] = sorted({f.module for f in fs})
            packages.append(entry)
    return {
        "format": 1,
        "python": platform.python_version(),
        "license_rule": LICENSE_RULE,
        "held_out": {
            "stdlib_modules": list(corpus.held_out_spec.stdlib_modules),
            "distributions": list(corpus.held_out_spec.distributions),
            "missing": corpus.missing_held_out,
        },
        "totals": {split: _totals(files) for split, files in (("train", corpus.train), ("held_out", corpus.held_out))},
        "packages": packages,
        "excluded_packages": [vars(e) for e in corpus.excluded_packages],
        "skipped_files": corpus.skipped,
    }


def write_manifest(corpus: Corpus, path: Path | str, extra: dict | None = None) -> dict:
    """Write ``manifest(corpus)`` (plus ``extra`` top-level keys) as JSON to ``path``; return it."""
    data = manifest(corpus) | (extra or {})
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data


def _totals(files: list[SourceFile]) -> dict:
    """Counts plus a fingerprint of (relpath, sha256) pairs: equal fingerprints mean identical splits."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.package}\0{f.relpath}\0{f.sha256}\n".encode())
    return {"files": len(files), "bytes": sum(f.size for f in files), "fingerprint": digest.hexdigest()[:16]}


def _normalise(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _mb(files: list[SourceFile]) -> str:
    return f"{sum(f.size for f in files) / 1e6:.1f} MB"


if __name__ == "__main__":  # a quick look: python -m dg_lsp.training.corpus
    c = collect(progress=lambda m: print(m, file=sys.stderr))
    print(json.dumps(manifest(c)["totals"], indent=2))
