"""Aspect-ratio buckets: a table of (height, width) sizes of about one pixel area per stage."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int")


def aspect_buckets(
    *, resolution: int, multiple: int, max_aspect: float = 4.0, step: int | None = None
) -> tuple[tuple[int, int], ...]:
    """(height, width) buckets whose area is at most resolution², sides multiples of `step`.

    For every short side s = step, 2·step, ... <= resolution the long side is the largest
    multiple L of `step` with s·L <= resolution² (so no bucket costs more tokens than the
    square one); pairs with L / s > `max_aspect` are dropped, and each pair is used both ways
    (portrait s×L and landscape L×s). The square bucket is included when `resolution` is a
    multiple of `multiple`. Sorted by aspect ratio w / h, portrait first.

    Args:
        resolution: side of the square bucket in pixels (256, 512, 1024 in the report).
        multiple: pixels per DiT token (VAE downsampling × patch size, e.g. 16).
        max_aspect: largest long/short side ratio kept (4 gives 1:4 ... 4:1).
        step: side granularity in pixels, a multiple of `multiple` (None: `multiple`; 64 gives
            NovelAI-sized tables with fewer, fuller buckets).

    Returns:
        Unique (height, width) pairs in pixels.

    References:
        NovelAI 2022, "Aspect ratio bucketing" (fixed area, sides in steps of 64 px); Krea 2
        report, Pretraining (256 → 512 → 1024 px stages).
    """
    _positive_int("resolution", resolution)
    _positive_int("multiple", multiple)
    if not (math.isfinite(max_aspect) and max_aspect >= 1.0):
        raise ValueError(
            f"max_aspect={max_aspect!r} must be a finite number >= 1 (4 means 1:4..4:1)"
        )
    step = multiple if step is None else step
    _positive_int("step", step)
    if step % multiple:
        raise ValueError(f"step={step} must be a multiple of multiple={multiple} (whole tokens)")
    area = resolution * resolution
    pairs: set[tuple[int, int]] = set()
    for short in range(step, resolution + 1, step):
        long = (area // (short * step)) * step
        if long < short or long > max_aspect * short:
            continue
        pairs.add((short, long))
        pairs.add((long, short))
    return tuple(sorted(pairs, key=lambda hw: hw[1] / hw[0]))


@dataclass(frozen=True, kw_only=True)
class BucketTable:
    """A stage's buckets with nearest-aspect assignment and token grids.

    Build with `BucketTable.build(resolution=..., multiple=...)` or pass `buckets` directly.
    """

    buckets: tuple[tuple[int, int], ...]
    """(height, width) in pixels, each side a multiple of `multiple`."""
    multiple: int
    """Pixels per DiT token along each side (VAE factor × patch size)."""

    def __post_init__(self) -> None:
        _positive_int("multiple", self.multiple)
        if not self.buckets:
            raise ValueError("BucketTable needs at least one (height, width) bucket")
        for h, w in self.buckets:
            _positive_int("bucket height", h)
            _positive_int("bucket width", w)
            if h % self.multiple or w % self.multiple:
                raise ValueError(
                    f"bucket {h}x{w} is not a multiple of {self.multiple} px on both sides: "
                    "every side must cover whole tokens"
                )
        if len(set(self.buckets)) != len(self.buckets):
            raise ValueError(f"BucketTable has repeated buckets: {self.buckets}")

    @classmethod
    def build(
        cls, *, resolution: int, multiple: int, max_aspect: float = 4.0, step: int | None = None
    ) -> BucketTable:
        """The table of `aspect_buckets(...)` with the same arguments."""
        buckets = aspect_buckets(
            resolution=resolution, multiple=multiple, max_aspect=max_aspect, step=step
        )
        if not buckets:
            raise ValueError(
                f"no bucket fits resolution={resolution} with sides in steps of "
                f"{step or multiple} px: raise the resolution or lower the step"
            )
        return cls(buckets=buckets, multiple=multiple)

    def __len__(self) -> int:
        return len(self.buckets)

    def token_grid(self, index: int) -> tuple[int, int]:
        """(rows, cols) of DiT tokens of bucket `index`."""
        h, w = self.buckets[index]
        return h // self.multiple, w // self.multiple

    def num_tokens(self, index: int) -> int:
        """Image tokens of bucket `index`."""
        gh, gw = self.token_grid(index)
        return gh * gw

    def assign(self, heights: Int[Tensor, " n"], widths: Int[Tensor, " n"]) -> Int[Tensor, " n"]:
        """Index of the bucket nearest to each image by log aspect ratio.

        argmin_k |ln(w/h) - ln(w_k/h_k)|; ties go to the lower index (the more portrait bucket).

        Args:
            heights: image heights in pixels (> 0).
            widths: image widths in pixels (> 0).

        Returns:
            int64 bucket indices into `buckets`.
        """
        if heights.shape != widths.shape or heights.ndim != 1:
            raise ValueError(
                f"heights {tuple(heights.shape)} and widths {tuple(widths.shape)} must be 1-D "
                "and of equal length"
            )
        if bool((heights <= 0).any()) or bool((widths <= 0).any()):
            raise ValueError("image heights and widths must be positive (drop broken images first)")
        log_ar = widths.double().log() - heights.double().log()
        table = torch.tensor([math.log(w / h) for h, w in self.buckets], dtype=torch.float64)
        # argmin returns the first minimum, which is the documented tie rule.
        return (log_ar[:, None] - table[None]).abs().argmin(dim=1)

    def fit(self, height: int, width: int, index: int) -> tuple[int, int, int, int]:
        """Resize-then-centre-crop of an image into bucket `index` (cover, keep aspect).

        Args:
            height: image height in pixels.
            width: image width in pixels.
            index: target bucket.

        Returns:
            (resized_height, resized_width, crop_top, crop_left): resize to the first two
            (each >= the bucket side), then crop the bucket's size at the given offset.
        """
        _positive_int("height", height)
        _positive_int("width", width)
        bh, bw = self.buckets[index]
        scale = max(bh / height, bw / width)
        rh, rw = max(bh, round(height * scale)), max(bw, round(width * scale))
        return rh, rw, (rh - bh) // 2, (rw - bw) // 2
