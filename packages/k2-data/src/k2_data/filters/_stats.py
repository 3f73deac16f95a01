"""All CPU statistics of one decoded image as one flat record (a Parquet row keyed by __key__)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from jaxtyping import UInt8

from k2_data.filters._border import SIDES
from k2_data.filters._complexity import OcrFn, ocr_text_density
from k2_data.filters._decode import Decoded
from k2_data.filters._fused import pixel_stats

Stats = dict[str, float | int | str | None]

STATS_SCHEMA = pa.schema(
    [
        pa.field("decode_error", pa.string()),
        pa.field("format", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("decode_path", pa.string()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("aspect_ratio", pa.float64()),
        pa.field("stat_width", pa.int64()),
        pa.field("stat_height", pa.int64()),
        pa.field("laplacian_var", pa.float64()),
        pa.field("entropy", pa.float64()),
        pa.field("white_ratio", pa.float64()),
        pa.field("black_ratio", pa.float64()),
        *[pa.field(f"border_{side}", pa.float64()) for side in SIDES],
        pa.field("border_fraction", pa.float64()),
        pa.field("border_sides", pa.string()),
        pa.field("complexity", pa.float64()),
        pa.field("text_density", pa.float64()),
        pa.field("text_boxes", pa.int64()),
    ]
)
"""Arrow schema of `compute_stats` records; every field is null when it does not apply."""

_NAMES = tuple(STATS_SCHEMA.names)  # the schema builds a new list on every .names


@dataclass(frozen=True, kw_only=True)
class StatsConfig:
    """Parameters that change the statistics themselves (changing them means recomputing).

    Args:
        white_level: all channels >= this counts as a white pixel.
        black_level: all channels <= this counts as a black pixel.
        border_tolerance: per-channel deviation (grey levels) still counted as border colour.
        complexity_side: longer side at which the complexity score is measured (the
            statistics' default decode size, so it costs no resize).
        complexity_quality: IJG quality of the modelled JPEG quantiser of the complexity.
    """

    white_level: int = 245
    black_level: int = 10
    border_tolerance: int = 8
    complexity_side: int = 64
    complexity_quality: int = 75

    def __post_init__(self) -> None:
        if not (0 <= self.black_level < self.white_level <= 255):
            raise ValueError(
                f"need 0 <= black_level < white_level <= 255, got {self.black_level}, "
                f"{self.white_level}"
            )
        if not (0 <= self.border_tolerance <= 255):
            raise ValueError(f"border_tolerance must be in [0, 255], got {self.border_tolerance}")
        if self.complexity_side < 8 or not (1 <= self.complexity_quality <= 95):
            raise ValueError(
                "need complexity_side >= 8 and 1 <= complexity_quality <= 95, got "
                f"{self.complexity_side}, {self.complexity_quality}"
            )


def compute_stats(
    decoded: Decoded,
    *,
    ocr: OcrFn | None = None,
    config: StatsConfig = StatsConfig(),
    gray: UInt8[np.ndarray, "h w"] | None = None,
) -> Stats:
    """Compute every CPU filter statistic of one decoded image, once.

    The record has the keys of `STATS_SCHEMA`. A failed decode gives a record with
    `decode_error` set (and width, height, format, mode when the header was readable) and
    null pixel statistics, so every sample stays accounted for. Pixel statistics are taken
    on `decoded.pixels`, i.e. at the resolution chosen by `decode(max_side=...)`; Laplacian
    variance in particular grows as an image is downscaled, so compare images at one size.

    Args:
        decoded: the output of `decode`.
        ocr: optional OCR callable, run on `decoded.pixels`, returning text boxes
            (x0, y0, x1, y1) in those pixel coordinates. None leaves text_density null.
        config: parameters of the statistics (levels, tolerance, complexity size).
        gray: the luma of `decoded.pixels` (``np.asarray(decoded.image.convert("L"))``)
            when the caller already has it, to skip recomputing it; None computes it.

    Returns:
        Flat dict: decode_error, format, mode, decode_path, width, height (original header
        size), aspect_ratio (width / height), stat_width, stat_height, laplacian_var,
        entropy, white_ratio, black_ratio, border_{top,bottom,left,right} (fractions),
        border_fraction (max side), border_sides ("top,left", ... sides with a flat run),
        complexity (bits/pixel), text_density, text_boxes.
    """
    stats: Stats = dict.fromkeys(_NAMES)
    stats.update(format=decoded.format, mode=decoded.mode, decode_path=decoded.decode_path)
    if decoded.width > 0 and decoded.height > 0:
        stats.update(
            width=decoded.width,
            height=decoded.height,
            aspect_ratio=decoded.width / decoded.height,
        )
    if not decoded.ok or decoded.pixels is None:
        stats["decode_error"] = decoded.reason or "not decoded"
        return stats
    pixels = decoded.pixels
    h, w = pixels.shape[:2]
    px = pixel_stats(
        pixels,
        decoded.image,
        gray=gray,
        white_level=config.white_level,
        black_level=config.black_level,
        border_tolerance=config.border_tolerance,
        complexity_side=config.complexity_side,
        complexity_quality=config.complexity_quality,
    )
    top, bottom, left, right = px.borders
    fractions = (top / h, bottom / h, left / w, right / w)
    stats.update(
        stat_width=w,
        stat_height=h,
        laplacian_var=px.laplacian_var,
        entropy=px.entropy,
        white_ratio=px.white_ratio,
        black_ratio=px.black_ratio,
        border_top=fractions[0],
        border_bottom=fractions[1],
        border_left=fractions[2],
        border_right=fractions[3],
        border_fraction=max(fractions),
        border_sides=",".join(s for s, n in zip(SIDES, px.borders, strict=True) if n)
        if top or bottom or left or right
        else "",
        complexity=px.complexity,
    )
    if ocr is not None:
        stats["text_density"], stats["text_boxes"] = ocr_text_density(pixels, ocr)
    return stats


def stats_table(records: Sequence[Mapping[str, object]]) -> pa.Table:
    """Arrow table of `compute_stats` records with the fixed `STATS_SCHEMA` types.

    Extra keys (e.g. ``__key__``) become the first columns, with inferred types.

    Args:
        records: one dict per image.

    Returns:
        A table with one row per record.
    """
    extra = [k for k in dict.fromkeys(k for r in records for k in r) if k not in STATS_SCHEMA.names]
    columns = {name: [r.get(name) for r in records] for name in [*STATS_SCHEMA.names, *extra]}
    arrays = [pa.array(columns[name]) for name in extra]
    arrays += [pa.array(columns[f.name], type=f.type) for f in STATS_SCHEMA]
    return pa.Table.from_arrays(arrays, names=[*extra, *STATS_SCHEMA.names])
