"""`dg-lsp pull org/name[@rev]` downloads a checkpoint into the Hugging Face cache; `dg-lsp models` lists
the checkpoints there (and the embedded model) with the family each would load as."""

from __future__ import annotations

import argparse
import sys


def pull(args: argparse.Namespace) -> int:
    from dg_lsp.engine import hub
    from dg_lsp.engine.errors import EngineError

    repo = hub.parse_repo_spec(args.repo)
    if repo is None:
        print(f"dg-lsp pull: {args.repo!r} is not a Hugging Face repo id: expected org/name or "
              "org/name@revision", file=sys.stderr)
        return 2
    try:
        path = hub.resolve_model(args.repo, download=True)
    except EngineError as exc:
        print(f"dg-lsp pull: {exc}", file=sys.stderr)
        return 2
    info = hub.describe_checkpoint(path, repo.repo_id)
    print(path)
    if info.family:
        print(f"family: {info.family} ({format_params(info.params)} parameters, {info.dtype or '?'})")
    else:
        print(f"family: ? ({info.problem}); pass --family to use it")
    print(f"use it with: dg-lsp infill FILE:LINE:COL --model {repo}")
    return 0


def models(args: argparse.Namespace) -> int:
    from dg_lsp.engine import default_model_dir, hub

    cache, rows, warnings = hub.cached_models()
    embedded = hub.describe_checkpoint(default_model_dir())
    table = [("MODEL", "REVISION", "FAMILY", "PARAMS", "DTYPE", "SIZE", "NOTE")]
    table.append((f"{embedded.name} (embedded, the default)", "-", *_columns(embedded)))
    for info in rows:
        revision = info.revision[:7] + (f" ({', '.join(info.refs)})" if info.refs else "")
        table.append((info.name, revision, *_columns(info)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    print(f"\nHugging Face cache: {cache} ({len(rows)} model snapshot(s))")
    for warning in warnings:
        print(f"skipped: {warning}")
    print("Load one with --model ORG/NAME[@REVISION] or the model.path option; get more with `dg-lsp pull`.")
    return 0


def _columns(info) -> tuple[str, ...]:
    note = "" if info.usable else f"not usable: {info.problem}"
    return (info.family or "?", format_params(info.params), info.dtype or "?", format_bytes(info.size_on_disk), note)


def format_params(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def format_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
