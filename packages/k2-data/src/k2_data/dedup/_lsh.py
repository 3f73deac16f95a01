"""All pairs within a Hamming radius by banded LSH in numpy: exact band matches, then verify."""

from __future__ import annotations

import itertools

import numpy as np
from jaxtyping import Int64, UInt8

from k2_data.dedup._common import check_codes, unique_pairs
from k2_data.hashing import hamming


def band_edges(nbits: int, bands: int) -> list[tuple[int, int]]:
    """Split bits [0, nbits) into ``bands`` contiguous ranges whose widths differ by at most 1."""
    return list(itertools.pairwise(k * nbits // bands for k in range(bands + 1)))


def _band_keys(codes: np.ndarray, start: int, stop: int) -> np.ndarray:
    """One int64/uint64 bucket key per code for bits [start, stop)."""
    bits = np.unpackbits(codes[:, start // 8 : -(-stop // 8)], axis=1)
    bits = bits[:, start % 8 : start % 8 + (stop - start)]
    packed = np.packbits(bits, axis=1)
    width = -(-packed.shape[1] // 8) * 8
    padded = np.zeros((len(codes), width), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    words = padded.view(">u8")
    if words.shape[1] == 1:
        return words[:, 0]
    return np.unique(words, axis=0, return_inverse=True)[1].reshape(-1)


def _bucket_pairs(
    codes: np.ndarray, keys: np.ndarray, radius: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Verified pairs among codes sharing a key: the k-th neighbour in sorted order, k = 1, 2..."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], n]
    remaining = np.repeat(ends, ends - starts) - np.arange(n) - 1  # later members of the run
    firsts, seconds = [], []
    pos, k = np.flatnonzero(remaining > 0), 1
    while pos.size:
        i, j = order[pos], order[pos + k]
        close = hamming(codes[i], codes[j]) <= radius
        firsts.append(i[close])
        seconds.append(j[close])
        k += 1
        pos = pos[remaining[pos] >= k]
    return firsts, seconds


def banded_lsh_pairs(
    codes: UInt8[np.ndarray, "n nbytes"],
    *,
    radius: int,
    bands: int | None = None,
    nbits: int | None = None,
) -> Int64[np.ndarray, "m 2"]:
    """Every pair (i < j) with Hamming distance <= radius, by banded LSH with exact recall.

    Cut the nbits into ``bands`` disjoint bands; candidates are codes equal on at least one
    band; each candidate is verified with `hamming`. Two codes within distance r differ in
    at most r bands, so with bands > r they agree on at least one (pigeonhole): nothing
    is missed, and verification removes every false candidate. More bands mean narrower
    bands, bigger buckets and more candidates; the default bands = r + 1 keeps them widest.

    Args:
        codes: (n, nbytes) packed hashes.
        radius: largest Hamming distance reported.
        bands: number of bands, > radius (default radius + 1).
        nbits: bits that carry information (default 8 * nbytes; pass e.g. 42 for imagehash's
            colorhash so the zero padding does not waste a band).

    Returns:
        (m, 2) int64 pairs, i < j, sorted.

    References:
        Indyk and Motwani 1998 (locality-sensitive hashing for Hamming distance); Manku,
        Jain and Das Sarma 2007, "Detecting near-duplicates for web crawling" (exact recall
        from disjoint blocks by the pigeonhole principle).
    """
    codes = check_codes(codes, radius)
    nbits = 8 * codes.shape[1] if nbits is None else nbits
    bands = radius + 1 if bands is None else bands
    if not 0 < nbits <= 8 * codes.shape[1]:
        raise ValueError(f"nbits must be in [1, {8 * codes.shape[1]}], got {nbits}")
    if not radius < bands <= nbits:
        raise ValueError(
            f"bands={bands} must exceed radius={radius} (pigeonhole: otherwise pairs can be "
            f"missed) and be at most nbits={nbits}; use bands=radius+1 or method='multihash'"
        )
    firsts, seconds = [], []
    for start, stop in band_edges(nbits, bands):
        f, s = _bucket_pairs(codes, _band_keys(codes, start, stop), radius)
        firsts += f
        seconds += s
    if not firsts:
        return np.zeros((0, 2), np.int64)
    return unique_pairs(np.concatenate(firsts), np.concatenate(seconds), len(codes))
