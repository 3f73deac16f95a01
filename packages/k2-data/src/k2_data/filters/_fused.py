"""Every pixel statistic of one decoded image in one pass of few, whole-array numpy calls."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from jaxtyping import UInt8
from PIL import Image

from k2_data.filters._border import border_runs
from k2_data.filters._complexity import complexity_bpp, complexity_from_gray
from k2_data.filters._decode import fit_size
from k2_data.filters._pixels import laplacian_variance

_LOG2_3 = math.log2(3)


class PixelStats(NamedTuple):
    """The pixel statistics of one image, each as its per-statistic function defines it.

    Args:
        laplacian_var: `laplacian_variance` of the luma.
        entropy: `rgb_entropy`.
        white_ratio: first value of `extreme_pixel_ratios`.
        black_ratio: second value of `extreme_pixel_ratios`.
        borders: `border_widths` run lengths (top, bottom, left, right) in pixels.
        complexity: `complexity_bpp` of the luma.
        gray: the luma (`luma`), kept for hashing.
    """

    laplacian_var: float
    entropy: float
    white_ratio: float
    black_ratio: float
    borders: tuple[int, int, int, int]
    complexity: float
    gray: np.ndarray


def pixel_stats(
    pixels: UInt8[np.ndarray, "h w 3"],
    image: Image.Image | None = None,
    *,
    gray: UInt8[np.ndarray, "h w"] | None = None,
    white_level: int = 245,
    black_level: int = 10,
    border_tolerance: int = 8,
    complexity_side: int = 64,
    complexity_quality: int = 75,
) -> PixelStats:
    """All CPU-tier pixel statistics of one RGB image, fused to a few dozen numpy calls.

    Equal to `laplacian_variance(luma(p))`, `rgb_entropy(p)`, `extreme_pixel_ratios(p)`,
    `border_widths(p)` and `complexity_bpp(luma(p))` (up to float rounding in the last
    place of the entropy), but sharing one planar copy, one luma and Pillow's C histogram:
    the per-statistic functions cost ~5x more on a 64 px image, where numpy call overhead,
    not arithmetic, is the cost.

    Args:
        pixels: RGB uint8 image.
        image: the same pixels as a Pillow RGB image (e.g. `Decoded.image`); built when None.
        gray: their luma (`luma`, i.e. ``np.asarray(image.convert("L"))``) when the caller
            already has it (e.g. for hashing); computed when None.
        white_level: all channels >= this counts as white.
        black_level: all channels <= this counts as black.
        border_tolerance: per-channel deviation still counted as border colour.
        complexity_side: side the complexity is measured at.
        complexity_quality: quality of the modelled JPEG quantiser.

    Returns:
        The statistics and the luma.
    """
    if image is None:
        image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    h, w = pixels.shape[:2]
    if gray is None:
        gray = np.asarray(image.convert("L"))
    elif gray.shape != (h, w) or gray.dtype != np.uint8:
        raise ValueError(
            f"gray must be the uint8 ({h}, {w}) luma of pixels, got {gray.dtype} {gray.shape}; "
            "pass np.asarray(image.convert('L')) of the same image or leave it None"
        )
    # Pillow pools the three channel histograms; the pooled entropy of equal-count groups
    # is their mean entropy + log2(3) (entropy chain rule), so one C call gives rgb_entropy.
    entropy = max(image.entropy() - _LOG2_3, 0.0)
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    n = h * w
    white = int(np.count_nonzero(planes.min(axis=0) >= white_level)) / n
    black = int(np.count_nonzero(planes.max(axis=0) <= black_level)) / n
    if fit_size(w, h, complexity_side) == (w, h):
        complexity = complexity_from_gray(gray, quality=complexity_quality)
    else:
        complexity = complexity_bpp(gray, side=complexity_side, quality=complexity_quality)
    return PixelStats(
        laplacian_var=laplacian_variance(gray),
        entropy=entropy,
        white_ratio=white,
        black_ratio=black,
        borders=border_runs(planes, border_tolerance),
        complexity=complexity,
        gray=gray,
    )
