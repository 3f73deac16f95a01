"""Duplicate groups (connected components) and the one image each group keeps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Int64, Shaped


def connected_components(n: int, pairs: Int64[np.ndarray, "m 2"]) -> Int64[np.ndarray, " n"]:
    """Union-find over duplicate pairs: each item's label is the smallest index in its group.

    Vectorised hook-and-compress: every pair hooks the root with the larger label under the
    smaller one (``np.minimum.at``), then pointer jumping flattens the forest; repeat until
    both ends of every pair share a root. Groups are transitive: a ~ b and b ~ c put a and
    c together even when they are farther apart than the radius.

    Args:
        n: number of items.
        pairs: (m, 2) item indices in [0, n).

    Returns:
        int64 labels; ``labels[i] == i`` for the smallest member of each group.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n):
        raise ValueError(f"pair indices must lie in [0, {n})")
    parent = np.arange(n, dtype=np.int64)
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        ra, rb = parent[a], parent[b]
        split = ra != rb
        if not split.any():
            return parent
        np.minimum.at(parent, np.maximum(ra, rb)[split], np.minimum(ra, rb)[split])
        while True:  # pointer jumping: parents only decrease, so this ends at the roots
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def select_keepers(
    labels: Int64[np.ndarray, " n"],
    *,
    keys: Sequence[str] | Shaped[np.ndarray, " n"],
    width: Shaped[np.ndarray, " n"] | None = None,
    height: Shaped[np.ndarray, " n"] | None = None,
    file_size: Shaped[np.ndarray, " n"] | None = None,
) -> Int64[np.ndarray, " n"]:
    """For each item, the index of the item its group keeps.

    Rule (deterministic, independent of input order): the most pixels (width * height), then
    the largest encoded file, then the lexicographically smallest ``__key__``. Missing
    metadata counts as equal for everyone.

    Args:
        labels: group label per item (e.g. from `connected_components`).
        keys: unique ``__key__`` per item.
        width: image width per item (from the file header), or None.
        height: image height per item, or None.
        file_size: encoded size in bytes per item, or None.

    Returns:
        int64 keeper index per item; an item is kept iff ``keeper[i] == i``.
    """
    n = len(labels)
    key_array = np.asarray(keys, dtype=str)
    for name, column in (("keys", key_array), ("width", width), ("height", height)):
        if column is not None and len(column) != n:
            raise ValueError(f"{name} has {len(column)} entries for {n} items")
    if file_size is not None and len(file_size) != n:
        raise ValueError(f"file_size has {len(file_size)} entries for {n} items")
    if (width is None) != (height is None):
        raise ValueError("pass width and height together (the rule compares pixel counts)")
    pixels = (
        np.zeros(n, np.int64)
        if width is None or height is None
        else np.asarray(width, np.int64) * np.asarray(height, np.int64)
    )
    size = np.zeros(n, np.int64) if file_size is None else np.asarray(file_size, np.int64)
    if n == 0:
        return np.zeros(0, np.int64)
    key_rank = np.argsort(np.argsort(key_array, kind="stable"), kind="stable")
    order = np.lexsort((key_rank, -size, -pixels, labels))  # last key sorts first
    sorted_labels = labels[order]
    first = np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]
    winner = order[first]  # one per label, in label order
    group_index = np.cumsum(first) - 1
    keeper = np.empty(n, np.int64)
    keeper[order] = winner[group_index]
    return keeper
