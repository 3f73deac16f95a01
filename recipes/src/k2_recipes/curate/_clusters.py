"""Cluster the kept samples (hierarchical k-means) and measure balance before and after sampling."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from k2_data.cluster import (
    ClusterHierarchy,
    HierarchicalKMeansConfig,
    LevelConfig,
    balanced_sample,
    hierarchical_kmeans,
)
from k2_recipes.presets import ClusterSettings


@dataclass
class ClusterBalance:
    """Cluster labels of the kept samples and the balanced sample drawn from them.

    Attributes:
        leaf: leaf cluster of each kept sample (-1 when too few samples to cluster).
        top: top cluster of each kept sample.
        balanced: mask of the kept samples in the balanced sample.
        levels: (leaf, top) clusters actually used.
        top_rows: one report row per top cluster.
        size_stats: cluster-size statistics (top and leaf level) before and after sampling.
    """

    leaf: np.ndarray
    top: np.ndarray
    balanced: np.ndarray
    levels: tuple[int, int]
    top_rows: list[dict[str, Any]] = field(default_factory=list)
    size_stats: list[dict[str, Any]] = field(default_factory=list)


def cluster_levels(n: int, settings: ClusterSettings) -> tuple[int, int] | None:
    """(leaf, top) cluster counts for n samples: at most a quarter of n leaves, top < leaf."""
    leaf = min(settings.leaf_clusters, n // 4)
    top = min(settings.top_clusters, leaf - 1)
    return (leaf, top) if top >= 1 else None


def _size_stats(level: str, name: str, sizes: np.ndarray) -> dict[str, Any]:
    return {
        "clusters": level,
        "samples of": name,
        "samples": int(sizes.sum()),
        "min": int(sizes.min()),
        "median": float(np.median(sizes)),
        "max": int(sizes.max()),
        "max / min": float(sizes.max() / max(sizes.min(), 1)),
        "coeff. of variation": float(sizes.std() / sizes.mean()),
    }


def _dominant(layouts: list[str | None]) -> str:
    """Most frequent colour and shape among a cluster's layouts, with their shares."""
    colours: Counter[str] = Counter()
    shapes: Counter[str] = Counter()
    for layout in layouts:
        for group in (layout or "").split(";"):
            parts = group.split("|")
            if len(parts) == 5:
                colours[parts[2]] += 1
                shapes[parts[3]] += 1
    if not colours:
        return ""
    (colour, nc), (shape, ns) = colours.most_common(1)[0], shapes.most_common(1)[0]
    return f"{colour} {nc / len(layouts):.0%}, {shape} {ns / len(layouts):.0%}"


def cluster_kept(
    embeddings: np.ndarray, layouts: list[str | None], settings: ClusterSettings, *, seed: int
) -> ClusterBalance:
    """Hierarchical k-means (two levels, cosine) of the kept samples, then a balanced sample.

    The balanced sample (`balanced_sample`, a `balanced_fraction` of the samples) is what
    midtraining would draw; the report compares cluster sizes before and after it. Pretraining
    trains on every kept sample: this world is uniform by construction, so balancing it only
    shows the mechanism.

    Args:
        embeddings: (n, d) unit-norm embeddings of the kept samples.
        layouts: each sample's scene layout (`scene_layout`), to describe the clusters.
        settings: cluster counts, balanced fraction.
        seed: k-means and sampling seed.

    Returns:
        The `ClusterBalance`.
    """
    n = len(embeddings)
    levels = cluster_levels(n, settings)
    if levels is None:
        none = np.full(n, -1, np.int64)
        return ClusterBalance(none, none, np.ones(n, bool), (0, 0))
    leaf_k, top_k = levels
    config = HierarchicalKMeansConfig(
        levels=(
            LevelConfig(n_clusters=leaf_k, n_resampling_steps=1, sample_size=10),
            LevelConfig(
                n_clusters=top_k,
                n_resampling_steps=10,
                sample_size=max(1, leaf_k // top_k // 2),
            ),
        ),
        seed=seed,
    )
    import faiss  # k2_data.cluster's backend, already imported by it

    # One OpenMP thread: on a few thousand points faiss's thread pool only spins, and on a
    # shared 2-core machine that spinning made this step 50x slower (1.5 s against 0.03 s).
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        tree: ClusterHierarchy = hierarchical_kmeans(embeddings.astype(np.float32), config)
    finally:
        faiss.omp_set_num_threads(threads)
    target = max(1, round(settings.balanced_fraction * n))
    chosen = balanced_sample(tree, target, seed=seed)
    balanced = np.zeros(n, bool)
    balanced[chosen] = True
    leaf, top = tree.labels(0), tree.labels(-1)
    top_rows = []
    for c in np.argsort(-np.bincount(top, minlength=len(tree.centroids[-1]))):
        members = np.flatnonzero(top == c)
        if len(members) == 0:
            continue
        top_rows.append(
            {
                "top cluster": int(c),
                "leaves": len(np.unique(leaf[members])),
                "kept": len(members),
                "share kept": len(members) / n,
                "balanced sample": int(balanced[members].sum()),
                "share balanced": float(balanced[members].sum() / len(chosen)),
                "dominant colour, shape": _dominant([layouts[i] for i in members]),
            }
        )
    n_leaves, n_top = len(tree.centroids[0]), len(tree.centroids[-1])
    # The budget is split evenly over the top clusters first, then over each one's leaves, so
    # the top level evens out; leaves of a top cluster with many leaves get smaller shares.
    size_stats = [
        _size_stats("top", "kept", np.bincount(top, minlength=n_top)),
        _size_stats("top", "balanced sample", np.bincount(top[balanced], minlength=n_top)),
        _size_stats("leaf", "kept", np.bincount(leaf, minlength=n_leaves)),
        _size_stats("leaf", "balanced sample", np.bincount(leaf[balanced], minlength=n_leaves)),
    ]
    return ClusterBalance(leaf, top, balanced, (n_leaves, n_top), top_rows, size_stats)
