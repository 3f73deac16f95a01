"""Caption records keyed by `__key__`, appended as atomic Parquet chunks (resumable)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

CAPTION_SCHEMA = pa.schema(
    [
        pa.field("__key__", pa.string(), nullable=False),
        pa.field("ocr_text", pa.string()),
        pa.field("long", pa.string()),
        pa.field("medium", pa.string()),
        pa.field("short", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]
)
"""One row per image. status: "ok", "caption_empty" or "reformat_unparsed" (see `error`).
`ocr_text` is null when no OCR engine ran, "" when it found no text."""


class CaptionStore:
    """Caption records in `root/part-000003.parquet` files, one per finished batch.

    A part is written to a temporary name and renamed, so a crash leaves either a whole
    part or none; a rerun skips every key already stored. One writer per directory.

    Args:
        root: the directory (created if missing).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._parts = sorted(int(p.stem.split("-")[1]) for p in self.root.glob("part-*.parquet"))
        self._done: set[str] = set()
        for part in self._parts:
            keys = pq.read_table(self._file(part), columns=["__key__"]).column(0)
            self._done.update(keys.to_pylist())

    def _file(self, part: int) -> Path:
        return self.root / f"part-{part:06d}.parquet"

    def __len__(self) -> int:
        return len(self._done)

    def __contains__(self, key: object) -> bool:
        return key in self._done

    def missing(self, keys: Sequence[str]) -> list[str]:
        """Keys (in order, without repeats) that have no record yet."""
        return [k for k in dict.fromkeys(keys) if k not in self._done]

    def add(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records (dicts with the `CAPTION_SCHEMA` fields) as one part."""
        if not records:
            return
        keys = [r["__key__"] for r in records]
        if len(set(keys)) != len(keys) or any(k in self._done for k in keys):
            raise ValueError("records repeat a __key__ or one already stored")
        table = pa.Table.from_pylist([dict(r) for r in records], schema=CAPTION_SCHEMA)
        part = self._parts[-1] + 1 if self._parts else 0
        tmp = self._file(part).with_suffix(".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self._file(part))
        self._parts.append(part)
        self._done.update(keys)

    def read(self) -> pa.Table:
        """Every record, in the order written."""
        if not self._parts:
            return CAPTION_SCHEMA.empty_table()
        return pa.concat_tables(
            [pq.read_table(self._file(p), schema=CAPTION_SCHEMA) for p in self._parts]
        )
