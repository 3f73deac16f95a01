"""FLUX.2 autoencoder as a latent codec: 32 channels at f8, patchified 2x2 to 128, BN-normalised."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from k2_dit.latents._vae_common import (
    DiffusersCodec,
    check_image_size,
    compute_dtype,
    posterior_latent,
)


class Flux2Codec(DiffusersCodec):
    """`diffusers.AutoencoderKLFlux2` with the FLUX.2 pipeline's latent normalisation.

    encode: z = posterior mode (or a sample), z_p = patchify_p(z) (pixel-unshuffle, channel
    index c * p^2 + i * p + j), latent = (z_p - mu) / sqrt(var + eps), with mu, var the VAE's
    BatchNorm running statistics and eps its `batch_norm_eps`. decode inverts each step.

    Args:
        vae: an in-memory `AutoencoderKLFlux2` (frozen and put in eval mode here).

    References:
        Krea 2 report, Architecture / Autoencoder ("later adopted the FLUX 2 VAE");
        diffusers `pipelines/flux2/pipeline_flux2.py` (`_patchify_latents`, `latents_bn_mean`,
        `latents_bn_std`).
    """

    _vae_class = "AutoencoderKLFlux2"
    _hint = (
        "download the vae/ folder of black-forest-labs/FLUX.2-dev (config.json and "
        "diffusion_pytorch_model.safetensors) and pass that folder, e.g. "
        "`hf download black-forest-labs/FLUX.2-dev --include 'vae/*' --local-dir DIR` then DIR/vae"
    )

    def __init__(self, vae: Any) -> None:
        super().__init__(vae)
        ph, pw = tuple(vae.config.patch_size)
        if ph != pw:
            raise ValueError(f"patch_size={(ph, pw)} must be square for Flux2Codec")
        self.patch = ph
        self.channels = vae.config.latent_channels * ph * pw
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1) * ph
        self.name = "flux2"

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        bn = self.vae.bn
        mean = bn.running_mean.to(device=like.device, dtype=like.dtype)
        var = bn.running_var.to(device=like.device, dtype=like.dtype)
        std = torch.sqrt(var + self.vae.config.batch_norm_eps)
        return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def encode(
        self, images: Float[Tensor, "b 3 H W"], *, generator: torch.Generator | None = None
    ) -> Float[Tensor, "b c h w"]:
        """Images in [-1, 1] to normalised 4x-channel latents at 1/`downsample` resolution.

        Args:
            images: `[b, 3, H, W]`, H and W multiples of `downsample`.
            generator: sample the posterior with it; None takes the posterior mean.
        """
        check_image_size(images, self.downsample)
        raw = posterior_latent(self.vae.encode(images.to(self.vae.dtype)), generator)
        return self.normalize(F.pixel_unshuffle(raw, self.patch))

    def decode(self, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b 3 H W"]:
        """Normalised latents to images clamped to [-1, 1]."""
        raw = F.pixel_shuffle(self.denormalize(latents), self.patch)
        images = self.vae.decode(raw.to(self.vae.dtype)).sample
        return images.clamp(-1.0, 1.0).to(compute_dtype(images.dtype))
