"""Image complexity (compressed bits per pixel) and OCR text density."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import SupportsFloat

import numpy as np
from jaxtyping import Shaped, UInt8
from PIL import Image

from k2_data.filters._decode import _box_resize, fit_size

Boxes = Sequence[Sequence[SupportsFloat]] | Shaped[np.ndarray, "n 4"]
"""Text boxes (x0, y0, x1, y1) in pixels: a list of 4-sequences or an (N, 4) array."""

OcrFn = Callable[[np.ndarray], Boxes]
"""OCR callable: RGB uint8 (H, W, 3) array -> text boxes (x0, y0, x1, y1) in its pixel coords."""


def _jpeg_size(gray: np.ndarray, quality: int) -> int:
    buffer = io.BytesIO()
    # Standard Huffman tables (optimize=False) and one grey channel (no chroma subsampling):
    # the size depends on the content, not on encoder options.
    Image.fromarray(gray, "L").save(buffer, "JPEG", quality=quality, optimize=False)
    return buffer.tell()


@functools.lru_cache(maxsize=4096)
def _flat_jpeg_size(width: int, height: int, quality: int, level: int) -> int:
    return _jpeg_size(np.full((height, width), level, np.uint8), quality)


def complexity_bpp(gray: UInt8[np.ndarray, "h w"], *, side: int = 256, quality: int = 75) -> float:
    """Image complexity as JPEG bits per pixel of the grey image at a fixed low resolution.

    The grey image is box-filtered to fit a `side` square, encoded as baseline JPEG at
    `quality`, and the size of a flat image of the same size and mean grey (headers,
    tables, DC-only blocks) is subtracted. At the defaults a flat image scores 0, scikit-learn's two sample
    photographs 0.8 and 1.5, and uniform RGB noise 3.7. It measures detail that survives at
    the training resolution, in bits a codec cannot save; a cheap proxy (one small encode,
    ~0.3 ms at 256 px) for the report's "image-complexity score". Measuring at a fixed size
    makes scores comparable across source resolutions and source JPEG qualities.

    Args:
        gray: grey uint8 image.
        side: longer side of the image that is encoded (the lowest training resolution).
        quality: JPEG quality of the encode (1-95).

    Returns:
        Bits per pixel above a flat image, >= 0.

    References:
        Krea 2 report, Data: "an image-complexity score ... to exclude images whose text and
        content cannot be meaningfully represented at low resolution".
    """
    if side < 8 or not (1 <= quality <= 95):
        raise ValueError(f"need side >= 8 and 1 <= quality <= 95, got {side=}, {quality=}")
    h, w = gray.shape
    size = fit_size(w, h, side)
    small = Image.fromarray(np.ascontiguousarray(gray), "L")
    if size != (w, h):
        small = _box_resize(small, size)
    pixels = np.asarray(small)
    # The flat reference takes the image's mean grey so its DC codes match a flat input.
    level = round(float(pixels.mean()))
    excess = _jpeg_size(pixels, quality) - _flat_jpeg_size(size[0], size[1], quality, level)
    # Baseline JPEG of any content is at least as large as the flat one up to a few bytes of
    # padding; clamp those to zero so the score stays a non-negative cost.
    return max(0, excess) * 8 / (size[0] * size[1])


def text_density(boxes: Boxes, *, height: int, width: int) -> float:
    """Fraction of the image area covered by the union of axis-aligned text boxes.

    Overlapping boxes count once: the union is measured exactly by cutting the plane at
    every box edge (coordinate compression), so the result does not depend on a raster.
    Boxes are clipped to the image. For rotated or polygon OCR output, pass bounding boxes.

    Args:
        boxes: (x0, y0, x1, y1) per box, pixels, x to the right and y down; x1 >= x0, y1 >= y0.
        height: image height in the boxes' pixel units.
        width: image width in the boxes' pixel units.

    Returns:
        Covered fraction in [0, 1]; 0.0 for no boxes.

    References:
        Krea 2 report, Data: "text density (from OCR results)".
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height=}, {width=}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
    if not np.isfinite(b).all() or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(
            "OCR boxes must be finite (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0; convert "
            "(x, y, w, h) or polygon output to corner boxes first"
        )
    b = np.clip(b, 0.0, [width, height, width, height])
    if len(b) == 0:
        return 0.0
    xs, ys = np.unique(b[:, [0, 2]]), np.unique(b[:, [1, 3]])
    covered = np.zeros((len(ys) - 1, len(xs) - 1), dtype=bool)
    for x0, y0, x1, y1 in b:
        i0, i1 = np.searchsorted(ys, [y0, y1])
        j0, j1 = np.searchsorted(xs, [x0, x1])
        covered[i0:i1, j0:j1] = True
    area = np.outer(np.diff(ys), np.diff(xs))
    return float(area[covered].sum() / (height * width))


def ocr_text_density(pixels: UInt8[np.ndarray, "h w 3"], ocr: OcrFn) -> tuple[float, int]:
    """Run an OCR callable on an image and measure its text density.

    Args:
        pixels: RGB uint8 image passed to `ocr` as is.
        ocr: returns text boxes (x0, y0, x1, y1) in the pixel coordinates of `pixels`.

    Returns:
        (text_density, number of boxes).
    """
    boxes = ocr(pixels)
    return text_density(boxes, height=pixels.shape[0], width=pixels.shape[1]), len(boxes)
