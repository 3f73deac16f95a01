"""Exact and near-duplicate removal on md5 + phash + colorhash (Krea 2 report, Data).

`deduplicate` turns per-sample hashes into a keep/drop table keyed by ``__key__``. The
Hamming-radius searches scale past O(n^2) and are exact: the joint phash + colorhash search
(`joint_hamming_pairs`, the default: sorted pigeonhole band keys, 10M hashes in well under
a minute on 2 cores), faiss multi-index hashing (`multihash_pairs`) or numpy banded LSH
(`banded_lsh_pairs`), all with pigeonhole recall guarantees, and faiss brute force
(`flat_pairs`) to check them. Groups are transitive
(`connected_components`); each keeps one image by a fixed rule (`select_keepers`). See
docs/k2-data.md (Hashing and deduplication).
"""

from k2_data.dedup._dedup import COLORHASH_RADIUS, DEDUP_SCHEMA, PHASH_RADIUS, deduplicate
from k2_data.dedup._faiss import flat_pairs, multihash_pairs, multihash_params
from k2_data.dedup._groups import connected_components, select_keepers
from k2_data.dedup._joint import joint_hamming_pairs
from k2_data.dedup._lsh import band_edges, banded_lsh_pairs
from k2_data.dedup._pairs import (
    SEARCH_METHODS,
    SearchMethod,
    filter_pairs,
    first_identical,
    near_duplicate_pairs,
)

__all__ = [
    "COLORHASH_RADIUS",
    "DEDUP_SCHEMA",
    "PHASH_RADIUS",
    "SEARCH_METHODS",
    "SearchMethod",
    "band_edges",
    "banded_lsh_pairs",
    "connected_components",
    "deduplicate",
    "filter_pairs",
    "first_identical",
    "flat_pairs",
    "joint_hamming_pairs",
    "multihash_pairs",
    "multihash_params",
    "near_duplicate_pairs",
    "select_keepers",
]
