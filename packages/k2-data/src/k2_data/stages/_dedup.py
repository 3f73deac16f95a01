"""Deduplicate the hashes gathered from CPU-tier Parquets into one keep/drop table."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from k2_data.filters import FilterThresholds
from k2_data.io import read_complete_metadata, write_parquet_atomic
from k2_data.stages._cpu_tier import CPU_TIER_STAGE, decide_cpu_tier

DEDUP_STAGE = "dedup"
DEDUP_OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("__key__", pa.string(), nullable=False),
        pa.field("__shard__", pa.string(), nullable=False),
        pa.field("keep", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("keeper", pa.string()),
    ]
)
"""One row per CPU-tier row. ``keep``: kept by the filters and by dedup; ``reason``: the filter
reason, else ``duplicate_of:<key>`` / ``md5_duplicate_of:<key>``, else ""; ``keeper``: the
key its duplicate group keeps (itself when kept), null for rows the filters dropped."""

_COLUMNS = ["__key__", "__shard__", "keep", "reason", "md5", "phash", "colorhash"]
_COLUMNS += ["width", "height", "file_size"]


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """(n, width) uint8 view of a fixed-width binary column without nulls."""
    width = column.type.byte_width
    array = column.combine_chunks()
    if array.null_count:
        raise ValueError("a kept row has a null hash; re-run the CPU tier on its shard")
    if len(array) == 0:
        return np.zeros((0, width), np.uint8)
    data = np.frombuffer(array.buffers()[1], np.uint8)
    return data[array.offset * width : (array.offset + len(array)) * width].reshape(-1, width)


def _gather(parquets: Sequence[str | os.PathLike], thresholds: FilterThresholds | None):
    settings, tables = None, []
    for path in parquets:
        meta = read_complete_metadata(path)
        if meta is None or meta.get("stage") != CPU_TIER_STAGE:
            raise ValueError(
                f"{path} is not a complete CPU-tier output; run run_cpu_tier on its shard first"
            )
        if settings is not None and meta["settings"] != settings:
            raise ValueError(
                f"{path} was computed with {meta['settings']}, the others with {settings}; "
                "hashes from different decode or hash settings are not comparable, "
                "recompute them with one setting"
            )
        settings = meta["settings"]
        table = (
            pq.read_table(path) if thresholds is not None else pq.read_table(path, columns=_COLUMNS)
        )
        if thresholds is not None:
            table = decide_cpu_tier(table, thresholds).select(_COLUMNS)
        tables.append(table.replace_schema_metadata(None))
    return settings, pa.concat_tables(tables)


def run_dedup(
    parquets: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    thresholds: FilterThresholds | None = None,
    phash_radius: int | None = None,
    colorhash_radius: int | None = None,
    method: str = "joint",
) -> pa.Table:
    """md5 + phash + colorhash deduplication over CPU-tier outputs, written atomically.

    Only rows the filters kept take part: a filtered-out image must not become the keeper
    of its group and drop a good copy. Their hashes go to `k2_data.dedup.deduplicate`
    (exact md5 matches, then phash within `phash_radius` and colorhash within
    `colorhash_radius`; one keeper per group: most pixels, largest file, smallest key).

    Args:
        parquets: CPU-tier Parquet files (all computed with one decode and hash setting).
        out_path: the keep/drop Parquet to write.
        thresholds: re-decide the filters from the saved statistics first (None: use the
            saved ``keep`` / ``reason``).
        phash_radius: largest phash Hamming distance of a near duplicate (None:
            `k2_data.dedup.PHASH_RADIUS`).
        colorhash_radius: largest colorhash Hamming distance of a near duplicate (None:
            `k2_data.dedup.COLORHASH_RADIUS`).
        method: near-duplicate search: ``"joint"`` (`k2_data.dedup.joint_hamming_pairs`,
            one exact search over both hashes) or a `k2_data.dedup.near_duplicate_pairs`
            method on phash followed by the colorhash filter.

    Returns:
        The table written, with `DEDUP_OUTPUT_SCHEMA`, rows in input order.

    References:
        Krea 2 report, Data: "combining md5, phash, and colorhash to remove duplicate images".
    """
    # Imported here: faiss takes ~0.4 s to import, and per-shard workers never need it.
    from k2_data.dedup import COLORHASH_RADIUS, PHASH_RADIUS, deduplicate

    phash_radius = PHASH_RADIUS if phash_radius is None else phash_radius
    colorhash_radius = COLORHASH_RADIUS if colorhash_radius is None else colorhash_radius
    if not parquets:
        raise ValueError("no CPU-tier Parquet files given; pass the run_cpu_tier outputs")
    settings, table = _gather(parquets, thresholds)
    filtered = table["keep"].to_numpy(zero_copy_only=False).astype(bool)
    rows = np.flatnonzero(filtered)
    cand = table.take(pa.array(rows, pa.int64()))
    keys = cand["__key__"].to_pylist()
    counts = Counter(keys)
    if len(counts) != len(keys):
        dup = sorted(k for k, c in counts.items() if c > 1)[:5]
        raise ValueError(
            f"kept __key__ values repeat across shards (e.g. {dup}); dedup needs unique keys "
            "(img2dataset keys embed the shard number): give each dataset distinct keys"
        )
    keep = np.zeros(table.num_rows, bool)
    reason = np.array(table["reason"].to_pylist(), dtype=object)
    keeper = np.full(table.num_rows, None, dtype=object)
    if len(rows):
        result = deduplicate(
            keys,
            md5=_codes(cand["md5"]),
            phash=_codes(cand["phash"]),
            colorhash=_codes(cand["colorhash"]),
            width=cand["width"].to_numpy(zero_copy_only=False),
            height=cand["height"].to_numpy(zero_copy_only=False),
            file_size=cand["file_size"].to_numpy(zero_copy_only=False),
            phash_radius=phash_radius,
            colorhash_radius=colorhash_radius,
            method=method,  # type: ignore[arg-type]
        )
        keep[rows] = result["keep"].to_numpy(zero_copy_only=False)
        reason[rows] = result["reason"].to_pylist()
        keeper[rows] = result["keeper"].to_pylist()
    columns = [table["__key__"], table["__shard__"], pa.array(keep)]
    columns += [pa.array(reason.tolist(), pa.string()), pa.array(keeper.tolist(), pa.string())]
    out = pa.Table.from_arrays(columns, schema=DEDUP_OUTPUT_SCHEMA)
    meta = {
        "stage": DEDUP_STAGE,
        "inputs": [Path(p).name for p in parquets],
        "settings": settings,
        "phash_radius": phash_radius,
        "colorhash_radius": colorhash_radius,
        "method": method,
        "thresholds": None if thresholds is None else dataclasses.asdict(thresholds),
    }
    write_parquet_atomic(out, out_path, metadata=meta)
    return out
