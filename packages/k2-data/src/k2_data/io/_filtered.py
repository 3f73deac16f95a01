"""Write the kept samples of a shard into a new tar by copying their original member bytes."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Collection
from pathlib import Path

from k2_data.io._atomic import atomic_path
from k2_data.io._tar import iter_shard, shard_stem, split_member_name


def write_filtered_shard(
    shard: str | os.PathLike, out_path: str | os.PathLike, keep: Collection[str]
) -> int:
    """Copy the samples of `shard` whose ``__key__`` is in `keep` into a new tar, byte for byte.

    Images are never re-encoded: each member is written with its original tar header (name,
    size, mode, mtime, owner) and its original bytes, sidecars included, in the original
    order. Samples read with an error (unsafe names, duplicate keys, no image, ...) are
    never copied, even if their key is listed. The output is written atomically.

    Args:
        shard: the input ``.tar`` shard.
        out_path: the filtered ``.tar`` to write.
        keep: the keys to copy (e.g. the ``__key__`` of rows with ``keep`` true).

    Returns:
        The number of samples written.
    """
    wanted = set(keep)
    written = 0
    with atomic_path(out_path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
        for sample in iter_shard(shard):
            if sample.error is not None or sample.key not in wanted:
                continue
            for info, name in zip(sample.infos, sample.names, strict=True):
                _, ext = split_member_name(name)  # type: ignore[misc]  # valid in a usable sample
                out.addfile(info, io.BytesIO(sample.members[ext]))
            written += 1
    return written


def filtered_shard_path(shard: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Where `write_filtered_shard` output for `shard` goes: ``<out_dir>/<stem>.tar``."""
    return Path(out_dir) / f"{shard_stem(shard)}.tar"
