"""md5 of the raw encoded bytes: the exact-duplicate key (Krea 2 report, Data)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from jaxtyping import UInt8

MD5_NBYTES = 16


def md5(data: bytes | bytearray | memoryview) -> UInt8[np.ndarray, "16"]:
    """md5 digest of one sample's encoded bytes (the file as stored, never re-encoded).

    Args:
        data: the encoded image bytes.

    Returns:
        The 16-byte digest as uint8.

    References:
        Krea 2 report, Data: "combining md5, phash, and colorhash to remove duplicate images";
        RFC 1321 (MD5).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"md5 takes the encoded bytes, got {type(data).__name__}")
    return np.frombuffer(hashlib.md5(data, usedforsecurity=False).digest(), dtype=np.uint8)


def md5_batch(datas: Sequence[bytes | bytearray | memoryview]) -> UInt8[np.ndarray, "n 16"]:
    """`md5` of each sample, stacked.

    Args:
        datas: encoded bytes of n samples.

    Returns:
        (n, 16) uint8 digests.
    """
    out = np.empty((len(datas), MD5_NBYTES), dtype=np.uint8)
    for i, data in enumerate(datas):
        out[i] = md5(data)
    return out
