"""md5 + phash + colorhash deduplication into a keep/drop table keyed by ``__key__``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
from jaxtyping import Shaped, UInt8

from k2_data.dedup._groups import connected_components, select_keepers
from k2_data.dedup._joint import joint_hamming_pairs
from k2_data.dedup._pairs import SearchMethod, filter_pairs, first_identical, near_duplicate_pairs

PHASH_RADIUS = 12
"""Default phash radius: 12 of 144 bits (8%), about imagehash's usual 5 of 64 bits."""
COLORHASH_RADIUS = 4
"""Default colorhash radius for the k2 thermometer code: the 14 quantised fractions move by
at most 4 steps of 1/8 in total."""

DEDUP_SCHEMA = pa.schema(
    [
        pa.field("__key__", pa.string(), nullable=False),
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("keeper", pa.string(), nullable=False),
    ]
)
"""``reason`` is "" when kept, ``duplicate_of:<key>`` or ``md5_duplicate_of:<key>`` when
dropped; ``keeper`` is the ``__key__`` its group keeps (its own key when kept)."""


def _pairs_of(rep: np.ndarray) -> np.ndarray:
    """Edges joining each row to its identical representative."""
    rows = np.flatnonzero(rep != np.arange(len(rep)))
    return np.stack([rep[rows], rows], axis=1)


def deduplicate(
    keys: Sequence[str] | Shaped[np.ndarray, " n"],
    *,
    md5: UInt8[np.ndarray, "n 16"] | None = None,
    phash: UInt8[np.ndarray, "n pbytes"] | None = None,
    colorhash: UInt8[np.ndarray, "n cbytes"] | None = None,
    width: Shaped[np.ndarray, " n"] | None = None,
    height: Shaped[np.ndarray, " n"] | None = None,
    file_size: Shaped[np.ndarray, " n"] | None = None,
    phash_radius: int = PHASH_RADIUS,
    colorhash_radius: int = COLORHASH_RADIUS,
    method: Literal["joint"] | SearchMethod = "joint",
) -> pa.Table:
    """Group exact and near duplicates and keep one image per group.

    Two images are duplicates when their md5 digests are equal, or when their phash
    distance is <= phash_radius AND (if colorhash is given) their colorhash distance is <=
    colorhash_radius. Groups are the connected components of that relation (transitive);
    each keeps one image by `select_keepers`: most pixels, then largest file, then smallest
    ``__key__``. The near-duplicate search runs once per distinct (phash, colorhash) among
    distinct md5s, so byte-identical or hash-identical floods cost nothing extra.

    Args:
        keys: unique ``__key__`` per sample.
        md5: (n, 16) digests of the encoded bytes, or None.
        phash: (n, pbytes) phashes (one mode and size for all), or None.
        colorhash: (n, cbytes) colorhashes, or None; used only with phash.
        width: image width per sample, for the keeper rule (with height), or None.
        height: image height per sample, or None.
        file_size: encoded bytes per sample, for the keeper rule, or None.
        phash_radius: largest phash Hamming distance of a near duplicate.
        colorhash_radius: largest colorhash Hamming distance of a near duplicate.
        method: near-duplicate search, all exact. ``"joint"`` (default) searches phash and
            colorhash together with `joint_hamming_pairs` (phash alone: ``"multihash"``);
            ``"multihash"``, ``"lsh"`` or ``"flat"`` search phash with `near_duplicate_pairs`
            and then keep the pairs within the colorhash radius.

    Returns:
        Table with `DEDUP_SCHEMA`, one row per sample in input order.

    References:
        Krea 2 report, Data: "combining md5, phash, and colorhash to remove duplicate images".
    """
    key_array = np.asarray(keys, dtype=str)
    n = len(key_array)
    if len(np.unique(key_array)) != n:
        raise ValueError("keys must be unique: every sample needs its own __key__")
    if colorhash is not None and phash is None:
        raise ValueError("colorhash refines phash matches; pass phash as well")
    if md5 is None and phash is None:
        raise ValueError("pass md5 and/or phash: there is nothing to deduplicate on")
    for name, codes in (("md5", md5), ("phash", phash), ("colorhash", colorhash)):
        if codes is not None and (codes.ndim != 2 or len(codes) != n):
            raise ValueError(f"{name} must have one row per key ({n}), got shape {codes.shape}")
    if phash_radius < 0 or colorhash_radius < 0:
        raise ValueError("radii must be >= 0")

    edges = [np.zeros((0, 2), np.int64)]
    todo = np.arange(n)
    if md5 is not None:
        md5_rep = first_identical(md5)
        edges.append(_pairs_of(md5_rep))
        todo = np.flatnonzero(md5_rep == np.arange(n))
    if phash is not None and len(todo):
        both = phash[todo] if colorhash is None else np.concatenate([phash, colorhash], 1)[todo]
        hash_rep = first_identical(both)
        edges.append(todo[_pairs_of(hash_rep)])
        todo = todo[hash_rep == np.arange(len(todo))]
        if colorhash is not None and method == "joint":
            pairs = joint_hamming_pairs(
                phash[todo],
                colorhash[todo],
                phash_radius=phash_radius,
                colorhash_radius=colorhash_radius,
            )
        else:
            phash_method = "multihash" if method == "joint" else method
            pairs = near_duplicate_pairs(phash[todo], radius=phash_radius, method=phash_method)
            if colorhash is not None:
                pairs = filter_pairs(pairs, colorhash[todo], radius=colorhash_radius)
        edges.append(todo[pairs])

    labels = connected_components(n, np.concatenate(edges))
    keeper = select_keepers(labels, keys=key_array, width=width, height=height, file_size=file_size)
    keep = keeper == np.arange(n)
    same_bytes = np.zeros(n, bool) if md5 is None else (md5 == md5[keeper]).all(axis=1)
    keeper_keys = key_array[keeper]
    prefix = np.where(same_bytes, "md5_duplicate_of:", "duplicate_of:")
    reason = np.where(keep, "", np.char.add(prefix, keeper_keys))
    return pa.table(
        {
            "__key__": pa.array(key_array.tolist(), pa.string()),
            "keep": pa.array(keep),
            "reason": pa.array(reason.tolist(), pa.string()),
            "keeper": pa.array(keeper_keys.tolist(), pa.string()),
        },
        schema=DEDUP_SCHEMA,
    )
