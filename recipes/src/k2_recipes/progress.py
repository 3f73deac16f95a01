"""Progress bars for long steps (tqdm), silent when disabled or when stderr is not a terminal in CI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, enable: bool = True, total: int | None = None):
    """Wrap an iterable in a tqdm bar (refreshing at most twice a second)."""
    return tqdm(items, desc=desc, disable=not enable, total=total, mininterval=0.5, leave=False)
