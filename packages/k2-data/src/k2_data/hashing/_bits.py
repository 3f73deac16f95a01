"""Fixed-width hash bytes: packing, Hamming distance, and imagehash hex interchange."""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Int64, UInt8

POPCOUNT_TABLE: UInt8[np.ndarray, "256"] = np.array(
    [bin(i).count("1") for i in range(256)], dtype=np.uint8
)
"""Number of set bits of every byte value; the fallback popcount when numpy < 2."""


def pack_bits(bits: Bool[np.ndarray, "*batch nbits"]) -> UInt8[np.ndarray, "*batch nbytes"]:
    """Pack bits into bytes, first bit in the most significant position, zero-padded at the end.

    This is imagehash's bit order (its hex is the bits read as one big-endian integer), so a
    hash whose width is a multiple of 8 has the same bytes as ``bytes.fromhex(str(h))``.

    Args:
        bits: booleans, last axis is the hash.

    Returns:
        uint8 bytes, ``ceil(nbits / 8)`` per hash.
    """
    return np.packbits(bits, axis=-1, bitorder="big")


def unpack_bits(codes: UInt8[np.ndarray, "*batch nbytes"], nbits: int) -> Bool[np.ndarray, "..."]:
    """Inverse of `pack_bits`: the first ``nbits`` bits of each hash as booleans.

    Args:
        codes: packed hashes.
        nbits: hash width in bits, at most ``8 * nbytes``.

    Returns:
        bool array with the last axis of length ``nbits``.
    """
    if not 0 <= nbits <= 8 * codes.shape[-1]:
        raise ValueError(f"nbits={nbits} does not fit in {codes.shape[-1]} bytes per hash")
    return np.unpackbits(codes, axis=-1, count=nbits, bitorder="big").astype(bool)


def _check_codes(a: np.ndarray, b: np.ndarray) -> None:
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError(
            f"hashes must be uint8 byte arrays, got {a.dtype} and {b.dtype}; "
            "use the arrays returned by k2_data.hashing (or np.frombuffer(h, np.uint8))"
        )
    if a.shape[-1:] != b.shape[-1:]:
        raise ValueError(
            f"hash widths differ: {a.shape[-1:]} vs {b.shape[-1:]} bytes; compare hashes of the "
            "same kind and size"
        )


def _hamming_table(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(POPCOUNT_TABLE[np.bitwise_xor(a, b)].sum(axis=-1, dtype=np.int64))


def _hamming_ufunc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # np.asarray: a 0-d array (not a numpy scalar) for two single hashes.
    return np.asarray(np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=-1, dtype=np.int64))


_hamming_fast = _hamming_ufunc if hasattr(np, "bitwise_count") else _hamming_table


def hamming(
    a: UInt8[np.ndarray, "*batch_a nbytes"], b: UInt8[np.ndarray, "*batch_b nbytes"]
) -> Int64[np.ndarray, "..."]:
    """Hamming distance between packed hashes, broadcast over the leading axes.

    ``hamming(x[:, None], y[None])`` is the (n, m) distance matrix. Uses numpy's
    ``bitwise_count`` where available (numpy >= 2), else a 256-entry popcount table.

    Args:
        a: packed hashes (uint8), last axis the bytes of one hash.
        b: packed hashes of the same width, broadcastable against ``a``.

    Returns:
        int64 number of differing bits, shape ``broadcast(a.shape[:-1], b.shape[:-1])``.
    """
    _check_codes(a, b)
    return _hamming_fast(a, b)


def to_imagehash_hex(code: UInt8[np.ndarray, " nbytes"], *, nbits: int) -> str:
    """The hex string ``str(imagehash.ImageHash)`` would print for these bits.

    imagehash reads the bits as one big-endian integer and zero-pads the hex on the left, so
    for widths that are not a multiple of 8 (the 42-bit colorhash) it is not ``code.hex()``.

    Args:
        code: one packed hash.
        nbits: its width in bits (144 for phash 12x12, 42 for colorhash with binbits=3).

    Returns:
        Lower-case hex, ``ceil(nbits / 4)`` digits.
    """
    bits = unpack_bits(code, nbits)
    value = int("".join("1" if x else "0" for x in bits) or "0", 2)
    return f"{value:0{-(-nbits // 4)}x}"


def from_imagehash_hex(text: str, *, nbits: int) -> UInt8[np.ndarray, " nbytes"]:
    """Packed bytes of an imagehash hex string (``str(h)``), e.g. hashes stored by other tools.

    Args:
        text: hex digits as printed by imagehash.
        nbits: the hash width in bits; imagehash's own ``hex_to_hash`` guesses a square
            width and silently gets the 42-bit colorhash wrong, hence the explicit width.

    Returns:
        The packed hash, ``ceil(nbits / 8)`` bytes.
    """
    value = int(text, 16)
    if value >> nbits:
        raise ValueError(f"hex {text!r} has more than nbits={nbits} significant bits")
    bits = np.array([(value >> (nbits - 1 - i)) & 1 for i in range(nbits)], dtype=bool)
    return pack_bits(bits)
