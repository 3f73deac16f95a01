"""Hierarchical k-means, balanced sampling, cluster review and semantic dedup (Krea 2 report, Data).

`hierarchical_kmeans` clusters embeddings level by level on faiss with the resampling step
of Vo et al. 2024; `balanced_sample` water-fills a target size down the tree so the long
tail is kept and the head capped. `nearest_to_centroids` / `review_table` /
`annotate_clusters` export the samples nearest each centroid to a naming and flagging hook
(a VLM), and `drop_clusters` turns a reviewed drop list into a mask. `semantic_dedup`
removes near-duplicates inside leaf clusters (SemDeDup, epsilon = cosine distance). Cosine
(spherical) k-means is the default: Euclidean k-means on embeddings with more concepts
than clusters builds a catch-all cluster (docs/k2-data-cluster.md).
"""

from k2_data.cluster._hierarchy import (
    ClusterHierarchy,
    HierarchicalKMeansConfig,
    LevelConfig,
    hierarchical_kmeans,
    leaf_centroid_scores,
)
from k2_data.cluster._kmeans import KMEANS_INITS, KMeansInit, assign, kmeans
from k2_data.cluster._resample import ResampleStrategy, resample_centroids
from k2_data.cluster._review import (
    ANNOTATED_SCHEMA,
    REVIEW_SCHEMA,
    ClusterAnnotation,
    ClusterHook,
    annotate_clusters,
    drop_clusters,
    flagged_clusters,
    nearest_to_centroids,
    review_table,
)
from k2_data.cluster._sampling import balanced_sample, hierarchical_allocation, water_fill
from k2_data.cluster._semdedup import KeepRule, SemDedupResult, semantic_dedup
from k2_data.cluster._synthetic import component_coverage, long_tailed_mixture

__all__ = [
    "ANNOTATED_SCHEMA",
    "KMEANS_INITS",
    "REVIEW_SCHEMA",
    "ClusterAnnotation",
    "ClusterHierarchy",
    "ClusterHook",
    "HierarchicalKMeansConfig",
    "KMeansInit",
    "KeepRule",
    "LevelConfig",
    "ResampleStrategy",
    "SemDedupResult",
    "annotate_clusters",
    "assign",
    "balanced_sample",
    "component_coverage",
    "drop_clusters",
    "flagged_clusters",
    "hierarchical_allocation",
    "hierarchical_kmeans",
    "kmeans",
    "leaf_centroid_scores",
    "long_tailed_mixture",
    "nearest_to_centroids",
    "resample_centroids",
    "review_table",
    "semantic_dedup",
    "water_fill",
]
