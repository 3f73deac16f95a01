"""Image hashes for deduplication: md5 of the bytes, 12x12 phash, colorhash (Krea 2 report, Data).

Every hash is fixed-width uint8 bytes (one row per image in the batch functions), compared
with `hamming`. `phash` and `colorhash` have an ``imagehash_compatible=True`` mode that is
bit-identical to ``imagehash.phash`` / ``imagehash.colorhash`` on the same PIL image; the
default k2 modes are deterministic across machines (phash) and injective with a Hamming
distance equal to the L1 change of the colour fractions (colorhash). See
docs/k2-data.md (Hashing and deduplication).
"""

from k2_data.hashing._bits import (
    POPCOUNT_TABLE,
    from_imagehash_hex,
    hamming,
    pack_bits,
    to_imagehash_hex,
    unpack_bits,
)
from k2_data.hashing._colorhash import (
    COLORHASH_BINBITS,
    COLORHASH_NBINS,
    colorhash,
    colorhash_batch,
    colorhash_nbits,
    colorhash_values,
    encode_colorhash,
)
from k2_data.hashing._colorhash_lut import colorhash_lut
from k2_data.hashing._dct import dct2_matrix, dct2_scipy
from k2_data.hashing._image import ImageBatch, ImageLike, as_pil
from k2_data.hashing._md5 import MD5_NBYTES, md5, md5_batch
from k2_data.hashing._phash import (
    PHASH_HASH_SIZE,
    phash,
    phash_batch,
    phash_from_thumbnails,
    phash_nbits,
    phash_thumbnail,
)

__all__ = [
    "COLORHASH_BINBITS",
    "COLORHASH_NBINS",
    "MD5_NBYTES",
    "PHASH_HASH_SIZE",
    "POPCOUNT_TABLE",
    "ImageBatch",
    "ImageLike",
    "as_pil",
    "colorhash",
    "colorhash_batch",
    "colorhash_lut",
    "colorhash_nbits",
    "colorhash_values",
    "dct2_matrix",
    "dct2_scipy",
    "encode_colorhash",
    "from_imagehash_hex",
    "hamming",
    "md5",
    "md5_batch",
    "pack_bits",
    "phash",
    "phash_batch",
    "phash_from_thumbnails",
    "phash_nbits",
    "phash_thumbnail",
    "to_imagehash_hex",
    "unpack_bits",
]
