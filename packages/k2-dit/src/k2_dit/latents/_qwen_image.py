"""Qwen-Image autoencoder as a latent codec: 16 channels at f8, per-channel mean/std."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from k2_dit.latents._vae_common import (
    DiffusersCodec,
    check_image_size,
    compute_dtype,
    posterior_latent,
)


class QwenImageCodec(DiffusersCodec):
    """`diffusers.AutoencoderKLQwenImage` with the Qwen-Image pipeline's latent normalisation.

    The VAE is a causal video VAE; an image is a single frame, so encode inserts and decode
    removes a frame axis of size 1. encode: z = posterior mode (or a sample) of frame 0,
    latent[c] = (z[c] - mean[c]) / std[c] with `latents_mean`, `latents_std` from the VAE config;
    decode inverts it.

    Args:
        vae: an in-memory `AutoencoderKLQwenImage` (frozen and put in eval mode here).

    References:
        Krea 2 report, Architecture / Autoencoder ("used the Qwen Image autoencoder to scale our
        early models"); diffusers `pipelines/qwenimage/pipeline_qwenimage_img2img.py`
        (`(image_latents - latents_mean) * (1 / latents_std)`).
    """

    _vae_class = "AutoencoderKLQwenImage"
    _hint = (
        "download the vae/ folder of Qwen/Qwen-Image (config.json and "
        "diffusion_pytorch_model.safetensors) and pass that folder, e.g. "
        "`hf download Qwen/Qwen-Image --include 'vae/*' --local-dir DIR` then DIR/vae"
    )

    def __init__(self, vae: Any) -> None:
        super().__init__(vae)
        z_dim = vae.config.z_dim
        mean, std = vae.config.latents_mean, vae.config.latents_std
        if len(mean) != z_dim or len(std) != z_dim:
            raise ValueError(
                f"latents_mean ({len(mean)}) and latents_std ({len(std)}) must have z_dim={z_dim} "
                "entries: fix the VAE config"
            )
        # float64 buffers keep the statistics exact; they are cast per call.
        self.register_buffer(
            "latents_mean", torch.tensor(mean, dtype=torch.float64), persistent=False
        )
        self.register_buffer(
            "latents_std", torch.tensor(std, dtype=torch.float64), persistent=False
        )
        self.channels = z_dim
        self.downsample = vae.spatial_compression_ratio
        self.name = "qwen_image"

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        def cast(t: Tensor) -> Tensor:
            return t.to(device=like.device, dtype=like.dtype).view(1, -1, 1, 1)

        return cast(self.latents_mean), cast(self.latents_std)

    def encode(
        self, images: Float[Tensor, "b 3 H W"], *, generator: torch.Generator | None = None
    ) -> Float[Tensor, "b c h w"]:
        """Images in [-1, 1] to normalised latents at 1/`downsample` resolution.

        Args:
            images: `[b, 3, H, W]`, H and W multiples of `downsample`.
            generator: sample the posterior with it; None takes the posterior mean.
        """
        check_image_size(images, self.downsample)
        video = images.to(self.vae.dtype)[:, :, None]
        raw = posterior_latent(self.vae.encode(video), generator)
        return self.normalize(raw[:, :, 0])

    def decode(self, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b 3 H W"]:
        """Normalised latents to images in [-1, 1] (the VAE clamps)."""
        raw = self.denormalize(latents).to(self.vae.dtype)[:, :, None]
        images = self.vae.decode(raw).sample[:, :, 0]
        return images.clamp(-1.0, 1.0).to(compute_dtype(images.dtype))
