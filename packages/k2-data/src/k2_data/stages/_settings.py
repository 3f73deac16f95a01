"""Settings that define the CPU tier's statistics and hashes (changing one means recomputing)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from k2_data.filters import StatsConfig

DEFAULT_MAX_PIXELS = 89_478_485
"""Pixel limit of the decompression-bomb check: Pillow's default ``Image.MAX_IMAGE_PIXELS``."""


@dataclass(frozen=True, kw_only=True)
class CpuTierSettings:
    """What the CPU tier measures and how; saved in each output, compared when resuming.

    Decisions (`k2_data.filters.FilterThresholds`) are not part of it: changing thresholds
    re-decides saved statistics without decoding anything.

    Args:
        max_side: longer side of the decoded pixels the statistics are taken on (JPEG draft
            decoding when it allows: 64 px is libjpeg's 1/8 scale, DC only, for sources up
            to 512 px, the cheapest decode there is; the default thresholds assume 64).
        hash_side: longer side of the pixels phash and colorhash are taken on: the decoded
            pixels box-reduced to fit (None: the decoded pixels as they are). Colour
            fractions and a 48 px phash thumbnail need few pixels (see
            docs/k2-data-pipeline.md for how far the hashes move). Never mix settings within
            one dataset.
        phash_size: phash side (12 -> 144 bits, the report's choice).
        phash_reducing_gap: `k2_data.hashing.phash_batch` speed knob (None: exact LANCZOS).
        colorhash_binbits: colorhash bits per fraction (k2 thermometer code).
        max_pixels: header width x height above which an image is not decoded
            (``too_large: decompression_bomb``). Pillow itself refuses images above twice
            ``PIL.Image.MAX_IMAGE_PIXELS``, so a larger limit also needs that raised.
        stats: parameters of the statistics themselves.
    """

    max_side: int = 64
    hash_side: int | None = 64
    phash_size: int = 12
    phash_reducing_gap: float | None = None
    colorhash_binbits: int = 3
    max_pixels: int = DEFAULT_MAX_PIXELS
    stats: StatsConfig = field(default_factory=StatsConfig)

    def __post_init__(self) -> None:
        if self.max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {self.max_side}")
        if self.hash_side is not None and self.hash_side < self.phash_size:
            raise ValueError(
                f"hash_side={self.hash_side} is below phash_size={self.phash_size}; use a "
                "larger hash_side or None (hash the decoded pixels)"
            )
        if self.phash_size < 2:
            raise ValueError(f"phash_size must be >= 2, got {self.phash_size} (report: 12)")
        if not 1 <= self.colorhash_binbits <= 8:
            raise ValueError(f"colorhash_binbits must be in [1, 8], got {self.colorhash_binbits}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")

    def describe(self) -> dict[str, Any]:
        """The settings as JSON gives them back (so saved and current settings compare equal)."""
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True))
