"""All pairs within a Hamming radius with faiss binary indexes: multi-index hashing, or flat."""

from __future__ import annotations

import math

import faiss
import numpy as np
from jaxtyping import Int64, UInt8

from k2_data.dedup._common import check_codes, unique_pairs

_QUERY_CHUNK = 1 << 16  # queries per range_search call, bounds the result buffers


def multihash_params(n: int, nbits: int, radius: int) -> tuple[int, int, int]:
    """(nhash, b, nflip) for `faiss.IndexBinaryMultiHash` that find every pair within radius.

    The index splits the code into nhash disjoint b-bit substrings, one hash table each, and
    a query visits every bucket within nflip bit flips of its substring in each table. Two
    codes within distance r differ in at most floor(r / nhash) bits of some substring
    (pigeonhole), so ``nflip = floor(r / nhash)`` misses nothing. Among the b that allow it,
    pick the cheapest for n uniform codes: bucket visits V = nhash * sum_{k <= nflip} C(b, k)
    plus twice the candidates V n / 2^b (each is verified and de-duplicated; the weight is
    a rough fit of faiss 1.15 timings at n = 1e6).

    Args:
        n: number of indexed codes.
        nbits: code width in bits.
        radius: Hamming radius r.

    Returns:
        (nhash, b, nflip).

    References:
        Norouzi, Punjani and Fleet 2012, "Fast search in Hamming space with multi-index
        hashing" (CVPR).
    """
    best: tuple[float, int, int, int] | None = None
    for b in range(1, min(nbits, 62) + 1):
        nhash = nbits // b
        nflip = min(radius // nhash, b)
        visits = nhash * sum(math.comb(b, k) for k in range(nflip + 1))
        cost = visits * (1.0 + 2.0 * n / 2.0**b)
        if best is None or cost < best[0]:
            best = (cost, nhash, b, nflip)
    assert best is not None
    return best[1], best[2], best[3]


def _range_pairs(index: faiss.IndexBinary, codes: np.ndarray, radius: int) -> np.ndarray:
    index.add(codes)
    firsts, seconds = [], []
    for start in range(0, len(codes), _QUERY_CHUNK):
        query = codes[start : start + _QUERY_CHUNK]
        lims, _, ids = index.range_search(query, radius + 1)  # faiss keeps distance < radius
        owner = np.repeat(np.arange(start, start + len(query)), np.diff(lims).astype(np.int64))
        later = ids > owner  # each pair once, self matches dropped
        firsts.append(owner[later])
        seconds.append(ids[later])
    if not firsts:
        return np.zeros((0, 2), np.int64)
    return unique_pairs(np.concatenate(firsts), np.concatenate(seconds), len(codes))


def multihash_pairs(
    codes: UInt8[np.ndarray, "n nbytes"],
    *,
    radius: int,
    nhash: int | None = None,
    b: int | None = None,
) -> Int64[np.ndarray, "m 2"]:
    """Every pair (i < j) with Hamming distance <= radius, via faiss multi-index hashing.

    Exact (no misses, no false pairs) whenever ``nhash * (nflip + 1) > radius``, which
    `multihash_params` guarantees; cost grows with the candidates per query rather than n.

    Args:
        codes: (n, nbytes) packed hashes.
        radius: largest Hamming distance reported.
        nhash: number of hash tables; with ``b``, overrides `multihash_params`.
        b: bits per table (nhash * b <= 8 * nbytes).

    Returns:
        (m, 2) int64 pairs, i < j, sorted.
    """
    codes = check_codes(codes, radius)
    nbits = 8 * codes.shape[1]
    if (nhash is None) != (b is None):
        raise ValueError("pass both nhash and b, or neither (then multihash_params chooses)")
    if nhash is None or b is None:
        nhash, b, nflip = multihash_params(len(codes), nbits, radius)
    else:
        if nhash < 1 or b < 1 or nhash * b > nbits or b > 62:
            raise ValueError(f"need nhash >= 1, 1 <= b <= 62 and nhash * b <= {nbits}")
        nflip = min(radius // nhash, b)
    index = faiss.IndexBinaryMultiHash(nbits, nhash, b)
    index.nflip = nflip
    return _range_pairs(index, codes, radius)


def flat_pairs(codes: UInt8[np.ndarray, "n nbytes"], *, radius: int) -> Int64[np.ndarray, "m 2"]:
    """Every pair (i < j) within radius by brute force (`faiss.IndexBinaryFlat`, O(n^2)).

    The reference the fast searches are checked against; fine up to ~1e5 codes.

    Args:
        codes: (n, nbytes) packed hashes.
        radius: largest Hamming distance reported.

    Returns:
        (m, 2) int64 pairs, i < j, sorted.
    """
    codes = check_codes(codes, radius)
    return _range_pairs(faiss.IndexBinaryFlat(8 * codes.shape[1]), codes, radius)
