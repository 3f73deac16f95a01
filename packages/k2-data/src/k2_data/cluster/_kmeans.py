"""Flat k-means on faiss: input checks, initialisation choice, assignment, empty-cluster removal."""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np
from jaxtyping import Float, Float32, Int64

KMeansInit = Literal["random", "kmeans++", "afkmc2"]
KMEANS_INITS: tuple[KMeansInit, ...] = ("random", "kmeans++", "afkmc2")

_INIT_METHODS = {
    "random": "ClusteringInitMethod_RANDOM",
    "kmeans++": "ClusteringInitMethod_KMEANS_PLUS_PLUS",
    "afkmc2": "ClusteringInitMethod_AFK_MC2",
}
_ASSIGN_CHUNK = 1 << 17  # rows per faiss search call, bounds the (rows, 1) result buffers


def as_points(x: np.ndarray, *, spherical: bool, name: str = "x") -> np.ndarray:
    """Validate an (n, d) float matrix; return it as C-contiguous float32, unit rows if spherical.

    The input is never modified; it is copied only when a conversion or normalisation is
    needed (large copies dominate the cost of a level at 1M points).
    """
    if not isinstance(x, np.ndarray) or x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"{name} must be an (n, d) float numpy array of embeddings, got "
            f"{type(x).__name__} {getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {x.shape}")
    out = np.ascontiguousarray(x, dtype=np.float32)
    # squared norms by blocks: one cheap pass that also catches NaN/inf in any coordinate
    sq = np.empty(len(out), np.float32)
    for start in range(0, len(out), _ASSIGN_CHUNK):
        block = out[start : start + _ASSIGN_CHUNK]
        sq[start : start + len(block)] = np.einsum("nd,nd->n", block, block)
    if not np.isfinite(sq).all():
        raise ValueError(
            f"{name} has NaN, inf or overflowing (> 1e19) values; drop or repair those rows"
        )
    if spherical and not (np.abs(sq - 1.0) < 1e-5).all():
        if (sq == 0).any():
            raise ValueError(
                f"{name} has {int((sq == 0).sum())} all-zero rows, which have no direction "
                "for cosine similarity; drop them (or cluster with spherical=False)"
            )
        out = out.copy() if np.may_share_memory(out, x) else out
        faiss.normalize_L2(out)
    return out


def assign(
    x: Float32[np.ndarray, "n d"],
    centroids: Float32[np.ndarray, "k d"],
    *,
    spherical: bool,
) -> tuple[Int64[np.ndarray, " n"], Float32[np.ndarray, " n"]]:
    """Nearest centroid of every row: by inner product if spherical, else by squared L2.

    Args:
        x: points, L2-normalised when spherical.
        centroids: cluster centres, L2-normalised when spherical.
        spherical: cosine assignment (maximum inner product) instead of Euclidean.

    Returns:
        (labels, scores): the nearest centroid's index, and the inner product (spherical) or
        the squared distance (Euclidean) to it.
    """
    index = faiss.IndexFlatIP(x.shape[1]) if spherical else faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    labels = np.empty(len(x), np.int64)
    scores = np.empty(len(x), np.float32)
    for start in range(0, len(x), _ASSIGN_CHUNK):
        dist, ids = index.search(x[start : start + _ASSIGN_CHUNK], 1)
        labels[start : start + len(ids)] = ids[:, 0]
        scores[start : start + len(ids)] = dist[:, 0]
    return labels, scores


def drop_empty(
    centroids: np.ndarray, labels: np.ndarray
) -> tuple[Float32[np.ndarray, "m d"], Int64[np.ndarray, " n"]]:
    """Remove centroids that no point is assigned to and renumber labels 0..m-1 in order.

    An empty cluster has no member for balanced sampling to draw from, and at the next level
    it would still count as a point and pull a parent centroid towards nothing.
    """
    used = np.bincount(labels, minlength=len(centroids)) > 0
    if used.all():
        return centroids, labels
    new_id = np.cumsum(used) - 1
    return np.ascontiguousarray(centroids[used]), new_id[labels].astype(np.int64)


