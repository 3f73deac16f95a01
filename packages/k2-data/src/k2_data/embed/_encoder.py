"""Image encoders (SigLIP-2, DINOv3, any transformers or timm vision backbone) from local paths."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from k2_data.hashing import ImageBatch, as_pil

Preprocess = Callable[[list[Image.Image]], dict[str, Tensor]]
"""RGB PIL images -> model inputs (a dict of batched tensors)."""

_WHAT_TO_PUT = (
    "put a transformers vision checkpoint there with its preprocessor_config.json (e.g. "
    "`hf download google/siglip2-so400m-patch16-naflex --local-dir {path}` or "
    "facebook/dinov3-vitl16-pretrain-lvd1689m), or a timm model saved with "
    "`timm.models.save_for_hf(model, {path}, safe_serialization=True)`"
)


def l2_normalize(x: Float[Tensor, "*b d"], *, eps: float = 1e-12) -> Float[Tensor, "*b d"]:
    """x / max(||x||_2, eps) along the last dimension (cosine similarity becomes a dot product).

    Args:
        x: embeddings.
        eps: floor on the norm, so an all-zero row stays zero instead of NaN.

    Returns:
        Rows of unit L2 norm (zero rows stay zero).
    """
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def _rgb_list(images: ImageBatch) -> list[Image.Image]:
    return [as_pil(image).convert("RGB") for image in images]


def _transformers_features(model: Any, inputs: dict[str, Tensor]) -> Tensor:
    # Dual models (SiglipModel, Siglip2Model) expose the image tower through
    # get_image_features; vision-only models (Siglip2VisionModel, DINOv3ViTModel) pool
    # themselves: SigLIP's attention-pooling head, DINOv3's normalised CLS token.
    if hasattr(model, "get_image_features"):
        out = model.get_image_features(**inputs)
    else:
        out = model(**inputs)
    if isinstance(out, Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    return pooled if pooled is not None else out.last_hidden_state[:, 0]


class ImageEncoder:
    """Decoded images in, one pooled embedding per image out.

    Args:
        model: a torch module in eval mode.
        preprocess: images -> input tensors of the model.
        features: (model, inputs) -> (B, D) pooled features.
        name: where the weights came from (recorded in embedding caches).

    Build one with `load_image_encoder`, `ImageEncoder.from_transformers` or
    `ImageEncoder.from_timm`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Preprocess,
        features: Callable[[Any, dict[str, Tensor]], Tensor],
        *,
        name: str = "",
    ) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.features = features
        self.name = name

    @classmethod
    def from_transformers(
        cls, model: torch.nn.Module, image_processor: Any, *, name: str = ""
    ) -> ImageEncoder:
        """Wrap a transformers vision model and its image processor."""

        def preprocess(images: list[Image.Image]) -> dict[str, Tensor]:
            return dict(image_processor(images=images, return_tensors="pt"))

        return cls(model, preprocess, _transformers_features, name=name)

    @classmethod
    def from_timm(cls, model: torch.nn.Module, *, name: str = "") -> ImageEncoder:
        """Wrap a timm model (created with num_classes=0, so it returns pooled features)."""
        import timm.data

        transform = timm.data.create_transform(
            **timm.data.resolve_model_data_config(model), is_training=False
        )

        def preprocess(images: list[Image.Image]) -> dict[str, Tensor]:
            return {"x": torch.stack([transform(image) for image in images])}

        return cls(model, preprocess, lambda m, inputs: m(inputs["x"]), name=name)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def __call__(self, images: ImageBatch) -> Float[Tensor, "b d"]:
        """Pooled features of one batch, float32 on the model's device."""
        inputs = self.preprocess(_rgb_list(images))
        inputs = {
            k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
            for k, v in inputs.items()
        }
        return self.features(self.model, inputs).float()


def load_image_encoder(
    path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ImageEncoder:
    """Load an image encoder from a local directory only (no hub access).

    A directory whose config.json has an "architecture" key is a timm checkpoint (as written
    by `timm.models.save_for_hf`); one with "model_type" is a transformers checkpoint, loaded
    with `AutoModel` and `AutoImageProcessor` (SigLIP, SigLIP-2 including NaFlex, DINOv3 ViT,
    or any vision model with a pooled output).

    Args:
        path: the checkpoint directory.
        backend: force "transformers" or "timm" instead of reading config.json.
        device: where the model runs.
        dtype: weight dtype (bfloat16 on GPU for throughput).

    Returns:
        An `ImageEncoder`.

    References:
        Krea 2 report, Data: small classifiers on DINOv3 / SigLIP-2 embeddings; Tschannen et
        al. 2025, SigLIP 2 (arXiv 2502.14786); Siméoni et al. 2025, DINOv3 (arXiv 2508.10104).
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"no image-encoder checkpoint at {path} (config.json missing): "
            + _WHAT_TO_PUT.format(path=path)
        )
    config = json.loads(config_file.read_text())
    if backend == "auto":
        backend = "timm" if "architecture" in config else "transformers"
    if backend == "timm":
        import timm

        # The local-dir source reads config.json and the weights (safetensors, or a torch
        # file with weights_only=True); num_classes=0 drops the classifier head.
        model = timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0)
        return ImageEncoder.from_timm(model.to(device, dtype), name=str(path))
    if backend != "transformers":
        raise ValueError(f"backend must be 'auto', 'transformers' or 'timm', got {backend!r}")
    if not (path / "preprocessor_config.json").is_file():
        raise FileNotFoundError(
            f"{path} has config.json but no preprocessor_config.json: "
            + _WHAT_TO_PUT.format(path=path)
        )
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=dtype)
    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    return ImageEncoder.from_transformers(model.to(device), processor, name=str(path))


def embed_images(
    encoder: Callable[[ImageBatch], Tensor],
    images: ImageBatch,
    *,
    batch_size: int = 32,
    normalize: bool = True,
) -> Float[np.ndarray, "n d"]:
    """Embed images in batches of `batch_size`; optionally L2-normalise each row.

    Args:
        encoder: an `ImageEncoder` (or any images -> (B, D) tensor callable).
        images: decoded images (PIL or uint8 arrays).
        batch_size: images per forward pass.
        normalize: L2-normalise (SigLIP and DINOv3 features are compared by cosine).

    Returns:
        float32 embeddings, one row per image, on the host.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = list(images) if not isinstance(images, Sequence) else images
    if len(images) == 0:
        raise ValueError("embed_images got no images")
    rows = []
    for start in range(0, len(images), batch_size):
        out = encoder(images[start : start + batch_size])
        rows.append((l2_normalize(out) if normalize else out).float().cpu())
    return torch.cat(rows).numpy()
