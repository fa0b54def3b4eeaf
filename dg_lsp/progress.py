"""A tqdm progress bar that fits the engine's progress(message, done, total) callback."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[str, int, int], None]]:
    from tqdm import tqdm

    bar = None

    def update(message: str, done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=f"{description}: {message}", unit="tensor", file=sys.stderr, leave=False)
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
