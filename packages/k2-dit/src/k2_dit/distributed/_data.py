"""What `train` reads: the `PretrainDataset` protocol and `InMemoryDataset` (tensors in memory)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from k2_dit.buckets import BucketTable, ResolutionStage
from k2_dit.config import ConfigError, DiTConfig
from k2_dit.distributed._setup import step_generator

_VARIANT_STREAM = 4
"""Key of the caption-variant draws (the trainer uses 0-3 for data, noise and implicit RNG)."""


@runtime_checkable
class PretrainDataset(Protocol):
    """What `train(cfg, dataset=...)` reads: bucketed samples per resolution stage.

    `tables[s]` is stage s's `BucketTable` and `bucket_of[s]` the bucket index of every
    sample in it (int64, length N, the same N for every stage); the trainer's
    `BucketBatchSampler` draws each global batch from one bucket. `batch` returns what the
    DiT trains on for this rank's share of that batch. It must be a pure function of its
    arguments (no hidden state that advances), so every rank and every resumed run sees the
    same sample for the same (step, index): that is what makes resume exact. `SyntheticData`
    and `InMemoryDataset` implement it.
    """

    tables: Sequence[BucketTable]
    bucket_of: Sequence[Tensor]

    def batch(
        self, indices: list[int], *, stage: int, bucket: int, step: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(x0 [b, C, h, w] at the bucket's latent size, text [b, L, K, E], mask [b, L] bool).

        `step` is the 0-based global optimizer step, for per-step draws such as the caption
        variant; datasets without any may ignore it.
        """
        ...


def _fail(message: str) -> None:
    raise ConfigError(f"InMemoryDataset: {message}")


