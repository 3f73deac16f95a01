"""Cluster review: samples nearest each centroid, a naming/flagging hook, and a drop list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from jaxtyping import Bool, Float, Int64

from k2_data.cluster._hierarchy import ClusterHierarchy, leaf_centroid_scores
from k2_data.cluster._resample import per_cluster_head


@dataclass(frozen=True, kw_only=True)
class ClusterAnnotation:
    """What a reviewer (a VLM, then a human) says about one cluster."""

    name: str
    flagged: bool = False
    reason: str = ""


ClusterHook = Callable[[int, Sequence[str]], ClusterAnnotation]
"""``hook(cluster_id, keys_nearest_centroid) -> ClusterAnnotation``; e.g. a VLM call on the images."""

REVIEW_SCHEMA = pa.schema(
    [
        ("level", pa.int32()),
        ("cluster", pa.int64()),
        ("size", pa.int64()),
        ("keys", pa.list_(pa.string())),
    ]
)
ANNOTATED_SCHEMA = (
    REVIEW_SCHEMA.append(pa.field("name", pa.string()))
    .append(pa.field("flagged", pa.bool_()))
    .append(pa.field("reason", pa.string()))
)


def nearest_to_centroids(
    x: Float[np.ndarray, "n d"],
    hierarchy: ClusterHierarchy,
    *,
    level: int = 0,
    n_per_cluster: int = 8,
) -> Int64[np.ndarray, "k m"]:
    """Indices of the members nearest each cluster's centre, closest first, padded with -1.

    Args:
        x: (n, d) the embeddings that were clustered.
        hierarchy: from `hierarchical_kmeans`.
        level: which level's clusters (0 = leaves; members are all points below).
        n_per_cluster: m, how many samples to show per cluster.

    Returns:
        (k_level, m) point indices; rows of clusters with fewer than m members end in -1.
    """
    if n_per_cluster < 1:
        raise ValueError(f"n_per_cluster must be >= 1, got {n_per_cluster}")
    scores = leaf_centroid_scores(x, hierarchy, level=level)
    labels = hierarchy.labels(level)
    k = len(hierarchy.centroids[hierarchy._check_level(level)])
    chosen = per_cluster_head(labels, scores, np.full(k, n_per_cluster))
    out = np.full((k, n_per_cluster), -1, np.int64)
    starts = np.searchsorted(labels[chosen], np.arange(k))
    out[labels[chosen], np.arange(len(chosen)) - starts[labels[chosen]]] = chosen
    return out


def review_table(
    hierarchy: ClusterHierarchy,
    keys: Sequence[str],
    nearest: Int64[np.ndarray, "k m"],
    *,
    level: int = 0,
) -> pa.Table:
    """One row per cluster (level, cluster, size, ``__key__`` of its nearest samples).

    Write it with ``pyarrow.parquet.write_table`` for review; `annotate_clusters` adds the
    reviewer's columns.
    """
    if len(keys) != hierarchy.n_points:
        raise ValueError(f"keys has {len(keys)} entries, the hierarchy {hierarchy.n_points} points")
    sizes = hierarchy.sizes(level)
    if nearest.shape[0] != len(sizes):
        raise ValueError(
            f"nearest has {nearest.shape[0]} rows, level {level} {len(sizes)} clusters"
        )
    key_array = np.asarray(keys, dtype=object)
    rows = [key_array[row[row >= 0]].tolist() for row in nearest]
    return pa.table(
        {
            "level": pa.array(np.full(len(sizes), hierarchy._check_level(level)), pa.int32()),
            "cluster": pa.array(np.arange(len(sizes)), pa.int64()),
            "size": pa.array(sizes, pa.int64()),
            "keys": pa.array(rows, pa.list_(pa.string())),
        },
        schema=REVIEW_SCHEMA,
    )


def annotate_clusters(review: pa.Table, hook: ClusterHook) -> pa.Table:
    """Call ``hook(cluster, keys)`` on every row of a `review_table`; add name/flagged/reason."""
    if not review.schema.equals(REVIEW_SCHEMA):
        raise ValueError(
            f"review must be a review_table (schema {REVIEW_SCHEMA}), got {review.schema}"
        )
    notes = []
    for cluster, keys in zip(
        review.column("cluster").to_pylist(), review.column("keys").to_pylist(), strict=True
    ):
        note = hook(cluster, keys)
        if not isinstance(note, ClusterAnnotation):
            raise TypeError(f"hook must return a ClusterAnnotation, got {type(note).__name__}")
        notes.append(note)
    return (
        review.append_column("name", pa.array([n.name for n in notes], pa.string()))
        .append_column("flagged", pa.array([n.flagged for n in notes], pa.bool_()))
        .append_column("reason", pa.array([n.reason for n in notes], pa.string()))
    )


def flagged_clusters(annotated: pa.Table) -> Int64[np.ndarray, " f"]:
    """Cluster ids an `annotate_clusters` table flags: the candidates for the drop list."""
    flags = np.asarray(annotated.column("flagged").to_numpy(zero_copy_only=False), bool)
    return np.asarray(annotated.column("cluster").to_numpy(), np.int64)[flags]


def drop_clusters(
    hierarchy: ClusterHierarchy, drop: Sequence[int] | Int64[np.ndarray, " f"], *, level: int = 0
) -> Bool[np.ndarray, " n"]:
    """Keep mask over points: False for every point in a dropped cluster of ``level``.

    The drop list is the reviewed subset of `flagged_clusters` (the report drops flagged
    clusters after human review). Pass the mask as ``eligible`` to `balanced_sample`.
    """
    level = hierarchy._check_level(level)
    ids = np.asarray(list(drop), dtype=np.int64)
    k = len(hierarchy.centroids[level])
    if ids.size and (ids.min() < 0 or ids.max() >= k):
        raise ValueError(f"drop ids must be clusters of level {level}, i.e. in [0, {k})")
    return ~np.isin(hierarchy.labels(level), ids)
