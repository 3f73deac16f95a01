"""What a per-shard stage returns to its runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StageStatus = Literal["done", "skipped", "redecided"]


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """Outcome of one stage call on one shard.

    Args:
        shard: the input shard path, as given.
        output: the Parquet written (or found complete).
        status: ``done`` (computed now), ``skipped`` (a complete output with the same
            configuration existed), ``redecided`` (saved statistics re-decided with new
            thresholds, nothing decoded).
        rows: rows in the output, one per sample or rejected member.
        kept: rows with ``keep`` true.
    """

    shard: str
    output: str
    status: StageStatus
    rows: int
    kept: int
