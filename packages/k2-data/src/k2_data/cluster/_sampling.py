"""Balanced (water-filling) hierarchical sampling: keep the long tail, cap the head."""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float, Int64

from k2_data.cluster._hierarchy import ClusterHierarchy
from k2_data.cluster._resample import per_cluster_head


def _water_fill(sizes: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    if budget >= sizes.sum():
        return sizes.copy()
    # largest integer cap with sum(min(size, cap)) <= budget (binary search, monotone in cap)
    lo, hi = 0, int(sizes.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(sizes, mid).sum() <= budget:
            lo = mid
        else:
            hi = mid - 1
    alloc = np.minimum(sizes, lo)
    remainder = int(budget - alloc.sum())  # < #clusters above the cap, else cap + 1 would fit
    above = np.flatnonzero(sizes > lo)
    alloc[rng.permutation(above)[:remainder]] += 1
    return alloc


def water_fill(
    sizes: Int64[np.ndarray, " k"], budget: int, *, seed: int = 0
) -> Int64[np.ndarray, " k"]:
    """Split an integer budget over clusters: equal shares, small clusters' surplus to the rest.

    Each cluster gets ``min(size, cap)`` with the largest integer cap that fits the budget;
    the few units left over go one each to random clusters larger than the cap. Clusters
    smaller than their share are taken whole (the long tail is kept), large ones are capped.

    Args:
        sizes: (k,) non-negative cluster sizes.
        budget: total to allocate; the whole of every cluster if it exceeds the sum.
        seed: which clusters above the cap get the leftover units.

    Returns:
        (k,) allocation with ``alloc <= sizes`` and ``alloc.sum() == min(budget, sizes.sum())``.

    References:
        Vo et al. 2024, "Automatic Data Curation for Self-Supervised Learning", Sec. 4
        (balanced hierarchical sampling).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or (sizes < 0).any():
        raise ValueError("sizes must be a 1-D array of non-negative counts")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    return _water_fill(sizes, budget, np.random.default_rng(seed))


def hierarchical_allocation(
    hierarchy: ClusterHierarchy,
    target: int,
    *,
    seed: int = 0,
    eligible: Bool[np.ndarray, " n"] | None = None,
) -> tuple[Int64[np.ndarray, " _"], ...]:
    """Per-level sample counts: water-fill the target over the top clusters, then each
    cluster's count over its children, down to the leaves.

    Args:
        hierarchy: from `hierarchical_kmeans`.
        target: total sample size (capped at the number of eligible points).
        seed: tie-breaking of leftover units.
        eligible: (n,) points that may be sampled (e.g. after dropping flagged clusters and
            semantic duplicates); sizes count eligible points only. Default all.

    Returns:
        ``alloc[l]`` (k_l,) for every level, leaves first; children sum to their parent.
    """
    mask = _eligible(hierarchy, eligible)
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    rng = np.random.default_rng(seed)
    counts = [
        np.bincount(hierarchy.labels(lv)[mask], minlength=len(hierarchy.centroids[lv]))
        for lv in range(hierarchy.n_levels)
    ]
    allocs = [_water_fill(counts[-1], target, rng)]
    for lv in range(hierarchy.n_levels - 2, -1, -1):
        parent = hierarchy.parents[lv + 1]
        alloc = np.zeros(len(parent), np.int64)
        order = np.argsort(parent, kind="stable")
        bounds = np.searchsorted(parent[order], np.arange(len(allocs[0]) + 1))
        for p in np.flatnonzero(allocs[0]):
            children = order[bounds[p] : bounds[p + 1]]
            alloc[children] = _water_fill(counts[lv][children], int(allocs[0][p]), rng)
        allocs.insert(0, alloc)
    return tuple(allocs)


def balanced_sample(
    hierarchy: ClusterHierarchy,
    target: int,
    *,
    seed: int = 0,
    eligible: Bool[np.ndarray, " n"] | None = None,
    leaf_scores: Float[np.ndarray, " n"] | None = None,
) -> Int64[np.ndarray, " m"]:
    """Draw a balanced sample of point indices from a cluster hierarchy.

    The budget is water-filled top-down (`hierarchical_allocation`); inside each leaf the
    allocated number of points is drawn uniformly at random, or, given ``leaf_scores``
    (e.g. `leaf_centroid_scores`), the points with the smallest scores (the paper's
    closest-to-centroid mode). Deterministic for a given seed.

    Args:
        hierarchy: from `hierarchical_kmeans`.
        target: number of points wanted; all eligible points if there are fewer.
        seed: randomness of leftover units and of the within-leaf draw.
        eligible: (n,) points that may be sampled. Default all.
        leaf_scores: (n,) within-leaf ranking, smaller first; random if None.

    Returns:
        Sorted indices of the sampled points.

    References:
        Vo et al. 2024, "Automatic Data Curation for Self-Supervised Learning", Sec. 4.
    """
    mask = _eligible(hierarchy, eligible)
    leaf_alloc = hierarchical_allocation(hierarchy, target, seed=seed, eligible=mask)[0]
    rng = np.random.default_rng([seed, 1])
    if leaf_scores is None:
        keys = rng.random(hierarchy.n_points)
    else:
        keys = np.asarray(leaf_scores, dtype=np.float64)
        if keys.shape != (hierarchy.n_points,) or not np.isfinite(keys).all():
            raise ValueError(f"leaf_scores must be ({hierarchy.n_points},) finite values")
    idx = np.flatnonzero(mask)
    chosen = idx[per_cluster_head(hierarchy.labels(0)[idx], keys[idx], leaf_alloc)]
    return np.sort(chosen)


def _eligible(hierarchy: ClusterHierarchy, eligible: np.ndarray | None) -> np.ndarray:
    if eligible is None:
        return np.ones(hierarchy.n_points, bool)
    mask = np.asarray(eligible)
    if mask.dtype != np.bool_ or mask.shape != (hierarchy.n_points,):
        raise ValueError(
            f"eligible must be a ({hierarchy.n_points},) bool mask over the clustered points, "
            f"got {mask.dtype} {mask.shape}"
        )
    return mask