class InMemoryDataset:
    """Encoded images and captions held in memory, already at each stage's latent sizes.

    Stage s's images are either one tensor `[N, C, h, w]` (every sample in the bucket whose
    latent size is (h, w), e.g. the square one) or a sequence of N tensors `[C, h_i, w_i]`,
    each at the latent size of one of the stage's buckets (pre-cropped per aspect bucket),
    which is the bucket the sample trains in. uint8 images are pixels and map to [-1, 1] as
    x / 127.5 - 1; floating-point ones (latents) are used as they are, in float32. Captions
    are frozen text-encoder hidden states `[N, L, K, E]` with masks `[N, L]`, or several
    caption variants per sample, `[N, V, L, K, E]` and `[N, V, L]`: then each step trains
    sample i on variant v drawn with probabilities `caption_weights` from a generator keyed
    by (seed, step, i), so the draw does not depend on the rank layout and a resumed run
    draws the same. Shapes are checked against the model and stages on construction.

    Args:
        model: the DiT config (latent channels, text layers and width, longest caption).
        stages: the resolution stages, in training order.
        images: stage index -> `[N, C, h, w]` tensor or N tensors `[C, h_i, w_i]`.
        text: `[N, L, K, E]` or `[N, V, L, K, E]` hidden states (any float dtype; bf16 saves
            half the memory).
        mask: `[N, L]` or `[N, V, L]` bool, True on real tokens.
        caption_weights: V non-negative weights of the caption variants (None: uniform).
        seed: seed of the variant draws.

    References:
        Krea 2 report, Pretraining (progressive 256 -> 512 -> 1024 px stages, captions of
        several lengths mixed).
    """

    def __init__(
        self,
        model: DiTConfig,
        stages: Sequence[ResolutionStage],
        *,
        images: Mapping[int, Tensor | Sequence[Tensor]],
        text: Tensor,
        mask: Tensor,
        caption_weights: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        stages = tuple(stages)
        if not stages:
            _fail("stages is empty: pass the TrainConfig's stages")
        self.stages, self.seed = stages, seed
        n = self._check_text(model, text, mask)
        self.text, self.mask = text, mask
        self.variants = text.shape[1] if text.ndim == 5 else 0
        self.caption_weights = self._check_weights(caption_weights)
        if sorted(images) != list(range(len(stages))):
            _fail(
                f"images has keys {sorted(images)} but there are {len(stages)} stages: give "
                f"one entry per stage index 0..{len(stages) - 1}"
            )
        self.tables: list[BucketTable] = [s.table() for s in stages]
        self.images: list[Tensor | list[Tensor]] = []
        self.bucket_of: list[Tensor] = []
        for si, stage in enumerate(stages):
            if stage.patch_size != model.patch_size:
                _fail(
                    f"stage {si} ({stage.resolution} px) has patch_size={stage.patch_size} but "
                    f"the model has {model.patch_size}: set ResolutionStage.patch_size to "
                    "DiTConfig.patch_size"
                )
            stored, buckets = self._check_images(si, stage, images[si], model, n)
            self.images.append(stored)
            self.bucket_of.append(buckets)

    def __len__(self) -> int:
        return int(self.text.shape[0])

    def _check_text(self, model: DiTConfig, text: Tensor, mask: Tensor) -> int:
        t = model.text
        if not isinstance(text, Tensor) or text.ndim not in (4, 5):
            shape = tuple(text.shape) if isinstance(text, Tensor) else type(text).__name__
            _fail(f"text must be [N, L, K, E] or [N, V, L, K, E] hidden states, got {shape}")
        if not text.is_floating_point():
            _fail(f"text has dtype {text.dtype}; hidden states must be floating point")
        k, e = text.shape[-2:]
        if (k, e) != (t.num_layers, t.encoder_dim):
            _fail(
                f"text ends in (K={k}, E={e}) but the model takes TextConfig.num_layers="
                f"{t.num_layers} hidden states of width encoder_dim={t.encoder_dim}: encode "
                "with the text encoder the model was configured for"
            )
        length = text.shape[-3]
        if length > t.max_tokens:
            _fail(
                f"captions have L={length} tokens, more than TextConfig.max_tokens={t.max_tokens}"
            )
        want = tuple(text.shape[:-2])
        if not isinstance(mask, Tensor) or tuple(mask.shape) != want:
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            _fail(f"mask must have shape {want} (text's leading dims), got {got}")
        if mask.dtype != torch.bool:
            _fail(f"mask has dtype {mask.dtype}: pass a bool tensor (True on real tokens)")
        n = int(text.shape[0])
        if n < 1:
            _fail("the dataset holds no samples (N = 0)")
        return n

    def _check_weights(self, weights: Sequence[float] | None) -> Tensor | None:
        if self.variants == 0:
            if weights is not None:
                _fail(
                    "caption_weights needs several caption variants: pass text [N, V, L, K, E] "
                    "and mask [N, V, L], or drop caption_weights"
                )
            return None
        raw = [1.0] * self.variants if weights is None else [float(w) for w in weights]
        if len(raw) != self.variants:
            _fail(f"caption_weights has {len(raw)} entries for V={self.variants} caption variants")
        if not all(math.isfinite(w) and w >= 0 for w in raw) or sum(raw) <= 0:
            _fail(f"caption_weights={raw} must be finite, >= 0 and have a positive sum")
        return torch.tensor(raw, dtype=torch.float64)

    def _check_images(
        self,
        si: int,
        stage: ResolutionStage,
        images: Tensor | Sequence[Tensor],
        model: DiTConfig,
        n: int,
    ) -> tuple[Tensor | list[Tensor], Tensor]:
        table = self.tables[si]
        sizes = {stage.latent_size(table, b): b for b in range(len(table))}
        where = f"stage {si} ({stage.resolution} px)"

        def bucket(shape: tuple[int, ...], what: str) -> int:
            c, h, w = shape
            if c != model.in_channels:
                _fail(
                    f"{where} {what} has {c} channels but DiTConfig.in_channels={model.in_channels}"
                )
            if (h, w) not in sizes:
                _fail(
                    f"{where} {what} is {h}x{w}, which is no bucket's latent size at this stage "
                    f"(bucket latent sizes: {sorted(sizes)}); resize and crop it into a bucket "
                    "(BucketTable.fit) first"
                )
            return sizes[(h, w)]

        def dtype_ok(x: Tensor, what: str) -> None:
            if x.dtype != torch.uint8 and not x.is_floating_point():
                _fail(f"{where} {what} has dtype {x.dtype}: use uint8 pixels or float latents")

        if isinstance(images, Tensor):
            if images.ndim != 4 or images.shape[0] != n:
                _fail(f"{where} images must be [N={n}, C, h, w], got {tuple(images.shape)}")
            dtype_ok(images, "images")
            b = bucket(tuple(images.shape[1:]), "images")
            return images, torch.full((n,), b, dtype=torch.int64)
        items = list(images)
        if len(items) != n:
            _fail(f"{where} has {len(items)} images but the captions hold N={n} samples")
        buckets = []
        for i, x in enumerate(items):
            if not isinstance(x, Tensor) or x.ndim != 3:
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                _fail(f"{where} image {i} must be a [C, h, w] tensor, got {got}")
            dtype_ok(x, f"image {i}")
            buckets.append(bucket(tuple(x.shape), f"image {i}"))
        return items, torch.tensor(buckets, dtype=torch.int64)

    def variant_of(self, index: int, *, step: int) -> int:
        """The caption variant sample `index` trains on at global step `step` (0 without variants)."""
        if self.caption_weights is None:
            return 0
        gen = step_generator(self.seed, _VARIANT_STREAM, step, index)
        return int(torch.multinomial(self.caption_weights, 1, generator=gen))

    def batch(
        self, indices: list[int], *, stage: int, bucket: int, step: int
    ) -> tuple[Float[Tensor, "b c h w"], Float[Tensor, "b l k e"], Bool[Tensor, "b l"]]:
        """Images, hidden states and masks of `indices` (all in `bucket` of `stage`) at `step`.

        Args:
            indices: sample indices (this rank's share of one global batch).
            stage: stage index.
            bucket: the bucket every sample lies in.
            step: 0-based global step (selects the caption variants).

        Returns:
            (x0 float32 [b, C, h, w], text [b, L, K, E] in the stored dtype, mask [b, L]).
        """
        stored = self.images[stage]
        wrong = [i for i in indices if int(self.bucket_of[stage][i]) != bucket]
        if wrong:
            raise ValueError(f"samples {wrong} are not in bucket {bucket} of stage {stage}")
        if isinstance(stored, Tensor):
            x0 = stored[indices]
        else:
            x0 = torch.stack([stored[i] for i in indices])
        x0 = x0.float().div_(127.5).sub_(1.0) if x0.dtype == torch.uint8 else x0.float()
        idx = torch.tensor(indices, dtype=torch.int64)
        if self.variants:
            v = torch.tensor([self.variant_of(i, step=step) for i in indices], dtype=torch.int64)
            return x0, self.text[idx, v], self.mask[idx, v]
        return x0, self.text[idx], self.mask[idx]