def kmeans(
    x: Float[np.ndarray, "n d"],
    *,
    n_clusters: int,
    n_iter: int = 20,
    spherical: bool = True,
    init: KMeansInit = "afkmc2",
    max_points_per_centroid: int = 256,
    seed: int = 0,
    init_centroids: Float[np.ndarray, "k d"] | None = None,
) -> tuple[Float32[np.ndarray, "m d"], Int64[np.ndarray, " n"]]:
    """Lloyd's k-means with faiss, then a full assignment of every point; empty clusters dropped.

    faiss trains on at most ``n_clusters * max_points_per_centroid`` random points (the cost
    of one iteration is n k d) and re-seeds clusters that empty during training by splitting
    large ones. Clusters that are still empty after the full assignment are removed, so
    ``m <= n_clusters``.

    Args:
        x: (n, d) embeddings; normalised here when spherical.
        n_clusters: k; must not exceed the number of points.
        n_iter: Lloyd iterations.
        spherical: cosine k-means (unit-norm centroids, inner-product assignment). This is
            the default because a Euclidean centroid that averages unrelated points shrinks
            towards the data mean and then captures every point without a centroid of its
            own (docs/k2-data-cluster.md, "the catch-all cluster").
        init: faiss initialisation: ``"random"`` (uniform sample of points), ``"kmeans++"``
            (exact D^2 sampling, O(n k d), slow), or ``"afkmc2"`` (its Markov-chain
            approximation, Bachem et al. 2016).
        max_points_per_centroid: faiss training subsample per centroid.
        seed: faiss seed (initialisation and subsample).
        init_centroids: start from these centres instead of ``init``.

    Returns:
        (centroids, labels): float32 (m, d) centres and each point's cluster in 0..m-1.

    References:
        Lloyd 1982; Arthur and Vassilvitskii 2007 (k-means++); Johnson, Douze and Jegou 2019
        (faiss).
    """
    points = as_points(x, spherical=spherical)
    start = None
    if init_centroids is not None:
        start = as_points(init_centroids, spherical=spherical, name="init_centroids")
    return train_kmeans(
        points,
        n_clusters=n_clusters,
        n_iter=n_iter,
        spherical=spherical,
        init=init,
        max_points_per_centroid=max_points_per_centroid,
        seed=seed,
        init_centroids=start,
    )


def train_kmeans(
    points: np.ndarray,
    *,
    n_clusters: int,
    n_iter: int,
    spherical: bool,
    init: KMeansInit,
    max_points_per_centroid: int,
    seed: int,
    init_centroids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`kmeans` on points already checked and normalised by `as_points` (no copy)."""
    if not 1 <= n_clusters <= len(points):
        raise ValueError(
            f"n_clusters must be in [1, {len(points)}] (the number of points), got {n_clusters}"
        )
    if n_iter < 1 or max_points_per_centroid < 1:
        raise ValueError(
            f"n_iter and max_points_per_centroid must be >= 1, got {n_iter}, {max_points_per_centroid}"
        )
    if init not in _INIT_METHODS:
        raise ValueError(f"init must be one of {KMEANS_INITS}, got {init!r}")
    if init_centroids is not None and init_centroids.shape != (n_clusters, points.shape[1]):
        raise ValueError(
            f"init_centroids must have shape {(n_clusters, points.shape[1])}, "
            f"got {init_centroids.shape}"
        )
    km = faiss.Kmeans(
        points.shape[1],
        n_clusters,
        niter=n_iter,
        spherical=spherical,
        seed=seed,
        max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1,  # small levels are legitimate; silence faiss's warning
        init_method=getattr(faiss, _INIT_METHODS[init]),
    )
    km.train(points, init_centroids=init_centroids)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    labels, _ = assign(points, centroids, spherical=spherical)
    return drop_empty(centroids, labels)
