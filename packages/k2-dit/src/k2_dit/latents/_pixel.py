"""Pixel space as a latent codec (the CPU `tiny` preset trains directly on pixels)."""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


class PixelCodec(nn.Module):
    """Identity codec with an optional pixel-unshuffle, exactly invertible.

    latent[c * p^2 + i * p + j, y, x] = image[c, y * p + i, x * p + j]; channels = 3 p^2.

    Args:
        patch: p, the pixel-unshuffle factor (1: the image itself).

    References:
        Krea 2 report, Architecture / Autoencoder (the codec slot); pixel unshuffle as in
        `torch.nn.PixelUnshuffle`.
    """

    def __init__(self, *, patch: int = 1) -> None:
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch={patch} must be >= 1")
        self.patch = patch
        self.channels = 3 * patch * patch
        self.downsample = patch
        self.name = "pixel" if patch == 1 else f"pixel_p{patch}"

    def encode(self, images: Float[Tensor, "b 3 H W"]) -> Float[Tensor, "b c h w"]:
        """Images in [-1, 1] to `[b, 3 p^2, H / p, W / p]`."""
        h, w = images.shape[-2:]
        if h % self.patch or w % self.patch:
            raise ValueError(
                f"image size {h}x{w} is not divisible by patch={self.patch}: resize or crop to a "
                f"multiple of {self.patch}"
            )
        return F.pixel_unshuffle(images, self.patch) if self.patch > 1 else images

    def decode(self, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b 3 H W"]:
        """Exact inverse of `encode`."""
        if latents.shape[1] != self.channels:
            raise ValueError(
                f"latents have {latents.shape[1]} channels but PixelCodec(patch={self.patch}) "
                f"makes {self.channels}: decode with the codec that encoded them"
            )
        return F.pixel_shuffle(latents, self.patch) if self.patch > 1 else latents
