"""Colour-hash category of each pixel: by Pillow's L and HSV conversions, or by a cached LUT.

Categories: 0 black (L < 32), 1 grey (S < 85), 2 + hue bin for faint colours (85 <= S < 170),
8 + hue bin for bright ones (S > 170), 14 for S == 170 (coloured, in neither band). A pixel's
category depends only on its RGB value, so one 2^24-entry uint8 table (16 MiB) built by
running every colour through the Pillow rules once replaces the two conversions per image.
"""

from __future__ import annotations

import functools

import numpy as np
from jaxtyping import UInt8
from PIL import Image

COLORHASH_NCODES = 15
"""Number of pixel categories (codes 0..14)."""

_LUT_CHUNK_REDS = 16
"""Red values per Pillow call while building the LUT: 1 Mi colours keeps the temporaries small
(~10 MiB) and cache-resident; one 2^24-pixel image would take ~250 MiB and be slower."""


@functools.cache
def _code_table() -> np.ndarray:
    """Bin code of a non-black pixel, indexed by ``S << 8 | H`` (Pillow HSV, 0..255 each).

    0 black (set separately), 1 grey (S < 85), 2 + hue bin faint, 8 + hue bin bright, 14 for
    S == 170, which imagehash counts as coloured but puts in neither saturation band. Hue bin
    is imagehash's ``np.histogram(h, np.linspace(0, 255, 7))``: the edges 0, 42.5, ..., 255
    are exact in float64, so for integer h it is ``min(6 h // 255, 5)``.
    """
    s, h = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    hue_bin = np.minimum(6 * h // 255, 5)
    code = np.where(s < 85, 1, np.where(s < 170, 2 + hue_bin, np.where(s > 170, 8 + hue_bin, 14)))
    table = code.astype(np.uint8).ravel()
    table.flags.writeable = False
    return table


def pillow_codes(image: Image.Image) -> UInt8[np.ndarray, "h w"]:
    """Category of each pixel from Pillow's ``convert("L")`` and ``convert("HSV")``, as imagehash.

    Args:
        image: a Pillow image of any mode (converted exactly as imagehash's colorhash does).

    Returns:
        uint8 codes in [0, 14], one per pixel (see the module docstring).

    References:
        imagehash 4.3 ``colorhash`` (research/data.md section 6.2).
    """
    luma = np.asarray(image.convert("L"))
    hsv = np.asarray(image.convert("HSV"))
    index = (hsv[..., 1].astype(np.uint16) << 8) | hsv[..., 0]
    code = _code_table()[index]
    code[luma < 32] = 0
    return code


@functools.cache
def colorhash_lut() -> UInt8[np.ndarray, "16777216"]:
    """Category of every 24-bit colour, indexed by ``(r << 16) | (g << 8) | b``; built once.

    Built with Pillow itself: every colour, laid out as RGB images, goes through
    `pillow_codes`, so the table equals the Pillow path bit for bit by construction. The
    categories do not depend on colorhash's binbits, so one table serves all of them.
    About 0.4 s on one core the first time it is called per process, then cached
    (read-only, 16 MiB); call it once at worker start to keep the build out of timings.

    Returns:
        read-only uint8 codes in [0, 14], 2^24 of them.
    """
    lut = np.empty(1 << 24, dtype=np.uint8)
    reds = _LUT_CHUNK_REDS
    chunk = np.empty((reds * 256, 256, 3), dtype=np.uint8)  # row = (r - r0) * 256 + g, col = b
    chunk[..., 1] = np.tile(np.arange(256, dtype=np.uint8), reds)[:, None]
    chunk[..., 2] = np.arange(256, dtype=np.uint8)
    for red in range(0, 256, reds):
        chunk[..., 0] = np.repeat(np.arange(red, red + reds, dtype=np.uint8), 256)[:, None]
        codes = pillow_codes(Image.fromarray(chunk, "RGB"))
        lut[red << 16 : (red + reds) << 16] = codes.ravel()
    lut.flags.writeable = False
    return lut


def lut_codes(image: Image.Image) -> UInt8[np.ndarray, " n"]:
    """Category of each pixel of an RGB image by `colorhash_lut`, in row-major order.

    Pillow's ``BGRX`` packer writes b, g, r, 0 per pixel, which read as little-endian uint32 is
    ``(r << 16) | (g << 8) | b``: the LUT index without any numpy shifting.

    Args:
        image: a Pillow image of mode ``RGB``.

    Returns:
        uint8 codes in [0, 14], one per pixel, equal to ``pillow_codes(image).ravel()``.
    """
    if image.mode != "RGB":
        raise ValueError(
            f"the colorhash LUT takes RGB images, got mode {image.mode!r}; use pillow_codes "
            "(colorhash_values(method='pillow')), which converts any mode as imagehash does"
        )
    index = np.frombuffer(image.tobytes("raw", "BGRX"), dtype="<u4")
    return colorhash_lut()[index]
