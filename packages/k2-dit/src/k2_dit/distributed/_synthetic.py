"""Synthetic pretraining data: random latents and text features in aspect buckets."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from k2_dit.buckets import BucketTable, ResolutionStage
from k2_dit.config import ConfigError, DiTConfig
from k2_dit.distributed._setup import step_generator


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Size of the synthetic dataset that stands in for encoded images and captions."""

    num_samples: int = 256
    """Images in the dataset (each gets a fixed aspect ratio, latent and caption)."""
    text_tokens: int = 16
    """Padded caption length; real lengths are drawn in [1, text_tokens]."""

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.text_tokens < 1:
            raise ConfigError("SyntheticConfig.num_samples and text_tokens must be >= 1")


class SyntheticData:
    """Deterministic stand-in for a dataset of (latent, text hidden states, mask).

    Sample i has an aspect ratio log-uniform in [1/max_aspect, max_aspect] and a latent and
    caption drawn from a generator keyed by (seed, i), so every rank and every resumed run
    sees the same sample i without storing anything.

    Args:
        model: the DiT config (latent channels, text layers and width).
        stages: the resolution stages (one bucket table each).
        config: dataset size and caption length.
        seed: dataset seed.
    """

    def __init__(
        self,
        model: DiTConfig,
        stages: tuple[ResolutionStage, ...],
        config: SyntheticConfig,
        *,
        seed: int,
    ) -> None:
        self.model, self.stages, self.config, self.seed = model, stages, config, seed
        for s in stages:
            if s.patch_size != model.patch_size:
                raise ConfigError(
                    f"stage {s.resolution} px has patch_size={s.patch_size} but the model has "
                    f"{model.patch_size}: set ResolutionStage.patch_size to DiTConfig.patch_size"
                )
        gen = step_generator(seed, 0)
        # Aspect ratios log-uniform over the widest stage range; images are 4k on the long side
        # so each one fits a bucket of every stage.
        span = math.log(max(s.max_aspect for s in stages))
        log_ar = (torch.rand(config.num_samples, generator=gen, dtype=torch.float64) * 2 - 1) * span
        self.heights = (4096 / log_ar.exp().clamp(min=1.0)).round().long()
        self.widths = (4096 * log_ar.exp().clamp(max=1.0)).round().long()
        self.tables: list[BucketTable] = [s.table() for s in stages]
        self.bucket_of = [t.assign(self.heights, self.widths) for t in self.tables]

    def sample(
        self, index: int, *, stage: int, bucket: int
    ) -> tuple[Float[Tensor, "c h w"], Float[Tensor, "l k e"], Bool[Tensor, " l"]]:
        """Latent at the bucket's size, text hidden states and text mask of sample `index`."""
        gen = step_generator(self.seed, 1, index)
        lh, lw = self.stages[stage].latent_size(self.tables[stage], bucket)
        c, t = self.model, self.config
        latent = torch.randn(c.in_channels, lh, lw, generator=gen)
        text = torch.randn(t.text_tokens, c.text.num_layers, c.text.encoder_dim, generator=gen)
        length = int(torch.randint(1, t.text_tokens + 1, (1,), generator=gen))
        mask = torch.arange(t.text_tokens) < length
        return latent, text, mask

    def batch(
        self, indices: list[int], *, stage: int, bucket: int, step: int = 0
    ) -> tuple[Float[Tensor, "b c h w"], Float[Tensor, "b l k e"], Bool[Tensor, "b l"]]:
        """`sample` stacked over `indices` (all from one bucket); `step` is unused (the
        `PretrainDataset` protocol passes it: a synthetic sample is the same at every step)."""
        parts = [self.sample(i, stage=stage, bucket=bucket) for i in indices]
        return tuple(torch.stack(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]
