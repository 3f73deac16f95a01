"""The CPU filter tier: decode once, compute statistics once, decide (and re-decide) later.

`decode` turns encoded bytes into RGB uint8 pixels (JPEG draft mode when the statistic
resolution allows, broken and truncated files reported as a reason, never raised);
`compute_stats` measures size, aspect ratio, Laplacian variance, RGB entropy, white/black
pixel ratios, flat-colour borders, complexity and OCR text density into one flat record;
`decide` / `decide_table` apply `FilterThresholds` to saved records and name the first
failing rule. See docs/k2-data.md (CPU filters).
"""

from k2_data.filters._border import SIDES, Borders, border_runs, border_widths
from k2_data.filters._complexity import (
    Boxes,
    OcrFn,
    complexity_bpp,
    complexity_from_gray,
    ocr_text_density,
    text_density,
)
from k2_data.filters._decide import FilterThresholds, decide, decide_table
from k2_data.filters._decode import JPEG_FORMATS, Decoded, decode, fit_size
from k2_data.filters._fused import PixelStats, pixel_stats
from k2_data.filters._pixels import (
    channel_histograms,
    entropy_from_histograms,
    extreme_pixel_ratios,
    laplacian_variance,
    luma,
    rgb_entropy,
)
from k2_data.filters._stats import STATS_SCHEMA, Stats, StatsConfig, compute_stats, stats_table

__all__ = [
    "JPEG_FORMATS",
    "SIDES",
    "STATS_SCHEMA",
    "Borders",
    "Boxes",
    "Decoded",
    "FilterThresholds",
    "OcrFn",
    "PixelStats",
    "Stats",
    "StatsConfig",
    "border_runs",
    "border_widths",
    "channel_histograms",
    "complexity_bpp",
    "complexity_from_gray",
    "compute_stats",
    "decide",
    "decide_table",
    "decode",
    "entropy_from_histograms",
    "extreme_pixel_ratios",
    "fit_size",
    "laplacian_variance",
    "luma",
    "ocr_text_density",
    "pixel_stats",
    "rgb_entropy",
    "stats_table",
    "text_density",
]
