"""Training-caption sampling: mostly long captions, with short and medium ones mixed in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float, Int

CAPTION_LENGTHS = ("long", "medium", "short")


@dataclass(frozen=True, kw_only=True)
class CaptionMix:
    """Relative weights of the caption lengths drawn for training (normalised on use).

    Args:
        long: weight of the long, dense caption (the report trains "predominantly on long").
        medium: weight of the medium rewrite.
        short: weight of the short rewrite.
    """

    long: float = 0.7
    medium: float = 0.15
    short: float = 0.15

    def __post_init__(self) -> None:
        weights = (self.long, self.medium, self.short)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"caption weights must be >= 0 and not all 0, got {weights}")

    @property
    def probabilities(self) -> Float[np.ndarray, " 3"]:
        """(long, medium, short) probabilities, in `CAPTION_LENGTHS` order."""
        weights = np.array([self.long, self.medium, self.short], np.float64)
        return weights / weights.sum()


def sample_caption_lengths(
    n: int, *, mix: CaptionMix = CaptionMix(), generator: np.random.Generator
) -> Int[np.ndarray, " n"]:
    """Draw n caption lengths as indices into `CAPTION_LENGTHS`.

    Args:
        n: how many draws.
        mix: the length weights.
        generator: the source of randomness (same seed, same draws).

    Returns:
        int64 indices: 0 long, 1 medium, 2 short.

    References:
        Krea 2 report, Captioning: "we train predominantly on long captions while ensuring
        the model is exposed to short and medium-length prompts throughout training".
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cdf = np.cumsum(mix.probabilities)
    # Inverse CDF on uniforms; clip guards the last bin against cdf[-1] rounding below 1.
    return np.minimum(np.searchsorted(cdf, generator.random(n), side="right"), 2).astype(np.int64)


def training_captions(
    records: Sequence[Mapping[str, Any]],
    *,
    mix: CaptionMix = CaptionMix(),
    generator: np.random.Generator,
) -> list[str]:
    """Pick one caption per record: a drawn length, or the long caption when that variant
    is missing (e.g. a rewrite that could not be parsed).

    Args:
        records: rows with "long", "medium", "short" fields (`CaptionStore.read().to_pylist()`).
        mix: the length weights.
        generator: the source of randomness.

    Returns:
        One caption text per record.
    """
    picks = sample_caption_lengths(len(records), mix=mix, generator=generator)
    out = []
    for record, pick in zip(records, picks.tolist(), strict=True):
        long = record.get("long")
        if not long:
            raise ValueError(
                f"record {record.get('__key__', '?')!r} has no long caption; filter records "
                "with status 'caption_empty' out first"
            )
        out.append(record.get(CAPTION_LENGTHS[pick]) or long)
    return out
