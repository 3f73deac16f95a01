"""Per-resolution timestep-shift rules (SD3, FLUX) and a sweepable schedule."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Literal

from k2_dit.config import ConfigError

ShiftKind = Literal["constant", "sd3", "flux", "table"]


def _check_tokens(name: str, value: int) -> None:
    if not (isinstance(value, int) and value > 0):
        raise ValueError(f"{name}={value!r} must be a positive int (latent tokens per image)")


def sd3_shift(num_tokens: int, *, base_tokens: int, base_shift: float = 1.0) -> float:
    """SD3 resolution rule s = base_shift·sqrt(m / n) for m image tokens vs n base tokens.

    Args:
        num_tokens: image tokens at the target resolution (m).
        base_tokens: image tokens at the resolution where `base_shift` is right (n).
        base_shift: shift used at `base_tokens` (1.0: unshifted at the base resolution).

    Returns:
        The shift for `num_tokens`.

    References:
        Esser et al. 2024 (SD3), §5.3.2: α = sqrt(m/n) for the shift of Eq. 23.
    """
    _check_tokens("num_tokens", num_tokens)
    _check_tokens("base_tokens", base_tokens)
    if not (math.isfinite(base_shift) and base_shift > 0):
        raise ValueError(f"base_shift={base_shift!r} must be a finite number > 0")
    return base_shift * math.sqrt(num_tokens / base_tokens)


def flux_shift(
    num_tokens: int,
    *,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    base_tokens: int = 256,
    max_tokens: int = 4096,
) -> float:
    """FLUX dynamic shift: mu linear in the token count, s = e^mu.

    `base_shift` and `max_shift` are values of mu (log-shifts), named as in FLUX and
    diffusers. The line is extrapolated outside [base_tokens, max_tokens].

    Args:
        num_tokens: image tokens at the target resolution.
        base_shift: mu at `base_tokens`.
        max_shift: mu at `max_tokens`.
        base_tokens: first anchor of the line.
        max_tokens: second anchor of the line (must differ from `base_tokens`).

    Returns:
        s = exp(base_shift + (max_shift - base_shift)·(num_tokens - base_tokens) /
        (max_tokens - base_tokens)).

    References:
        Black Forest Labs, FLUX.1 `calculate_shift` / `time_shift` (exponential,
        sigma = 1), which equals the SD3 shift of Eq. 23 with s = e^mu.
    """
    _check_tokens("num_tokens", num_tokens)
    _check_tokens("base_tokens", base_tokens)
    _check_tokens("max_tokens", max_tokens)
    if max_tokens == base_tokens:
        raise ValueError(f"max_tokens and base_tokens are both {base_tokens}: they must differ")
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return math.exp(base_shift + slope * (num_tokens - base_tokens))


@dataclass(frozen=True, kw_only=True)
class ShiftSchedule:
    """Timestep shift as a function of the image token count, so it can be swept per resolution.

    Kinds:
        `constant`: `shift` at every resolution.
        `sd3`: `sd3_shift(n, base_tokens=base_tokens, base_shift=shift)`.
        `flux`: `flux_shift(n, base_shift=base_mu, max_shift=max_mu, base_tokens=base_tokens,
            max_tokens=max_tokens)`; `shift` is unused.
        `table`: `(tokens, shift)` pairs, e.g. the winners of a per-resolution sweep. An exact
            token match returns its shift; between entries ln s is interpolated linearly in
            ln(tokens) (so a table sampled from the SD3 rule reproduces it exactly); outside
            the table the nearest end's shift is used (no extrapolation).

    References:
        Esser et al. 2024 (SD3), §5.3.2; Krea 2 report, Pretraining ("we sweep for the
        optimal training timeshift at each resolution").
    """

    kind: ShiftKind = "constant"
    shift: float = 1.0
    """`constant`: the shift; `sd3`: the shift at `base_tokens`."""
    base_tokens: int = 256
    """`sd3`/`flux`: token count of the base resolution (256 = 256px with f16 latents)."""
    table: tuple[tuple[int, float], ...] = ()
    """`table` only: (num_tokens, shift) pairs in any order, token counts unique."""
    base_mu: float = 0.5
    """`flux` only: mu (log-shift) at `base_tokens`."""
    max_mu: float = 1.15
    """`flux` only: mu (log-shift) at `max_tokens`."""
    max_tokens: int = 4096
    """`flux` only: token count where mu reaches `max_mu`."""

    def __post_init__(self) -> None:
        kinds = ("constant", "sd3", "flux", "table")
        if self.kind not in kinds:
            raise ConfigError(f"ShiftSchedule.kind={self.kind!r} must be one of {kinds}")
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise ConfigError(
                f"ShiftSchedule.shift={self.shift!r} must be a finite number > 0 (1.0 = no shift)"
            )
        if not (isinstance(self.base_tokens, int) and self.base_tokens > 0):
            raise ConfigError(f"ShiftSchedule.base_tokens={self.base_tokens!r} must be an int > 0")
        if self.kind == "flux" and (self.max_tokens <= 0 or self.max_tokens == self.base_tokens):
            raise ConfigError(
                f"ShiftSchedule.max_tokens={self.max_tokens!r} must be > 0 and differ from "
                f"base_tokens={self.base_tokens}"
            )
        if self.kind != "table":
            if self.table:
                raise ConfigError(
                    f"ShiftSchedule.table is only read when kind='table' (kind={self.kind!r}): "
                    "set kind='table' or drop the table"
                )
            return
        if not self.table:
            raise ConfigError(
                "ShiftSchedule(kind='table') needs a non-empty table of (num_tokens, shift) pairs"
            )
        for entry in self.table:
            if len(entry) != 2:
                raise ConfigError(f"table entry {entry!r} must be a (num_tokens, shift) pair")
            tokens, shift = entry
            if not (isinstance(tokens, int) and tokens > 0):
                raise ConfigError(f"table entry {entry!r}: num_tokens must be an int > 0")
            if not (math.isfinite(shift) and shift > 0):
                raise ConfigError(f"table entry {entry!r}: shift must be a finite number > 0")
        tokens = [e[0] for e in self.table]
        if len(set(tokens)) != len(tokens):
            raise ConfigError(f"table has repeated num_tokens {sorted(tokens)}: keep one per size")

    def shift_for(self, num_tokens: int) -> float:
        """The shift to use for images of `num_tokens` latent tokens."""
        _check_tokens("num_tokens", num_tokens)
        if self.kind == "constant":
            return self.shift
        if self.kind == "sd3":
            return sd3_shift(num_tokens, base_tokens=self.base_tokens, base_shift=self.shift)
        if self.kind == "flux":
            return flux_shift(
                num_tokens,
                base_shift=self.base_mu,
                max_shift=self.max_mu,
                base_tokens=self.base_tokens,
                max_tokens=self.max_tokens,
            )
        entries = sorted(self.table)
        sizes = [e[0] for e in entries]
        i = bisect.bisect_left(sizes, num_tokens)
        if i < len(sizes) and sizes[i] == num_tokens:
            return float(entries[i][1])
        if i == 0:
            return float(entries[0][1])
        if i == len(sizes):
            return float(entries[-1][1])
        (n0, s0), (n1, s1) = entries[i - 1], entries[i]
        w = (math.log(num_tokens) - math.log(n0)) / (math.log(n1) - math.log(n0))
        return math.exp((1 - w) * math.log(s0) + w * math.log(s1))
