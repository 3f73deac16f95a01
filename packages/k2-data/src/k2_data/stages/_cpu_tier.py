"""The CPU tier of one shard: decode once -> filter statistics + md5/phash/colorhash -> Parquet."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from k2_data.filters import (
    STATS_SCHEMA,
    Decoded,
    FilterThresholds,
    StatsConfig,
    compute_stats,
    decide_table,
    decode,
    fit_size,
    stats_table,
)
from k2_data.hashing import (
    colorhash_nbits,
    colorhash_values,
    encode_colorhash,
    md5,
    pack_bits,
    phash_from_thumbnails,
    phash_nbits,
    phash_thumbnail,
)
from k2_data.io import (
    ShardSample,
    iter_shard,
    read_complete_metadata,
    shard_stem,
    write_parquet_atomic,
)
from k2_data.stages._result import StageResult
from k2_data.stages._settings import DEFAULT_MAX_PIXELS, CpuTierSettings

CPU_TIER_STAGE = "cpu_tier"
_THRESHOLDS = FilterThresholds()
_STATS_CONFIG = StatsConfig()
_SETTINGS = CpuTierSettings()

_SAMPLE_FIELDS = [
    pa.field("__key__", pa.string(), nullable=False),
    pa.field("__shard__", pa.string(), nullable=False),
    pa.field("members", pa.string(), nullable=False),
    pa.field("image_ext", pa.string()),
    pa.field("file_size", pa.int64()),
    pa.field("io_error", pa.string()),
    pa.field("md5", pa.binary(16)),
]


def cpu_tier_schema(*, phash_size: int = 12, colorhash_binbits: int = 3) -> pa.Schema:
    """Arrow schema of a CPU-tier Parquet: sample columns, `STATS_SCHEMA`, hashes, decision.

    Hashes are fixed-width binary (k2 modes: phash ``ceil(phash_size^2 / 8)`` bytes,
    colorhash thermometer code ``ceil(14 (2^b - 1) / 8)`` bytes), null when not decoded.
    """
    phash_bytes = -(-phash_nbits(phash_size) // 8)
    color_bytes = -(-colorhash_nbits(colorhash_binbits) // 8)
    return pa.schema(
        [
            *_SAMPLE_FIELDS,
            *STATS_SCHEMA,
            pa.field("phash", pa.binary(phash_bytes)),
            pa.field("colorhash", pa.binary(color_bytes)),
            pa.field("keep", pa.bool_(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
        ]
    )


def decide_cpu_tier(table: pa.Table, thresholds: FilterThresholds = _THRESHOLDS) -> pa.Table:
    """(Re-)decide keep/reason of a CPU-tier table from its saved statistics; nothing decodes.

    `k2_data.filters.decide_table` on the statistics, then rows with an ``io_error``
    (unsafe member name, no image, corrupt tar, ...) are dropped with that error as reason.

    Args:
        table: a CPU-tier table (e.g. a Parquet written by `run_cpu_tier`, read back).
        thresholds: the filter thresholds.

    Returns:
        The table with ``keep`` and ``reason`` replaced, columns in the original order.
    """
    order = table.column_names
    decided = decide_table(table, thresholds)
    io_error = decided["io_error"]
    keep = pc.and_(decided["keep"], pc.is_null(io_error))
    reason = pc.if_else(pc.is_valid(io_error), io_error, decided["reason"])
    decided = decided.drop_columns(["keep", "reason"]).append_column("keep", keep)
    decided = decided.append_column("reason", reason)
    names = order if "keep" in order else [*order, "keep", "reason"]
    return decided.select(names)


def _hash_image(decoded: Decoded, hash_side: int | None) -> Image.Image:
    """The RGB image phash and colorhash are taken on: the decoded one box-reduced to hash_side."""
    image = decoded.image if decoded.image is not None else Image.fromarray(decoded.pixels)
    width, height = image.size
    if hash_side is None or max(width, height) <= hash_side:
        return image
    target = fit_size(width, height, hash_side)
    if width % target[0] == 0 and height % target[1] == 0:  # reduce() is ~4x faster than resize
        return image.reduce((width // target[0], height // target[1]))
    return image.resize(target, Image.Resampling.BOX)


def cpu_tier_table(
    samples: Iterable[ShardSample],
    *,
    shard: str,
    settings: CpuTierSettings = _SETTINGS,
    thresholds: FilterThresholds = _THRESHOLDS,
) -> pa.Table:
    """CPU-tier rows of in-memory samples: one decode feeds every statistic and both hashes.

    Each image is opened once and decoded with ``decode(max_side=settings.max_side,
    max_pixels=settings.max_pixels)`` (JPEG draft when it allows; the pixel limit is
    checked on the header). The statistics (`compute_stats`, one fused pass) are taken on
    those pixels, phash and colorhash on the same pixels box-reduced to
    ``settings.hash_side`` (with the defaults, the same 64 px image); ``decode_path`` tells
    which decode every value came from. md5 is of the encoded bytes. Rows follow sample
    order. Hashes equal `k2_data.hashing.phash_batch` / `colorhash_batch` of those pixels.

    Args:
        samples: samples from `k2_data.io.iter_shard` (errored ones become dropped rows).
        shard: value of the ``__shard__`` column.
        settings: what to measure and how.
        thresholds: filter thresholds for the ``keep`` / ``reason`` columns.

    Returns:
        A table with `cpu_tier_schema`.

    References:
        Krea 2 report, Data: cheap CPU filters and md5 + 12x12 phash + colorhash dedup.
    """
    schema = cpu_tier_schema(
        phash_size=settings.phash_size, colorhash_binbits=settings.colorhash_binbits
    )
    columns: dict[str, list[Any]] = {f.name: [] for f in _SAMPLE_FIELDS}
    keys, shards, members, exts = (
        columns[k] for k in ("__key__", "__shard__", "members", "image_ext")
    )
    sizes, errors, md5s = columns["file_size"], columns["io_error"], columns["md5"]
    stats: list[dict[str, Any]] = []
    thumbs, colours, decoded_rows = [], [], []
    gap, binbits = settings.phash_reducing_gap, settings.colorhash_binbits
    with warnings.catch_warnings():
        # decode(max_pixels=...) checks the header; it replaces Pillow's warning-level check.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for row, sample in enumerate(samples):
            data = sample.image
            keys.append(sample.key)
            shards.append(shard)
            members.append(",".join(sample.members))
            exts.append(sample.image_ext)
            sizes.append(None if data is None else len(data))
            errors.append(sample.error)
            if data is None or sample.error is not None:
                md5s.append(None)
                stats.append({})
                continue
            md5s.append(md5(data).tobytes())
            decoded = decode(data, max_side=settings.max_side, max_pixels=settings.max_pixels)
            if not decoded.ok:
                stats.append(compute_stats(decoded, config=settings.stats))
                continue
            image = _hash_image(decoded, settings.hash_side)
            grey = image.convert("L")
            # convert("L") is the statistics' luma too: share it when the hash image is the
            # decoded one (the default, hash_side == max_side) instead of converting twice.
            gray = np.asarray(grey) if image is decoded.image else None
            stats.append(compute_stats(decoded, config=settings.stats, gray=gray))
            # phash_batch's thumbnail and colorhash_batch's values, from this one image.
            thumbs.append(phash_thumbnail(grey, hash_size=settings.phash_size, reducing_gap=gap))
            colours.append(colorhash_values(image, binbits=binbits))
            decoded_rows.append(row)
    n = len(stats)
    phash: list[bytes | None] = [None] * n
    color: list[bytes | None] = [None] * n
    if thumbs:
        p = phash_from_thumbnails(np.stack(thumbs), hash_size=settings.phash_size)
        c = pack_bits(encode_colorhash(np.stack(colours), binbits=binbits))
        for i, row in enumerate(decoded_rows):
            phash[row], color[row] = p[i].tobytes(), c[i].tobytes()
    arrays = [pa.array(columns[f.name], type=f.type) for f in _SAMPLE_FIELDS]
    arrays += stats_table(stats).select(STATS_SCHEMA.names).columns
    arrays += [pa.array(phash, schema.field("phash").type)]
    arrays += [pa.array(color, schema.field("colorhash").type)]
    arrays += [pa.array([False] * n), pa.array([""] * n)]
    table = pa.Table.from_arrays(arrays, schema=schema)
    return decide_cpu_tier(table, thresholds)


def run_cpu_tier(
    shard_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_side: int = 64,
    thresholds: FilterThresholds = _THRESHOLDS,
    phash_size: int = 12,
    hash_side: int | None = 64,
    phash_reducing_gap: float | None = None,
    colorhash_binbits: int = 3,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    stats_config: StatsConfig = _STATS_CONFIG,
) -> StageResult:
    """Run the CPU tier on one tar shard into ``<out_dir>/<shard stem>.parquet``, resumably.

    A complete output (its footer says so) computed with the same `CpuTierSettings` is
    skipped; if only the thresholds changed, its saved statistics are re-decided without
    decoding. Anything else (missing, truncated, foreign, other settings) is recomputed
    and written atomically. Keywords are flat so ``functools.partial`` can bind them.

    Args:
        shard_path: the WebDataset ``.tar`` shard.
        out_dir: directory of the per-shard Parquet files; shard names must be unique in it.
        max_side: see `CpuTierSettings`.
        thresholds: filter thresholds for ``keep`` / ``reason``.
        phash_size: see `CpuTierSettings`.
        hash_side: see `CpuTierSettings`.
        phash_reducing_gap: see `CpuTierSettings`.
        colorhash_binbits: see `CpuTierSettings`.
        max_pixels: see `CpuTierSettings`.
        stats_config: `CpuTierSettings.stats`.

    Returns:
        A `StageResult` (status ``done``, ``skipped`` or ``redecided``).

    References:
        Krea 2 report, Data: cheap CPU filters and md5 + 12x12 phash + colorhash dedup.
    """
    settings = CpuTierSettings(
        max_side=max_side,
        hash_side=hash_side,
        phash_size=phash_size,
        phash_reducing_gap=phash_reducing_gap,
        colorhash_binbits=colorhash_binbits,
        max_pixels=max_pixels,
        stats=stats_config,
    )
    name = shard_stem(shard_path)
    output = Path(out_dir) / f"{name}.parquet"
    decisions = json.loads(json.dumps(dataclasses.asdict(thresholds), sort_keys=True))
    meta = {"stage": CPU_TIER_STAGE, "shard": name, "settings": settings.describe()}
    found = read_complete_metadata(output)
    if found is not None and all(found.get(k) == v for k, v in meta.items()):
        if found.get("thresholds") == decisions:
            kept = pc.sum(pq.read_table(output, columns=["keep"])["keep"]).as_py() or 0
            return StageResult(
                shard=str(shard_path),
                output=str(output),
                status="skipped",
                rows=found["rows"],
                kept=kept,
            )
        table = decide_cpu_tier(pq.read_table(output), thresholds)
        status = "redecided"
    else:
        table = cpu_tier_table(
            iter_shard(shard_path), shard=name, settings=settings, thresholds=thresholds
        )
        status = "done"
    write_parquet_atomic(table, output, metadata={**meta, "thresholds": decisions})
    kept = int(np.count_nonzero(table["keep"].to_numpy(zero_copy_only=False)))
    return StageResult(
        shard=str(shard_path), output=str(output), status=status, rows=table.num_rows, kept=kept
    )
