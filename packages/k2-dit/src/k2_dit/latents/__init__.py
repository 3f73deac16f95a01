"""Latent codecs: pixel space and diffusers autoencoders (FLUX.2, Qwen-Image, DC-AE).

The diffusers-backed codecs import diffusers lazily (`pip install "k2-dit[vae]"`).
References: Krea 2 report, Architecture / Autoencoder.
"""

from k2_dit.latents._codec import LatentCodec
from k2_dit.latents._dcae import DCAECodec
from k2_dit.latents._flux2 import Flux2Codec
from k2_dit.latents._pixel import PixelCodec
from k2_dit.latents._qwen_image import QwenImageCodec
from k2_dit.latents._vae_common import CodecWeightsNotFoundError

__all__ = [
    "CodecWeightsNotFoundError",
    "DCAECodec",
    "Flux2Codec",
    "LatentCodec",
    "PixelCodec",
    "QwenImageCodec",
]
