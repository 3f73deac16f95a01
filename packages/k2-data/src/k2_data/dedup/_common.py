"""Shared validation and pair bookkeeping for the near-duplicate searches."""

from __future__ import annotations

import numpy as np


def check_codes(codes: np.ndarray, radius: int) -> np.ndarray:
    """Validate an (n, nbytes) uint8 hash matrix and a Hamming radius; return it C-contiguous."""
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2:
        raise TypeError(
            "codes must be an (n, nbytes) uint8 array of packed hashes, e.g. from "
            f"k2_data.hashing.phash_batch; got {type(codes).__name__} "
            f"{getattr(codes, 'dtype', '')} {getattr(codes, 'shape', '')}"
        )
    if codes.shape[1] == 0:
        raise ValueError("codes have zero bytes per hash")
    if not 0 <= radius < 8 * codes.shape[1]:
        raise ValueError(
            f"radius must be in [0, {8 * codes.shape[1]}) bits for {codes.shape[1]}-byte hashes, "
            f"got {radius}"
        )
    return np.ascontiguousarray(codes)


def unique_pairs(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Sorted, de-duplicated (m, 2) int64 pairs with i < j from unordered index arrays."""
    lo = np.minimum(i, j).astype(np.int64)
    hi = np.maximum(i, j).astype(np.int64)
    keep = lo != hi
    flat = np.unique(lo[keep] * n + hi[keep])
    return np.stack([flat // n, flat % n], axis=1) if flat.size else np.zeros((0, 2), np.int64)
