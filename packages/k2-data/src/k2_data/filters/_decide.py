"""Keep/drop decisions on saved statistics, separate from computing them, so thresholds re-tune."""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True, kw_only=True)
class FilterThresholds:
    """Thresholds of the CPU filter tier; None disables a rule.

    The report names the filters but gives no numbers; these defaults are k2's starting
    points for statistics computed with ``decode(max_side=64)`` and the default
    `StatsConfig`, meant to be re-tuned on saved statistics with `decide_table`.

    Args:
        min_short_side: drop when min(width, height) of the original file is below this.
        max_aspect_ratio: drop when max(w / h, h / w) is above this.
        min_laplacian_var: drop when the Laplacian variance is below this (off by default:
            the report keeps blur, which can be deliberate).
        max_laplacian_var: drop extreme texture and noise above this.
        min_entropy: drop flat-colour images whose mean channel entropy (bits) is below this.
        max_white_ratio: drop when the near-white pixel fraction is above this.
        max_black_ratio: drop when the near-black pixel fraction is above this.
        max_border_fraction: drop when a flat border covers more than this fraction of a side.
        max_complexity: drop when the complexity (modelled JPEG bits/pixel at 64 px) is above
            this.
        max_text_density: drop when OCR boxes cover more than this fraction (skipped when
            text density was not computed).
    """

    min_short_side: int | None = 256
    max_aspect_ratio: float | int | None = 3.0
    min_laplacian_var: float | int | None = None
    max_laplacian_var: float | int | None = 10_000.0
    min_entropy: float | int | None = 4.0
    max_white_ratio: float | int | None = 0.6
    max_black_ratio: float | int | None = 0.6
    max_border_fraction: float | int | None = 0.1
    max_complexity: float | int | None = 3.0
    max_text_density: float | int | None = 0.3

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and not value >= 0:
                raise ValueError(f"{field.name} must be >= 0 or None, got {value}")
        if self.max_aspect_ratio is not None and self.max_aspect_ratio < 1:
            raise ValueError(
                f"max_aspect_ratio is max(w/h, h/w) and must be >= 1, got {self.max_aspect_ratio}"
            )
        lo, hi = self.min_laplacian_var, self.max_laplacian_var
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_laplacian_var {lo} > max_laplacian_var {hi}")


def _short_side_row(row: Mapping[str, object]) -> object:
    w, h = row["width"], row["height"]
    return None if w is None or h is None else min(w, h)


def _aspect_row(row: Mapping[str, object]) -> object:
    ar = row["aspect_ratio"]
    return None if ar is None else max(ar, 1.0 / ar)


# Quantities that are not a stored column: how to get them from a row, a table, which columns.
_DERIVED: dict[str, tuple[Callable, Callable, tuple[str, ...]]] = {
    "short_side": (
        _short_side_row,
        lambda t: pc.min_element_wise(t["width"], t["height"]),
        ("width", "height"),
    ),
    "aspect_ratio": (
        _aspect_row,
        lambda t: pc.max_element_wise(t["aspect_ratio"], pc.divide(1.0, t["aspect_ratio"])),
        ("aspect_ratio",),
    ),
}
_TABLE_OPS = {"<": pc.less, ">": pc.greater}
_ROW_OPS = {"<": operator.lt, ">": operator.gt}


@dataclass(frozen=True)
class _Rule:
    quantity: str
    op: str  # "<" drops values below the threshold, ">" values above it
    threshold: float | int

    @property
    def reason(self) -> str:
        return f"{self.quantity}{self.op}{self.threshold:g}"

    @property
    def columns(self) -> tuple[str, ...]:
        return _DERIVED[self.quantity][2] if self.quantity in _DERIVED else (self.quantity,)

    def row_fails(self, row: Mapping[str, object]) -> bool:
        get = (
            _DERIVED[self.quantity][0]
            if self.quantity in _DERIVED
            else (lambda r: r[self.quantity])
        )
        value = get(row)
        return value is not None and _ROW_OPS[self.op](value, self.threshold)

    def table_fails(self, table: pa.Table) -> pa.ChunkedArray:
        value = (
            _DERIVED[self.quantity][1](table) if self.quantity in _DERIVED else table[self.quantity]
        )
        return pc.fill_null(_TABLE_OPS[self.op](value, self.threshold), False)


