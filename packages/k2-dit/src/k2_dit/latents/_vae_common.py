"""Shared plumbing of the diffusers-backed codecs: base class, local loading, posterior, sizes."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

_INSTALL = 'pip install "k2-dit[vae]"'
_C = TypeVar("_C", bound="DiffusersCodec")
_WEIGHTS = ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")


class CodecWeightsNotFoundError(FileNotFoundError):
    """A local autoencoder directory is missing or lacks its config or weights."""


def diffusers_class(name: str) -> type:
    """`diffusers.<name>`, imported on first use; a clear ImportError if diffusers is absent."""
    try:
        module = importlib.import_module("diffusers")
    except ImportError as err:
        raise ImportError(f"{name} needs the optional dependency diffusers: {_INSTALL}") from err
    cls = getattr(module, name, None)
    if cls is None:
        raise ImportError(
            f"diffusers {getattr(module, '__version__', '?')} has no {name}: upgrade it "
            f"({_INSTALL} installs a recent enough one)"
        )
    return cls


def check_vae_type(vae: Any, name: str) -> None:
    """Raise if `vae` is not a `diffusers.<name>`."""
    cls = diffusers_class(name)
    if not isinstance(vae, cls):
        raise TypeError(
            f"expected a diffusers.{name}, got {type(vae).__name__}: use the codec class that "
            f"matches the autoencoder"
        )


def load_local_vae(
    name: str,
    path: str | os.PathLike[str],
    *,
    subfolder: str | None,
    dtype: torch.dtype,
    device: str | torch.device,
    hint: str,
) -> Any:
    """Load `diffusers.<name>` from a local directory only (`local_files_only=True`)."""
    cls = diffusers_class(name)
    root = Path(path).expanduser()
    folder = root / subfolder if subfolder else root
    if not folder.is_dir():
        raise CodecWeightsNotFoundError(f"no autoencoder directory at {folder}: {hint}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CodecWeightsNotFoundError(f"{folder} has no config.json: {hint}")
    if not any(any(folder.glob(p)) for p in _WEIGHTS):
        raise CodecWeightsNotFoundError(
            f"{folder} has no diffusion_pytorch_model*.safetensors weights: {hint}"
        )
    class_name = json.loads(config_path.read_text()).get("_class_name")
    if class_name is not None and class_name != name:
        raise ValueError(
            f"{config_path} describes a {class_name}, not a {name}: point to the matching "
            "checkpoint or use the codec class for it"
        )
    vae = cls.from_pretrained(
        str(root), subfolder=subfolder, local_files_only=True, torch_dtype=dtype
    )
    return vae.to(device)


def posterior_latent(encoded: Any, generator: torch.Generator | None) -> Tensor:
    """Posterior mean (mode) of a diffusers KL encoder output, or a sample with `generator`."""
    dist = encoded.latent_dist
    return dist.mode() if generator is None else dist.sample(generator)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Normalisation runs in at least float32 (bf16 statistics would round the latents)."""
    return torch.promote_types(dtype, torch.float32)


def check_image_size(images: Tensor, factor: int) -> None:
    """Raise if H or W is not a multiple of the codec's downsample factor."""
    h, w = images.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"image size {h}x{w} is not divisible by the codec's downsample factor {factor}: "
            f"resize or crop to a multiple of {factor}"
        )


class DiffusersCodec(nn.Module):
    """Base of the diffusers-backed codecs: type check, freezing, local loading, mean/std scaling.

    Subclasses name their diffusers class in `_vae_class`, give a download `_hint`, and provide
    `_stats(like)` (per-channel mean and std shaped `[1, c, 1, 1]`) or override
    `normalize`/`denormalize`.

    Args:
        vae: an in-memory `diffusers.<_vae_class>` (frozen and put in eval mode here).
    """

    _vae_class: ClassVar[str]
    _hint: ClassVar[str]

    def __init__(self, vae: Any) -> None:
        super().__init__()
        check_vae_type(vae, self._vae_class)
        self.vae = vae.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls: type[_C],
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        subfolder: str | None = None,
    ) -> _C:
        """Load from a local directory only.

        Args:
            path: directory with config.json and diffusion_pytorch_model.safetensors.
            dtype: parameter dtype.
            device: where the autoencoder lives.
            subfolder: e.g. "vae" when `path` is a whole pipeline checkpoint.
        """
        vae = load_local_vae(
            cls._vae_class, path, subfolder=subfolder, dtype=dtype, device=device, hint=cls._hint
        )
        return cls(vae).to(device)

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define _stats or normalize")

    def normalize(self, raw: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h w"]:
        """Autoencoder latents to normalised latents, (raw - mean) / std per channel."""
        raw = raw.to(compute_dtype(raw.dtype))
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def denormalize(self, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h w"]:
        """Normalised latents back to autoencoder latents."""
        latents = latents.to(compute_dtype(latents.dtype))
        mean, std = self._stats(latents)
        return latents * std + mean
