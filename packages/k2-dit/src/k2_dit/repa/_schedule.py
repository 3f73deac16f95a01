"""When the alignment loss is on: a constant weight that switches off after a given step."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RepaSchedule:
    """Weight λ of the alignment loss in L = L_flow + λ(step)·L_repa; 0 from `until_step` on.

    Steps count optimizer steps from 0 within the stage. λ(step) = `coeff` for
    step < `until_step` and 0 afterwards (`until_step=None`: never switched off). When
    `active(step)` is False the trainer should skip the teacher forward and the projector
    entirely, which is where the saving comes from; the projector then receives no gradient,
    so AdamW leaves it untouched.

    References:
        Krea 2 report, Pretraining ("we use iREPA for the first epoch of the 256px stage and
        then remove it"); Singh et al. 2025 (iREPA), `configs/irepa.yaml` (proj_coeff 1.0
        for latent diffusion; REPA and the pixel-space JiT config use 0.5).
    """

    coeff: float = 1.0
    """λ while the alignment is on."""
    until_step: int | None = None
    """First step without alignment; None keeps it on for the whole stage."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.coeff) and self.coeff >= 0):
            raise ValueError(f"coeff={self.coeff!r} must be a finite number >= 0")
        if self.until_step is not None and not (
            isinstance(self.until_step, int) and self.until_step >= 0
        ):
            raise ValueError(f"until_step={self.until_step!r} must be an int >= 0 or None")

    @classmethod
    def for_epochs(
        cls, *, epochs: float | int, steps_per_epoch: int, coeff: float = 1.0
    ) -> RepaSchedule:
        """Alignment for the first `epochs` epochs (the report: 1 epoch of the 256 px stage).

        Args:
            epochs: how many epochs to align for (fractions allowed; rounded up to a step).
            steps_per_epoch: optimizer steps per epoch (dataset size / global batch).
            coeff: λ while on.
        """
        if not (isinstance(steps_per_epoch, int) and steps_per_epoch > 0):
            raise ValueError(f"steps_per_epoch={steps_per_epoch!r} must be an int > 0")
        if not (math.isfinite(epochs) and epochs >= 0):
            raise ValueError(f"epochs={epochs!r} must be a finite number >= 0")
        return cls(coeff=coeff, until_step=math.ceil(epochs * steps_per_epoch))

    def active(self, step: int) -> bool:
        """Whether the alignment loss is computed at optimizer step `step` (0-based)."""
        if step < 0:
            raise ValueError(f"step={step} must be >= 0")
        return self.coeff > 0 and (self.until_step is None or step < self.until_step)

    def weight(self, step: int) -> float:
        """λ at optimizer step `step`: `coeff` while active, else 0."""
        return self.coeff if self.active(step) else 0.0
