"""Hierarchical k-means with resampling (Vo et al. 2024): level l clusters the centroids of l-1."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Float32, Int64

from k2_data.cluster._kmeans import KMEANS_INITS, KMeansInit, as_points, train_kmeans
from k2_data.cluster._resample import ResampleStrategy, own_centroid_scores, resample_step


@dataclass(frozen=True, kw_only=True)
class LevelConfig:
    """One level: k clusters, then ``n_resampling_steps`` steps of ``sample_size`` per cluster.

    The paper's web-image setting uses (steps, sample size) = (1, 1) at the first level and
    (10, about half the mean cluster size) above it.
    """

    n_clusters: int
    n_resampling_steps: int = 1
    sample_size: int = 10
    n_iter: int = 20

    def __post_init__(self) -> None:
        if self.n_clusters < 1 or self.n_iter < 1 or self.sample_size < 1:
            raise ValueError(f"n_clusters, n_iter and sample_size must be >= 1: {self}")
        if self.n_resampling_steps < 0:
            raise ValueError(f"n_resampling_steps must be >= 0: {self}")


@dataclass(frozen=True, kw_only=True)
class HierarchicalKMeansConfig:
    """Levels from the finest (first clustering of the data) to the coarsest (top).

    Attributes:
        levels: one `LevelConfig` per level, ``n_clusters`` strictly decreasing.
        spherical: cosine k-means at every level (default; see `kmeans` for why).
        init: faiss initialisation, one of ``KMEANS_INITS``.
        resample_strategy: ``"closest"`` (paper default) or ``"random"`` members.
        max_points_per_centroid: faiss training subsample per centroid (speed knob).
        seed: base seed; level l uses ``seed + l``.
    """

    levels: tuple[LevelConfig, ...]
    spherical: bool = True
    init: KMeansInit = "afkmc2"
    resample_strategy: ResampleStrategy = "closest"
    max_points_per_centroid: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.levels or not all(isinstance(lv, LevelConfig) for lv in self.levels):
            raise ValueError("levels must be a non-empty tuple of LevelConfig, finest first")
        ks = [lv.n_clusters for lv in self.levels]
        if any(a <= b for a, b in itertools.pairwise(ks)):
            raise ValueError(f"n_clusters must decrease from the finest level to the top: {ks}")
        if self.init not in KMEANS_INITS:
            raise ValueError(f"init must be one of {KMEANS_INITS}, got {self.init!r}")
        if self.resample_strategy not in ("closest", "random"):
            raise ValueError(f"resample_strategy must be 'closest' or 'random': {self}")
        if self.max_points_per_centroid < 1:
            raise ValueError("max_points_per_centroid must be >= 1")


@dataclass(frozen=True)
class ClusterHierarchy:
    """A tree of clusters: level 0 = leaves (clusters of points), the last level = top.

    Attributes:
        centroids: ``centroids[l]`` is the (k_l, d) float32 centres of level l.
        parents: ``parents[0]`` maps each point to its leaf; ``parents[l]`` (l >= 1) maps each
            cluster of level l-1 to its cluster at level l.
        spherical: whether centres are unit vectors compared by cosine.
    """

    centroids: tuple[np.ndarray, ...]
    parents: tuple[np.ndarray, ...]
    spherical: bool

    @property
    def n_levels(self) -> int:
        return len(self.centroids)

    @property
    def n_points(self) -> int:
        return len(self.parents[0])

    def labels(self, level: int = 0) -> Int64[np.ndarray, " n"]:
        """Cluster of every point at ``level`` (negative levels count from the top)."""
        level = self._check_level(level)
        out = self.parents[0]
        for lv in range(1, level + 1):
            out = self.parents[lv][out]
        return out

    def sizes(self, level: int = 0) -> Int64[np.ndarray, " k"]:
        """Number of points in each cluster of ``level``."""
        level = self._check_level(level)
        return np.bincount(self.labels(level), minlength=len(self.centroids[level]))

    def _check_level(self, level: int) -> int:
        if not -self.n_levels <= level < self.n_levels:
            raise IndexError(f"level {level} out of range for {self.n_levels} levels")
        return level % self.n_levels


def hierarchical_kmeans(
    x: Float[np.ndarray, "n d"], config: HierarchicalKMeansConfig
) -> ClusterHierarchy:
    """Cluster the data, then the centroids, level by level, resampling after each k-means.

    Level 1 runs k-means on the points, every higher level on the centroids of the level
    below, each followed by `resample_centroids` steps. Each level makes the centres more
    uniform over the support of the data, so head concepts take fewer clusters and the
    long tail more. Clusters left empty are dropped, so a level can have fewer clusters
    than configured.

    Args:
        x: (n, d) embeddings.
        config: levels and options.

    Returns:
        The `ClusterHierarchy`.

    References:
        Vo et al. 2024, "Automatic Data Curation for Self-Supervised Learning: A
        Clustering-Based Approach", Sec. 4, Alg. 1.
    """
    points = as_points(x, spherical=config.spherical)
    centroids: list[np.ndarray] = []
    parents: list[np.ndarray] = []
    for level, lv in enumerate(config.levels):
        data = points if level == 0 else centroids[-1]
        if lv.n_clusters > len(data):
            raise ValueError(
                f"level {level} asks for {lv.n_clusters} clusters of {len(data)} "
                + ("points" if level == 0 else "non-empty clusters from the level below")
                + "; lower n_clusters at this level or raise it below"
            )
        rng = np.random.default_rng(config.seed + level)
        cents, labels = train_kmeans(
            data,
            n_clusters=lv.n_clusters,
            n_iter=lv.n_iter,
            spherical=config.spherical,
            init=config.init,
            max_points_per_centroid=config.max_points_per_centroid,
            seed=config.seed + level,
        )
        for _ in range(lv.n_resampling_steps):
            cents, labels = resample_step(
                data,
                cents,
                labels,
                sample_size=lv.sample_size,
                n_iter=lv.n_iter,
                spherical=config.spherical,
                strategy=config.resample_strategy,
                rng=rng,
            )
        centroids.append(cents)
        parents.append(labels)
    return ClusterHierarchy(tuple(centroids), tuple(parents), config.spherical)


def leaf_centroid_scores(
    x: Float[np.ndarray, "n d"], hierarchy: ClusterHierarchy, *, level: int = 0
) -> Float32[np.ndarray, " n"]:
    """Distance of each point to its cluster's centre at ``level``: 1 - cosine, or squared L2."""
    points = as_points(x, spherical=hierarchy.spherical)
    if len(points) != hierarchy.n_points:
        raise ValueError(f"x has {len(points)} rows, the hierarchy {hierarchy.n_points} points")
    lv = hierarchy._check_level(level)
    scores = own_centroid_scores(
        points, hierarchy.centroids[lv], hierarchy.labels(lv), spherical=hierarchy.spherical
    )
    return scores + 1.0 if hierarchy.spherical else scores
