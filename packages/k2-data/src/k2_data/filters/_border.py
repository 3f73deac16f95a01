"""Flat-colour borders: letterbox bars, frames and padding along the image edges."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from jaxtyping import UInt8

SIDES = ("top", "bottom", "left", "right")


@dataclass(frozen=True, kw_only=True)
class Borders:
    """Width of the flat-colour run along each side, in pixels of the analysed image.

    Args:
        top: rows from the top edge.
        bottom: rows from the bottom edge.
        left: columns from the left edge.
        right: columns from the right edge.
        height: image height the row counts refer to.
        width: image width the column counts refer to.
    """

    top: int
    bottom: int
    left: int
    right: int
    height: int
    width: int

    def fractions(self) -> dict[str, float]:
        """Each side's run as a fraction of the image height (top, bottom) or width (left, right)."""
        return {
            "top": self.top / self.height,
            "bottom": self.bottom / self.height,
            "left": self.left / self.width,
            "right": self.right / self.width,
        }

    @property
    def max_fraction(self) -> float:
        """The largest side fraction: 1.0 for a flat image, 0.0 when no edge line is flat."""
        return max(self.fractions().values())

    @property
    def sides(self) -> tuple[str, ...]:
        """Sides with a flat run of at least one line, in the order top, bottom, left, right."""
        return tuple(side for side in SIDES if getattr(self, side) > 0)


@functools.lru_cache(maxsize=64)
def _side_layout(h: int, w: int) -> tuple[np.ndarray, ...]:
    """Gather index, side id, in-side position and side starts of the edge-inward line order.

    Line extremes are stored rows then columns (h + w entries, lows then highs); the four
    sides read them top (rows 0..), bottom (rows h-1..), left (cols 0..), right (cols w-1..).
    """
    rows, cols = np.arange(h), h + np.arange(w)
    order = np.concatenate([rows, rows[::-1], cols, cols[::-1]])
    gather = np.concatenate([order, order + h + w])  # lows, then the matching highs
    lengths = np.array([h, h, w, w])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    side = np.repeat(np.arange(4), lengths)
    position = np.arange(len(order)) - starts[side]
    return gather, side, position, starts, lengths


@functools.lru_cache(maxsize=64)
def _edge_gather(h: int, w: int) -> np.ndarray:
    """Flat indices into (3, h, w) planes of the four edge lines, as an (L, 12) grid.

    Row l, column 3 * side + channel holds pixel l of that side's edge line (sides top,
    bottom, left, right); L = max(h, w), and a shorter line repeats its last pixel, which
    leaves its extremes unchanged. Reducing over rows (axis 0) is numpy's fast direction.
    """
    length = max(h, w)
    cols, rows = np.minimum(np.arange(length), w - 1), np.minimum(np.arange(length), h - 1)
    pixel = np.stack([cols, (h - 1) * w + cols, rows * w, rows * w + w - 1], axis=1)  # (L, 4)
    return (pixel[:, :, None] + h * w * np.arange(3)).reshape(length, 12)


def border_runs(planes: UInt8[np.ndarray, "3 h w"], tolerance: int) -> tuple[int, int, int, int]:
    """Flat runs (top, bottom, left, right) of planar RGB pixels, all four sides at once.

    See `border_widths` for the definition. Per-line channel extremes are reduced along
    contiguous axes of the planar copy, then the four sides are read as one edge-inward
    sequence, so the whole measurement is a fixed handful of numpy calls.

    Args:
        planes: RGB uint8 image as (3, h, w) channel planes.
        tolerance: largest per-channel deviation (0-255) still counted as the border colour.

    Returns:
        The run length of each side, in lines.
    """
    _, h, w = planes.shape
    # A side's run is >= 1 only when its edge line spans <= 2 * tolerance in every channel
    # (the line's deviation from its own mid-range is half its span). Most photographs have
    # no such edge, and four edge lines are far cheaper to check than every line.
    edges = planes.reshape(-1).take(_edge_gather(h, w))  # (L, 12): sides x channels
    s = (edges.max(axis=0) - edges.min(axis=0)).tolist()
    if min(max(s[0:3]), max(s[3:6]), max(s[6:9]), max(s[9:12])) > 2 * tolerance:
        return 0, 0, 0, 0
    gather, side, position, starts, lengths = _side_layout(h, w)
    extremes = np.concatenate(
        [planes.min(axis=2), planes.min(axis=1), planes.max(axis=2), planes.max(axis=1)], axis=1
    )
    lines = extremes[:, gather].astype(np.int16)  # (3, 2 n): lows then highs, edge inwards
    n = len(side)
    lo, hi = lines[:, :n], lines[:, n:]
    # Twice the edge line's mid-range colour, per side and channel, spread over its lines;
    # doubling keeps the comparison in integers.
    ref = (lo[:, starts] + hi[:, starts])[:, side]
    deviation = np.maximum(2 * hi - ref, ref - 2 * lo).max(axis=0)
    stop = np.where(deviation <= 2 * tolerance, n, position)  # first non-flat line per side
    runs = np.minimum(np.minimum.reduceat(stop, starts), lengths)
    return int(runs[0]), int(runs[1]), int(runs[2]), int(runs[3])


def border_widths(pixels: UInt8[np.ndarray, "h w 3"], *, tolerance: int = 8) -> Borders:
    """Measure the flat-colour border on each side of an image.

    For each side, the border is the run of rows (top, bottom) or columns (left, right),
    starting at the edge, in which every pixel of every line is within `tolerance` grey
    levels (per channel) of the mid-range colour of the edge line. One pass computes the
    per-row and per-column channel min/max; the runs then cost O(H + W).

    Args:
        pixels: RGB uint8 image.
        tolerance: largest per-channel deviation (0-255) still counted as the border colour;
            covers JPEG noise on a flat area.

    Returns:
        The four run lengths with the image size.

    References:
        Krea 2 report, Data: the model tended "to generate flat-color backgrounds and border
        artifacts", so samples inducing them were filtered with heuristics.
    """
    if not (0 <= tolerance <= 255):
        raise ValueError(f"tolerance must be in [0, 255] grey levels, got {tolerance}")
    h, w = pixels.shape[:2]
    top, bottom, left, right = border_runs(
        np.ascontiguousarray(pixels.transpose(2, 0, 1)), tolerance
    )
    return Borders(top=top, bottom=bottom, left=left, right=right, height=h, width=w)
