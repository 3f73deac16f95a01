"""Atomic, self-describing outputs: write to a temporary name, rename when complete."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

K2_METADATA_KEY = b"k2"
"""Parquet schema-metadata key holding a stage output's JSON description."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name is unique per call (``.<name>.<random>.tmp``), so two workers that
    redo the same shard (a retried Ray task) never write into one file, and a reader never
    sees a half-written file under the final name: `os.replace` is atomic on one filesystem.
    The data is fsynced before the rename, so a crash cannot leave an empty final file.

    Args:
        path: the final path (its directory is created if missing).

    Returns:
        A context manager yielding the temporary path to write.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(
    table: pa.Table, path: str | os.PathLike, *, metadata: Mapping[str, Any]
) -> Path:
    """Write `table` to Parquet atomically, with a JSON description that marks it complete.

    The description (``metadata`` plus ``"complete": true`` and ``"rows"``) is stored in the
    Parquet footer under the ``k2`` schema-metadata key, so `read_complete_metadata` can tell
    a finished output from a truncated or foreign file by reading the footer only. The bytes
    depend only on the table and the description (no timestamps), so reruns are identical.

    Args:
        table: the rows to write.
        path: final ``.parquet`` path.
        metadata: JSON-serialisable description (stage name, configuration, ...).

    Returns:
        The final path.
    """
    description = {**metadata, "complete": True, "rows": table.num_rows}
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[K2_METADATA_KEY] = json.dumps(description, sort_keys=True).encode()
    table = table.replace_schema_metadata(schema_meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def read_complete_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The k2 description of a finished Parquet output, or None if it must be (re)done.

    None when the file is missing, unreadable (e.g. truncated: no valid footer), lacks the
    k2 description, or the description does not say complete with a matching row count.

    Args:
        path: a ``.parquet`` path written by `write_parquet_atomic`.

    Returns:
        The description dict, or None.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with pq.ParquetFile(path) as parquet:
            raw = (parquet.schema_arrow.metadata or {}).get(K2_METADATA_KEY)
            rows = parquet.metadata.num_rows
        description = json.loads(raw) if raw is not None else None
    except (OSError, ValueError, pa.ArrowException):
        return None
    if not isinstance(description, dict) or description.get("complete") is not True:
        return None
    return description if description.get("rows") == rows else None
