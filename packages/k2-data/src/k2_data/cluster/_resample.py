"""The resampling step of hierarchical k-means (Vo et al. 2024): equal weight per cluster."""

from __future__ import annotations

from typing import Literal

import numpy as np
from jaxtyping import Float, Float32, Int64

from k2_data.cluster._kmeans import as_points, assign, drop_empty, train_kmeans

ResampleStrategy = Literal["closest", "random"]
_CHUNK = 8192  # rows per block (about 12 MB at d = 384: reused heap memory, no page faults)


def own_centroid_scores(
    points: np.ndarray, centroids: np.ndarray, labels: np.ndarray, *, spherical: bool
) -> np.ndarray:
    """Per-point distance to its own centroid, smaller = closer (-cosine or squared L2), float32."""
    out = np.empty(len(points), np.float32)
    for start in range(0, len(points), _CHUNK):
        p = points[start : start + _CHUNK]
        c = centroids[labels[start : start + _CHUNK]]
        out[start : start + len(p)] = (
            -np.einsum("nd,nd->n", p, c) if spherical else np.einsum("nd,nd->n", p - c, p - c)
        )
    return out


def per_cluster_head(
    labels: np.ndarray, keys: np.ndarray, counts: np.ndarray
) -> Int64[np.ndarray, " m"]:
    """Indices of the ``counts[c]`` points with the smallest key inside each cluster c, grouped by
    cluster in ascending order (ties by lower index)."""
    order = np.lexsort((np.arange(len(labels)), keys, labels))
    sizes = np.bincount(labels, minlength=len(counts))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sorted_labels = labels[order]
    rank = np.arange(len(order)) - starts[sorted_labels]
    return order[rank < counts[sorted_labels]].astype(np.int64)


def resample_step(
    points: np.ndarray,
    centroids: np.ndarray,
    labels: np.ndarray,
    *,
    sample_size: int,
    n_iter: int,
    spherical: bool,
    strategy: ResampleStrategy,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One resampling step on checked points (see `resample_centroids`)."""
    k = len(centroids)
    if strategy == "closest":
        keys = own_centroid_scores(points, centroids, labels, spherical=spherical)
    else:
        keys = rng.random(len(points), dtype=np.float32)
    chosen = per_cluster_head(labels, keys, np.full(k, sample_size))
    union = points[chosen]
    # chosen is grouped by cluster and every cluster is non-empty, so reduceat gives the sums
    group_starts = np.flatnonzero(np.r_[True, np.diff(labels[chosen]) != 0])
    init = np.add.reduceat(union.astype(np.float64), group_starts, axis=0)
    init /= np.diff(np.r_[group_starts, len(chosen)])[:, None]
    if spherical:
        init /= np.maximum(np.linalg.norm(init, axis=1, keepdims=True), 1e-12)
    new_centroids, _ = train_kmeans(
        union,
        n_clusters=k,
        n_iter=n_iter,
        spherical=spherical,
        init="random",  # unused: training starts from init_centroids
        max_points_per_centroid=sample_size,  # never subsample the union
        seed=int(rng.integers(2**31)),
        init_centroids=np.ascontiguousarray(init, dtype=np.float32),
    )
    new_labels, _ = assign(points, new_centroids, spherical=spherical)
    return drop_empty(new_centroids, new_labels)


def resample_centroids(
    x: Float[np.ndarray, "n d"],
    centroids: Float[np.ndarray, "k d"],
    labels: Int64[np.ndarray, " n"],
    *,
    sample_size: int,
    n_steps: int = 1,
    n_iter: int = 20,
    spherical: bool = True,
    strategy: ResampleStrategy = "closest",
    seed: int = 0,
) -> tuple[Float32[np.ndarray, "m d"], Int64[np.ndarray, " n"]]:
    """Move k-means centroids from the density of the data towards its support.

    Each step: (1) from every cluster take ``sample_size`` members, the closest to its
    centroid (``"closest"``, the paper's default) or a uniform random subset
    (``"random"``), all members if it has fewer; (2) start each centroid at the mean of
    its sample; (3) run k-means on the union of the samples, where every cluster now
    weighs the same whatever its size; (4) reassign all points to the new centroids and
    drop clusters left empty. With ``sample_size=1`` the centroids snap to the member
    nearest each centre.

    Args:
        x: (n, d) points clustered at this level (embeddings, or lower-level centroids).
        centroids: (k, d) centres from k-means on x.
        labels: (n,) cluster of each point, every cluster non-empty.
        sample_size: points drawn per cluster (the paper's r; it suggests about half the
            mean cluster size).
        n_steps: resampling steps (the paper's m).
        n_iter: k-means iterations on the union of samples.
        spherical: cosine geometry, as in the k-means that produced ``centroids``.
        strategy: which members represent a cluster.
        seed: randomness for ``"random"`` and faiss.

    Returns:
        (centroids, labels) after the last step, empty clusters removed.

    References:
        Vo et al. 2024, "Automatic Data Curation for Self-Supervised Learning: A
        Clustering-Based Approach", Sec. 4 (hierarchical k-means with resampling, Alg. 1).
    """
    if sample_size < 1 or n_steps < 0 or n_iter < 1:
        raise ValueError(
            f"need sample_size >= 1, n_steps >= 0, n_iter >= 1; got {sample_size}, {n_steps}, {n_iter}"
        )
    if strategy not in ("closest", "random"):
        raise ValueError(f"strategy must be 'closest' or 'random', got {strategy!r}")
    points = as_points(x, spherical=spherical)
    cents = as_points(centroids, spherical=spherical, name="centroids")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(points),) or labels.min() < 0 or labels.max() >= len(cents):
        raise ValueError(f"labels must be ({len(points)},) ids in [0, {len(cents)})")
    cents, labels = drop_empty(cents, labels)
    rng = np.random.default_rng(seed)
    for _ in range(n_steps):
        cents, labels = resample_step(
            points,
            cents,
            labels,
            sample_size=sample_size,
            n_iter=n_iter,
            spherical=spherical,
            strategy=strategy,
            rng=rng,
        )
    return cents, labels
