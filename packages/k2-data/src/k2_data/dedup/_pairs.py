"""Candidate pairs: exact byte matches, and Hamming-radius search by a chosen method."""

from __future__ import annotations

from typing import Literal

import numpy as np
from jaxtyping import Int64, UInt8

from k2_data.dedup._common import check_codes
from k2_data.dedup._faiss import flat_pairs, multihash_pairs
from k2_data.dedup._lsh import banded_lsh_pairs
from k2_data.hashing import hamming

SearchMethod = Literal["multihash", "lsh", "flat"]
SEARCH_METHODS: tuple[str, ...] = ("multihash", "lsh", "flat")


def first_identical(codes: UInt8[np.ndarray, "n nbytes"]) -> Int64[np.ndarray, " n"]:
    """For each row, the index of the first row with identical bytes (itself if first).

    Args:
        codes: (n, nbytes) uint8 rows (md5 digests, or concatenated hashes).

    Returns:
        int64 indices; rows with ``rep[i] == i`` are the distinct representatives.
    """
    if codes.ndim != 2 or codes.dtype != np.uint8:
        raise TypeError(
            f"codes must be an (n, nbytes) uint8 array, got {codes.dtype} {codes.shape}"
        )
    if len(codes) == 0:
        return np.zeros(0, np.int64)
    _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)].astype(np.int64)


def near_duplicate_pairs(
    codes: UInt8[np.ndarray, "n nbytes"], *, radius: int, method: SearchMethod = "multihash"
) -> Int64[np.ndarray, "m 2"]:
    """Every pair (i < j) of codes within Hamming distance ``radius``; all methods are exact.

    Args:
        codes: (n, nbytes) packed hashes.
        radius: largest Hamming distance reported.
        method: ``"multihash"`` (faiss multi-index hashing, the default), ``"lsh"`` (numpy
            banded LSH, radius + 1 bands) or ``"flat"`` (faiss brute force, O(n^2)).

    Returns:
        (m, 2) int64 pairs, i < j, sorted.
    """
    if method == "multihash":
        return multihash_pairs(codes, radius=radius)
    if method == "lsh":
        return banded_lsh_pairs(codes, radius=radius)
    if method == "flat":
        return flat_pairs(codes, radius=radius)
    raise ValueError(
        f"unknown method {method!r}; choose one of {SEARCH_METHODS}"
    )  # untyped callers


def filter_pairs(
    pairs: Int64[np.ndarray, "m 2"], codes: UInt8[np.ndarray, "n nbytes"], *, radius: int
) -> Int64[np.ndarray, "k 2"]:
    """The pairs whose codes are also within ``radius`` (e.g. colorhash after a phash search).

    Args:
        pairs: (m, 2) row indices into ``codes``.
        codes: (n, nbytes) packed hashes of a second kind.
        radius: largest Hamming distance kept.

    Returns:
        The subset of ``pairs`` (same order).
    """
    codes = check_codes(codes, radius)
    if len(pairs) == 0:
        return pairs
    return pairs[hamming(codes[pairs[:, 0]], codes[pairs[:, 1]]) <= radius]
