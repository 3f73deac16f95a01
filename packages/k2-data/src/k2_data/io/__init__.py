"""Shard I/O: WebDataset tars in, Parquet keyed by ``__key__`` out, atomically and resumably.

`iter_shard` reads a tar shard in the img2dataset layout sample by sample without decoding
(any of jpg/jpeg/png/webp, sidecars kept, original ``__key__``), and yields unusable members
(path traversal, links, missing image, duplicate keys, a corrupt tar) with a reason instead
of skipping them. `write_parquet_atomic` / `read_complete_metadata` give every stage output a
temporary-then-rename write and a footer that says it is complete, which is how stages skip
finished shards and redo half-written ones. `write_filtered_shard` copies kept samples'
original bytes into new tars (never re-encoding). See docs/k2-data-pipeline.md.
"""

from k2_data.io._atomic import (
    K2_METADATA_KEY,
    atomic_path,
    read_complete_metadata,
    write_parquet_atomic,
)
from k2_data.io._filtered import filtered_shard_path, write_filtered_shard
from k2_data.io._tar import (
    IMAGE_EXTENSIONS,
    ShardSample,
    iter_shard,
    shard_stem,
    split_member_name,
    unsafe_name_reason,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "K2_METADATA_KEY",
    "ShardSample",
    "atomic_path",
    "filtered_shard_path",
    "iter_shard",
    "read_complete_metadata",
    "shard_stem",
    "split_member_name",
    "unsafe_name_reason",
    "write_filtered_shard",
    "write_parquet_atomic",
]
