"""Colour hash: quantised fractions of black, grey and 12 hue/saturation bins of the pixels."""

from __future__ import annotations

from typing import Literal

import numpy as np
from jaxtyping import Bool, Int64, UInt8

from k2_data.hashing._bits import pack_bits
from k2_data.hashing._colorhash_lut import COLORHASH_NCODES, lut_codes, pillow_codes
from k2_data.hashing._image import ImageBatch, ImageLike, as_pil

COLORHASH_BINBITS = 3
COLORHASH_NBINS = 14
"""Black, grey, then 6 hue bins of faint colours (85 <= S < 170), then 6 of bright (S > 170)."""


def _check_binbits(binbits: int) -> None:
    if not 1 <= binbits <= 8:
        raise ValueError(f"binbits must be in [1, 8], got {binbits} (imagehash's default is 3)")


def colorhash_values(
    image: ImageLike,
    *,
    binbits: int = COLORHASH_BINBITS,
    method: Literal["lut", "pillow"] = "lut",
) -> Int64[np.ndarray, "14"]:
    """The 14 quantised fractions imagehash's colorhash encodes, computed exactly as it does.

    With L = ``convert("L")`` and (H, S) = ``convert("HSV")`` at full resolution, N pixels:
    black = L < 32, grey = S < 85 and not black, coloured = the rest (C of them), faint =
    coloured with S < 170, bright = coloured with S > 170. Values: ``floor(2^b black / N)``,
    ``floor(2^b grey / N)``, then ``floor(2^b count / max(C, 1))`` for the 6 faint and 6
    bright hue bins, each capped at 2^b - 1. Integer arithmetic gives imagehash's
    ``int(frac * 2^b)`` exactly: a float quotient of integers this small never rounds up to
    the next integer.

    Args:
        image: decoded image (any Pillow mode, or a uint8 array).
        binbits: bits per value b (imagehash default 3: values 0..7).
        method: ``"lut"`` looks RGB pixels up in `colorhash_lut` (built once from the Pillow
            rules, so identical; ~3x faster on a 64 px image), other modes take the Pillow
            path; ``"pillow"`` always converts to L and HSV with Pillow (the reference).

    Returns:
        int64 values in [0, 2^b - 1]: black, grey, faint hues 0..5, bright hues 0..5.

    References:
        imagehash 4.3 ``colorhash`` (research/data.md section 6.2).
    """
    _check_binbits(binbits)
    if method not in ("lut", "pillow"):
        raise ValueError(f"method must be 'lut' or 'pillow', got {method!r}")
    pil = as_pil(image)
    use_lut = method == "lut" and pil.mode == "RGB"
    codes = lut_codes(pil) if use_lut else pillow_codes(pil).ravel()
    counts = np.bincount(codes, minlength=COLORHASH_NCODES).tolist()
    # Python ints on 15 counts: cheaper than numpy calls on arrays this small.
    scale, top = 1 << binbits, (1 << binbits) - 1
    pixels, coloured = codes.size, max(sum(counts[2:]), 1)
    values = [scale * k // pixels for k in counts[:2]]
    values += [scale * k // coloured for k in counts[2:14]]
    return np.minimum(np.array(values, dtype=np.int64), top)


def colorhash_nbits(binbits: int = COLORHASH_BINBITS, *, imagehash_compatible: bool = False) -> int:
    """Width of a colorhash in bits: 14 b (imagehash code) or 14 (2^b - 1) (k2 thermometer)."""
    return COLORHASH_NBINS * (binbits if imagehash_compatible else (1 << binbits) - 1)


def encode_colorhash(
    values: Int64[np.ndarray, "*batch 14"],
    *,
    binbits: int = COLORHASH_BINBITS,
    imagehash_compatible: bool = False,
) -> Bool[np.ndarray, "*batch nbits"]:
    """Bits of colorhash values, in the k2 thermometer code or imagehash's code.

    k2: value v becomes 2^b - 1 bits, the first v set (1 -> 1000000, 3 -> 1110000), so the
    Hamming distance between two hashes is exactly sum |v - v'|: injective, and a radius
    on it bounds how much the colour fractions move. imagehash: bit i of v is
    ``(v >> (b - 1 - i)) % 2^(b - i) > 0``, which is lossy: with b = 3, 4 and 6 both give
    110 and 5 and 7 both give 111, and its distances do not follow |v - v'|.

    Args:
        values: quantised fractions from `colorhash_values`, each in [0, 2^b - 1].
        binbits: b.
        imagehash_compatible: use imagehash's code (14 b bits) instead.

    Returns:
        bool bits, value by value.
    """
    _check_binbits(binbits)
    top = (1 << binbits) - 1
    if values.size and (values.min() < 0 or values.max() > top):
        raise ValueError(f"colorhash values must lie in [0, {top}] for binbits={binbits}")
    v = values[..., None]
    if imagehash_compatible:
        i = np.arange(binbits)
        bits = (v >> (binbits - 1 - i)) % (1 << (binbits - i)) > 0
    else:
        bits = v > np.arange(top)
    return bits.reshape(*values.shape[:-1], -1)


def colorhash_batch(
    images: ImageBatch, *, binbits: int = COLORHASH_BINBITS, imagehash_compatible: bool = False
) -> UInt8[np.ndarray, "n nbytes"]:
    """colorhash of each image, packed to bytes (most significant bit first, zero padded).

    Args:
        images: decoded images (PIL, or uint8 arrays).
        binbits: bits per fraction b (imagehash default 3).
        imagehash_compatible: imagehash's lossy 14 b-bit code, bit-identical to
            ``imagehash.colorhash(img, binbits)``; default is k2's injective 14 (2^b - 1)-bit
            thermometer code (98 bits, 13 bytes for b = 3) over the same values.

    Returns:
        (n, ceil(nbits / 8)) uint8 hashes, comparable with `hamming`.

    References:
        Krea 2 report, Data: "combine a 12x12 phash with colorhash".
    """
    values = np.zeros((len(images), COLORHASH_NBINS), dtype=np.int64)
    for i, image in enumerate(images):
        values[i] = colorhash_values(image, binbits=binbits)
    bits = encode_colorhash(values, binbits=binbits, imagehash_compatible=imagehash_compatible)
    return pack_bits(bits)


def colorhash(
    image: ImageLike, *, binbits: int = COLORHASH_BINBITS, imagehash_compatible: bool = False
) -> UInt8[np.ndarray, " nbytes"]:
    """colorhash of one image; see `colorhash_batch`.

    Returns:
        ceil(nbits / 8) uint8 bytes (13 for k2 with b = 3, 6 for imagehash's 42 bits).
    """
    return colorhash_batch([image], binbits=binbits, imagehash_compatible=imagehash_compatible)[0]
