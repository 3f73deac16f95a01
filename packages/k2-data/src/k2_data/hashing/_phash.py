"""Perceptual hash: median-thresholded low DCT frequencies of a small grey thumbnail."""

from __future__ import annotations

import numpy as np
from jaxtyping import Shaped, UInt8
from PIL import Image

from k2_data.hashing._bits import pack_bits
from k2_data.hashing._dct import dct2_matrix, dct2_scipy
from k2_data.hashing._image import ImageBatch, ImageLike, as_pil

PHASH_HASH_SIZE = 12
"""The report's 12x12 phash (144 bits); imagehash's default of 8 "has a high false-positive rate"."""
_SNAP = 2.0**16  # k2 mode rounds coefficients to multiples of 2**-16 (see phash_from_thumbnails)
_CHUNK = 1024  # images per vectorised DCT, bounds memory


def phash_nbits(hash_size: int = PHASH_HASH_SIZE) -> int:
    """Width in bits of a phash: ``hash_size ** 2`` (stored in ``ceil(bits / 8)`` bytes)."""
    return hash_size * hash_size


def _check(hash_size: int, highfreq_factor: int, compatible: bool, gap: float | None) -> None:
    if hash_size < 2:
        raise ValueError(f"hash_size must be >= 2, got {hash_size} (the report uses 12)")
    if highfreq_factor < 1:
        raise ValueError(f"highfreq_factor must be >= 1, got {highfreq_factor} (imagehash uses 4)")
    if gap is not None and compatible:
        raise ValueError(
            "reducing_gap changes the thumbnail, so the hash would no longer match imagehash; "
            "pass reducing_gap=None with imagehash_compatible=True"
        )
    if gap is not None and gap < 1.0:
        raise ValueError(f"reducing_gap must be >= 1.0 (Pillow's rule) or None, got {gap}")


def _thumbnail(image: ImageLike, side: int, gap: float | None) -> np.ndarray:
    pil = as_pil(image)
    grey = pil if pil.mode == "L" else pil.convert("L")  # ITU-R 601 luma, as imagehash
    return np.asarray(grey.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=gap))


def phash_thumbnail(
    image: ImageLike,
    *,
    hash_size: int = PHASH_HASH_SIZE,
    highfreq_factor: int = 4,
    reducing_gap: float | None = None,
) -> UInt8[np.ndarray, "side side"]:
    """The grey LANCZOS thumbnail `phash_batch` hashes, for callers that batch the DCT
    themselves (`phash_from_thumbnails`), e.g. a stage that already holds the grey image.

    Args:
        image: decoded image (PIL of any mode, or a uint8 array).
        hash_size: hash side (the thumbnail side is hash_size * highfreq_factor).
        highfreq_factor: thumbnail side over hash_size (imagehash's 4).
        reducing_gap: as in `phash_batch`.

    Returns:
        (side, side) uint8 grey levels.
    """
    _check(hash_size, highfreq_factor, False, reducing_gap)
    return _thumbnail(image, hash_size * highfreq_factor, reducing_gap)


