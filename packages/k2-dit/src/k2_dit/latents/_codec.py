"""The interface every latent codec (pixel space or autoencoder) implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor


@runtime_checkable
class LatentCodec(Protocol):
    """Maps images in [-1, 1] to normalised latents (about unit variance) and back.

    Attributes:
        channels: c, latent channels the DiT sees (after any patchify).
        downsample: spatial factor between image and latent (H = h * downsample).
        name: short identifier for run configs and caches.

    References:
        Krea 2 report, Architecture / Autoencoder (FLUX.1 baseline; Qwen Image, DC-AE, FLUX.2).
    """

    channels: int
    downsample: int
    name: str

    def encode(self, images: Float[Tensor, "b 3 H W"]) -> Float[Tensor, "b c h w"]:
        """Images in [-1, 1] to normalised latents."""
        ...

    def decode(self, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b 3 H W"]:
        """Normalised latents to images in [-1, 1]."""
        ...
