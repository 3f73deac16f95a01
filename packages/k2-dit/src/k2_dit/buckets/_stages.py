"""Progressive-resolution stages: bucket table, training shift and RoPE grid per stage."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from k2_dit.buckets._table import BucketTable
from k2_dit.config import ConfigError, RopeConfig
from k2_dit.flow import ShiftSchedule
from k2_dit.rope import token_positions


@dataclass(frozen=True, kw_only=True)
class ResolutionStage:
    """One pretraining stage: a target pixel area, its aspect buckets and its training shift.

    The training shift is this stage's value of the per-resolution sweep the report runs; the
    inference schedule stays fixed across stages (`INFERENCE_SHIFT`).
    """

    resolution: int
    """Side of the square bucket in pixels; every bucket has at most resolution² pixels."""
    train_shift: float
    """Timestep shift s of the shifted logit-normal training distribution at this stage."""
    steps: int = 0
    """Optimizer steps spent in this stage (0: not planned here)."""
    latent_factor: int = 16
    """Pixels per latent cell (FLUX.2 VAE: f8 then 2×2 patchify = 16; pixel space: 1)."""
    patch_size: int = 1
    """DiT patch size on the latent (`DiTConfig.patch_size`)."""
    max_aspect: float = 4.0
    """Largest long/short side ratio of a bucket."""
    bucket_step: int | None = None
    """Side granularity of the buckets in pixels (None: one token, `multiple`)."""

    def __post_init__(self) -> None:
        for name in ("resolution", "latent_factor", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ResolutionStage.{name}={value!r} must be a positive int")
        if self.resolution % self.multiple:
            raise ConfigError(
                f"ResolutionStage.resolution={self.resolution} is not a multiple of "
                f"latent_factor·patch_size={self.multiple}: the square bucket must hold whole tokens"
            )
        if not (math.isfinite(self.train_shift) and self.train_shift > 0):
            raise ConfigError(
                f"ResolutionStage.train_shift={self.train_shift!r} must be a finite number > 0"
            )
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(f"ResolutionStage.steps={self.steps!r} must be an int >= 0")
        if not (math.isfinite(self.max_aspect) and self.max_aspect >= 1):
            raise ConfigError(f"ResolutionStage.max_aspect={self.max_aspect!r} must be >= 1")

    @property
    def multiple(self) -> int:
        """Pixels per DiT token along a side."""
        return self.latent_factor * self.patch_size

    @property
    def square_tokens(self) -> int:
        """Image tokens of the square bucket."""
        return (self.resolution // self.multiple) ** 2

    def table(self) -> BucketTable:
        """This stage's aspect buckets."""
        return BucketTable.build(
            resolution=self.resolution,
            multiple=self.multiple,
            max_aspect=self.max_aspect,
            step=self.bucket_step,
        )

    def latent_size(self, table: BucketTable, index: int) -> tuple[int, int]:
        """(height, width) of the latent of bucket `index` (what the DiT receives)."""
        h, w = table.buckets[index]
        return h // self.latent_factor, w // self.latent_factor


# Training shifts start from the SD3 rule s = sqrt(m / n) with the 256 px stage unshifted
# (sd3_shift(tokens, base_tokens=256)); they are the points a per-stage sweep starts from.
DEFAULT_STAGES: tuple[ResolutionStage, ...] = (
    ResolutionStage(resolution=256, train_shift=1.0),
    ResolutionStage(resolution=512, train_shift=2.0),
    ResolutionStage(resolution=1024, train_shift=4.0),
)
"""The report's 256 → 512 → 1024 px stages (f16 latents, patch 1)."""

INFERENCE_SHIFT = ShiftSchedule(kind="flux")
"""The fixed inference schedule: FLUX's token-count rule, the same for every training stage."""


def training_shift_schedule(stages: Sequence[ResolutionStage]) -> ShiftSchedule:
    """The per-resolution training shift as a `ShiftSchedule` table keyed by image tokens.

    Each stage contributes (square_tokens, train_shift); buckets of a stage have at most its
    square token count, so `shift_for` returns the stage's shift for them up to the table's
    log-log interpolation between stages.

    Args:
        stages: the progressive stages (token counts must differ).

    Returns:
        `ShiftSchedule(kind="table", ...)`.

    References:
        Esser et al. 2024 (SD3), §5.3.2; Krea 2 report, Pretraining ("we sweep for the optimal
        training timeshift at each resolution ... keep the inference shift schedule constant").
    """
    if not stages:
        raise ConfigError("training_shift_schedule needs at least one ResolutionStage")
    table = tuple((s.square_tokens, s.train_shift) for s in stages)
    return ShiftSchedule(kind="table", table=table)


def stage_at(stages: Sequence[ResolutionStage], step: int) -> tuple[int, int]:
    """(stage index, step within the stage) of a global step, stages run back to back.

    Args:
        stages: stages with `steps > 0`.
        step: global optimizer step, 0-based.

    Returns:
        The stage holding `step` and the offset into it.
    """
    if step < 0:
        raise ValueError(f"step={step} must be >= 0")
    start = 0
    for i, stage in enumerate(stages):
        if stage.steps < 1:
            raise ConfigError(f"stage {i} ({stage.resolution} px) has steps=0: plan its steps")
        if step < start + stage.steps:
            return i, step - start
        start += stage.steps
    raise ValueError(f"step={step} is past the last stage (the stages hold {start} steps)")


def bucket_positions(
    cfg: RopeConfig,
    table: BucketTable,
    index: int,
    *,
    n_text: int,
    device: torch.device | str | None = None,
) -> Float[Tensor, "n 3"]:
    """RoPE coordinates of `n_text` text tokens followed by bucket `index`'s token grid.

    The same positions `DiT.forward` builds for a latent of that bucket; use them to precompute
    RoPE tables per bucket or to check a non-square grid.

    Args:
        cfg: the model's rotary config.
        table: the stage's buckets.
        index: bucket index.
        n_text: text tokens before the image.
        device: where to build the positions.

    Returns:
        `[n_text + rows·cols, 3]` from `k2_dit.rope.token_positions` with grid (1, rows, cols).
    """
    rows, cols = table.token_grid(index)
    return token_positions(cfg, n_text=n_text, grid=(1, rows, cols), device=device)