def phash_from_thumbnails(
    thumbnails: Shaped[np.ndarray, "b side side"],
    *,
    hash_size: int = PHASH_HASH_SIZE,
    imagehash_compatible: bool = False,
) -> UInt8[np.ndarray, "b nbytes"]:
    """phash of grey thumbnails that are already resized (the DCT and threshold steps).

    For each thumbnail P, C = D P D^T with D the unnormalised DCT-II (C[u, v], u vertical
    frequency); keep the top-left ``hash_size x hash_size`` block, DC included; bit (u, v)
    is ``C[u, v] > median(block)``, in row-major order, packed most significant bit first.

    k2 mode multiplies by a cached cosine matrix (only the kept rows) and rounds C to
    multiples of 2**-16 before the median, so coefficients equal in exact arithmetic (flat
    or mirror-symmetric images) tie exactly and ``>`` sends them to 0 on every machine and
    BLAS. The imagehash-compatible mode repeats scipy's FFT-based DCT bit for bit instead,
    rounding noise included, because that noise decides imagehash's bits on such images.

    Args:
        thumbnails: grey levels, (b, side, side) with side >= hash_size (uint8 or float).
        hash_size: side of the kept low-frequency block.
        imagehash_compatible: reproduce ``imagehash.phash`` exactly.

    Returns:
        (b, ceil(hash_size**2 / 8)) uint8 hashes.

    References:
        Krea 2 report, Data: "we therefore combine a 12x12 phash with colorhash"; Zauner 2010,
        "Implementation and benchmarking of perceptual image hash functions" (DCT phash).
    """
    side = thumbnails.shape[-1]
    if side < hash_size:
        raise ValueError(f"thumbnail side {side} is smaller than hash_size={hash_size}")
    pixels = np.asarray(thumbnails, dtype=np.float64)
    if imagehash_compatible:
        block = dct2_scipy(dct2_scipy(pixels, axis=1)[:, :hash_size], axis=2)[..., :hash_size]
    else:
        d = dct2_matrix(hash_size, side)
        block = np.rint(np.matmul(np.matmul(d, pixels), d.T) * _SNAP)
    flat = block.reshape(block.shape[0], -1)
    return pack_bits(flat > np.median(flat, axis=1, keepdims=True))


def phash_batch(
    images: ImageBatch,
    *,
    hash_size: int = PHASH_HASH_SIZE,
    highfreq_factor: int = 4,
    imagehash_compatible: bool = False,
    reducing_gap: float | None = None,
) -> UInt8[np.ndarray, "n nbytes"]:
    """phash of each image: grey, LANCZOS to (hash_size * highfreq_factor)^2, DCT, median.

    Args:
        images: decoded images (PIL, or uint8 arrays); hash them from one decode path.
        hash_size: the hash is hash_size^2 bits (report: 12 -> 144 bits).
        highfreq_factor: thumbnail side over hash_size (imagehash's 4: a 48 px thumbnail).
        imagehash_compatible: equal, bit for bit, to ``imagehash.phash(img, hash_size,
            highfreq_factor)`` on the same PIL image (see `phash_from_thumbnails`).
        reducing_gap: k2 mode only. Pillow's two-step resize (integer box reduce, then
            LANCZOS); 2.0 is about 3x faster on 512 px images and moves a 144-bit hash by
            0.5-1.3 bits on average (p95 2-6; content dependent, like JPEG draft decoding).
            None resizes in one LANCZOS step, as imagehash. Use one setting per dataset.

    Returns:
        (n, ceil(hash_size**2 / 8)) uint8 hashes, comparable with `hamming`.

    References:
        Krea 2 report, Data; imagehash 4.3 ``phash`` (research/data.md section 6.1).
    """
    _check(hash_size, highfreq_factor, imagehash_compatible, reducing_gap)
    side = hash_size * highfreq_factor
    out = np.empty((len(images), -(-phash_nbits(hash_size) // 8)), dtype=np.uint8)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK]
        thumbs = np.stack([_thumbnail(image, side, reducing_gap) for image in chunk])
        out[start : start + len(chunk)] = phash_from_thumbnails(
            thumbs, hash_size=hash_size, imagehash_compatible=imagehash_compatible
        )
    return out


def phash(
    image: ImageLike,
    *,
    hash_size: int = PHASH_HASH_SIZE,
    highfreq_factor: int = 4,
    imagehash_compatible: bool = False,
    reducing_gap: float | None = None,
) -> UInt8[np.ndarray, " nbytes"]:
    """phash of one image; see `phash_batch` for the arguments.

    Returns:
        ceil(hash_size**2 / 8) uint8 bytes (18 for the report's 12x12).
    """
    return phash_batch(
        [image],
        hash_size=hash_size,
        highfreq_factor=highfreq_factor,
        imagehash_compatible=imagehash_compatible,
        reducing_gap=reducing_gap,
    )[0]