@functools.lru_cache(maxsize=64)
def _rules(t: FilterThresholds) -> tuple[_Rule, ...]:
    """The enabled rules in the order they are checked; the first failing one names the drop."""
    specs = [
        ("short_side", "<", t.min_short_side),
        ("aspect_ratio", ">", t.max_aspect_ratio),
        ("laplacian_var", "<", t.min_laplacian_var),
        ("laplacian_var", ">", t.max_laplacian_var),
        ("entropy", "<", t.min_entropy),
        ("white_ratio", ">", t.max_white_ratio),
        ("black_ratio", ">", t.max_black_ratio),
        ("border_fraction", ">", t.max_border_fraction),
        ("complexity", ">", t.max_complexity),
        ("text_density", ">", t.max_text_density),
    ]
    return tuple(_Rule(q, op, thr) for q, op, thr in specs if thr is not None)


def _check_columns(names: list[str] | tuple[str, ...], thresholds: FilterThresholds) -> None:
    needed = {"decode_error"}.union(*(r.columns for r in _rules(thresholds)))
    missing = sorted(needed - set(names))
    if missing:
        raise KeyError(
            f"statistics lack {missing}; compute them with k2_data.filters.compute_stats "
            "or set the matching FilterThresholds fields to None"
        )


def decide(
    stats: Mapping[str, object], thresholds: FilterThresholds = FilterThresholds()
) -> tuple[bool, str]:
    """Keep or drop one image from its statistics.

    Rules run in a fixed order (broken file, short side, aspect ratio, Laplacian variance,
    entropy, white ratio, black ratio, border, complexity, text density); the first failing
    one is the reason. A null statistic passes its rule (e.g. text density without OCR).

    Args:
        stats: one `compute_stats` record (or a row of a saved table).
        thresholds: the thresholds; None fields are skipped.

    Returns:
        (keep, reason): reason is "" when kept, else e.g. ``"laplacian_var>10000"`` or
        ``"broken_file: truncated: no end-of-image marker after the scan data"``.
    """
    _check_columns(tuple(stats), thresholds)
    if stats["decode_error"] is not None:
        return False, f"broken_file: {stats['decode_error']}"
    for rule in _rules(thresholds):
        if rule.row_fails(stats):
            return False, rule.reason
    return True, ""


def decide_table(table: pa.Table, thresholds: FilterThresholds = FilterThresholds()) -> pa.Table:
    """Vectorised `decide` over a table of statistics: appends `keep` and `reason` columns.

    Row for row identical to `decide`, so thresholds can be re-tuned on saved Parquet
    statistics without decoding an image again.

    Args:
        table: statistics table (e.g. `stats_table` output or a Parquet file read back).
        thresholds: the thresholds; None fields are skipped.

    Returns:
        The input table with ``keep`` (bool) and ``reason`` (string, "" when kept) appended
        (replaced if already present).
    """
    _check_columns(table.column_names, thresholds)
    reason = pa.chunked_array([pa.array([""] * table.num_rows, pa.string())])
    for rule in reversed(_rules(thresholds)):  # the earliest failing rule is written last
        reason = pc.if_else(rule.table_fails(table), pa.scalar(rule.reason), reason)
    error = table["decode_error"].cast(pa.string())
    broken = pc.binary_join_element_wise("broken_file: ", error, "")
    reason = pc.if_else(pc.is_valid(error), broken, reason)
    for name in ("keep", "reason"):
        if name in table.column_names:
            table = table.drop_columns([name])
    keep = pc.equal(reason, "")
    return table.append_column("keep", keep).append_column("reason", reason)
