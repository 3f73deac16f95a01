"""Semantic deduplication inside clusters (SemDeDup rule, greedy over kept points)."""

from __future__ import annotations

import itertools
from typing import Literal, NamedTuple

import numpy as np
from jaxtyping import Bool, Float, Float32, Int64

from k2_data.cluster._kmeans import as_points

KeepRule = Literal["farthest", "closest", "index"]
_BLOCK = 2048  # rows of the within-cluster similarity matrix computed at once


class SemDedupResult(NamedTuple):
    """Per point: kept or not, and for a removed point the kept point that covers it."""

    keep: Bool[np.ndarray, " n"]
    duplicate_of: Int64[np.ndarray, " n"]  # -1 for kept points
    similarity: Float32[np.ndarray, " n"]  # cosine to duplicate_of; nan for kept points


def _priority(points: np.ndarray, members: np.ndarray, keep: KeepRule) -> np.ndarray:
    """Members in the order they are offered a place (ties by lower index)."""
    if keep == "index":
        return members
    centre = points[members].astype(np.float64).sum(0)
    norm = np.linalg.norm(centre)
    cos = points[members] @ (centre / norm) if norm > 0 else np.zeros(len(members))
    # farthest from the centre = smallest cosine first (SemDeDup's "hard" order)
    key = cos if keep == "farthest" else -cos
    return members[np.lexsort((members, key))]


def _greedy(block_pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], m: int):
    """Walk positions in order; a position is removed iff an earlier *kept* one is too similar."""
    kept = np.ones(m, bool)
    dup = np.full(m, -1, np.int64)
    sim = np.full(m, np.nan, np.float32)
    if not block_pairs:
        return kept, dup, sim
    a = np.concatenate([p[0] for p in block_pairs])
    b = np.concatenate([p[1] for p in block_pairs])
    s = np.concatenate([p[2] for p in block_pairs])
    order = np.lexsort((a, b))
    a, b, s = a[order], b[order], s[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(b)], strict=True):
        alive = kept[a[lo:hi]]
        if alive.any():
            best = lo + int(np.argmax(np.where(alive, s[lo:hi], -np.inf)))
            kept[b[lo]], dup[b[lo]], sim[b[lo]] = False, a[best], s[best]
    return kept, dup, sim


def semantic_dedup(
    x: Float[np.ndarray, "n d"],
    labels: Int64[np.ndarray, " n"],
    *,
    epsilon: float,
    keep: KeepRule = "farthest",
) -> SemDedupResult:
    """Remove near-duplicates inside each cluster by cosine similarity of normalised embeddings.

    Meaning of epsilon: it is a cosine *distance* threshold. Two points of one cluster are
    duplicates when ``cos(u, v) > 1 - epsilon``, i.e. ``1 - cos(u, v) < epsilon``
    (strict). Larger epsilon removes more; ``epsilon = 0`` removes nothing, not even exact
    copies (their cosine is at most 1). Similarities are float32 inner products.

    Keep rule: members are offered a place one by one in priority order; a member is
    removed iff it is a duplicate of a member already *kept*, so every removed point has a
    kept duplicate and no two kept points are duplicates. ``keep="farthest"`` (default)
    offers the member farthest from the cluster's mean direction first, as SemDeDup's
    default ("hard" examples survive); ``"closest"`` the reverse; ``"index"`` the lowest
    index first. Ties go to the lower index. Unlike SemDeDup's reference code, which drops
    j when any earlier point (kept or not) is within the threshold, a chain a~b~c with a
    and c far apart keeps c here.

    Args:
        x: (n, d) embeddings (normalised here).
        labels: (n,) cluster of each point (e.g. the leaves of `hierarchical_kmeans`);
            pairs are only compared inside a cluster.
        epsilon: cosine-distance threshold in [0, 2]; NeMo Curator's examples use 0.01.
        keep: which member of a duplicate group survives.

    Returns:
        `SemDedupResult` (keep mask, the kept point each removed one duplicates, and their
        cosine).

    References:
        Abbas et al. 2023, "SemDeDup: Data-efficient learning at web-scale through semantic
        deduplication", Sec. 3 (threshold 1 - epsilon on cosine similarity within k-means
        clusters).
    """
    points = as_points(x, spherical=True)
    labels = np.asarray(labels)
    if labels.shape != (len(points),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be ({len(points)},) integer cluster ids")
    if not 0.0 <= epsilon <= 2.0:
        raise ValueError(f"epsilon is a cosine distance in [0, 2], got {epsilon}")
    if keep not in ("farthest", "closest", "index"):
        raise ValueError(f"keep must be 'farthest', 'closest' or 'index', got {keep!r}")
    threshold = np.float32(1.0 - epsilon)
    keep_mask = np.ones(len(points), bool)
    duplicate_of = np.full(len(points), -1, np.int64)
    similarity = np.full(len(points), np.nan, np.float32)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1], True])
    for lo, hi in itertools.pairwise(bounds):
        if hi - lo < 2:
            continue
        members = _priority(points, order[lo:hi], keep)
        emb = points[members]
        pairs = []
        for r0 in range(0, len(members), _BLOCK):
            sims = emb[r0 : r0 + _BLOCK] @ emb.T
            rows, cols = np.nonzero(sims > threshold)
            rows = rows + r0
            later = cols > rows  # each unordered pair once, as (earlier, later)
            pairs.append((rows[later], cols[later], sims[rows[later] - r0, cols[later]]))
        kept, dup, sim = _greedy([p for p in pairs if len(p[0])], len(members))
        keep_mask[members] = kept
        duplicate_of[members[~kept]] = members[dup[~kept]]
        similarity[members] = sim
    return SemDedupResult(keep_mask, duplicate_of, similarity)
