"""DC-AE (deep compression autoencoder) as a latent codec: f32, one scaling factor."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from k2_dit.latents._vae_common import (
    DiffusersCodec,
    check_image_size,
    compute_dtype,
)


class DCAECodec(DiffusersCodec):
    """`diffusers.AutoencoderDC` with the SANA pipeline's scaling: latent = z * scaling_factor.

    DC-AE's encoder is deterministic (no posterior), so there is nothing to sample.

    Args:
        vae: an in-memory `AutoencoderDC` (frozen and put in eval mode here).

    References:
        Krea 2 report, Architecture / Autoencoder ("DC-AE imposes a hard upper limit ... on fine
        detail"); Chen et al., DC-AE (arXiv 2410.10733); diffusers `AutoencoderDC` docstring.
    """

    _vae_class = "AutoencoderDC"
    _hint = (
        "download a diffusers DC-AE, e.g. mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers "
        "(config.json and diffusion_pytorch_model.safetensors), to this directory"
    )

    def __init__(self, vae: Any) -> None:
        super().__init__(vae)
        self.scaling_factor = float(vae.config.scaling_factor)
        if self.scaling_factor == 0.0:
            raise ValueError("the DC-AE config has scaling_factor=0: fix the VAE config")
        self.channels = vae.config.latent_channels
        self.downsample = vae.spatial_compression_ratio
        self.name = "dcae"

    def normalize(self, raw: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h w"]:
        """Autoencoder latents to scaled latents."""
        return raw.to(compute_dtype(raw.dtype)) * self.scaling_factor

    def denormalize(self, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h w"]:
        """Scaled latents back to autoencoder latents."""
        return latents.to(compute_dtype(latents.dtype)) / self.scaling_factor

    def encode(
        self, images: Float[Tensor, "b 3 H W"], *, generator: torch.Generator | None = None
    ) -> Float[Tensor, "b c h w"]:
        """Images in [-1, 1] to scaled latents at 1/`downsample` resolution.

        Args:
            images: `[b, 3, H, W]`, H and W multiples of `downsample`.
            generator: must be None (the encoder is deterministic).
        """
        if generator is not None:
            raise ValueError(
                "DC-AE's encoder is deterministic: there is no posterior to sample, drop generator"
            )
        check_image_size(images, self.downsample)
        return self.normalize(self.vae.encode(images.to(self.vae.dtype)).latent)

    def decode(self, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b 3 H W"]:
        """Scaled latents to images clamped to [-1, 1]."""
        images = self.vae.decode(self.denormalize(latents).to(self.vae.dtype)).sample
        return images.clamp(-1.0, 1.0).to(compute_dtype(images.dtype))
