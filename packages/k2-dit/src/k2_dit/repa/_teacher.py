"""Frozen teacher encoders (DINOv2/v3, SigLIP/SigLIP-2, timm ViTs) returning patch tokens."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn import functional as F

TeacherFamily = Literal["dinov2", "dinov3", "siglip", "siglip2", "timm"]

# transformers `model_type` -> family; the family fixes the call and the prefix-token layout.
_HF_FAMILIES: dict[str, TeacherFamily] = {
    "dinov2": "dinov2",
    "dinov2_with_registers": "dinov2",
    "dinov3_vit": "dinov3",
    "siglip": "siglip",
    "siglip_vision_model": "siglip",
    "siglip2": "siglip2",
    "siglip2_vision_model": "siglip2",
}
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


class PatchTeacher(nn.Module):
    """A frozen image encoder that returns its patch tokens (no CLS/register tokens) and grid.

    Build it with `load_teacher` (transformers) or `load_timm_teacher`. Inputs are RGB images
    in [0, 1]; the teacher normalises them with its own mean/std. Token layout per family:
    DINOv2 = [CLS, patches]; DINOv2-with-registers and DINOv3 = [CLS, registers, patches];
    SigLIP/SigLIP-2 = [patches] (their pooled output comes from a separate head); timm =
    `num_prefix_tokens` then patches. The encoder stays in eval mode with gradients off.

    Args:
        encoder: the wrapped model.
        family: how to call it.
        patch_size: (ph, pw) pixels per patch.
        num_prefix_tokens: tokens before the patches in the encoder output.
        embed_dim: width e of the tokens.
        mean: per-channel mean of the encoder's input normalisation.
        std: per-channel std of the encoder's input normalisation.
        source: where it was loaded from (for messages).
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        family: TeacherFamily,
        patch_size: tuple[int, int],
        num_prefix_tokens: int,
        embed_dim: int,
        mean: Sequence[float],
        std: Sequence[float],
        source: str = "",
    ) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.family, self.patch_size = family, _pair(patch_size)
        self.num_prefix_tokens, self.embed_dim, self.source = num_prefix_tokens, embed_dim, source
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PatchTeacher:
        # The teacher is a fixed target: a parent's .train() must not switch it out of eval.
        return super().train(False)

    def _encode(self, pixels: Tensor, grid: tuple[int, int]) -> Tensor:
        if self.family == "timm":
            return self.encoder.forward_features(pixels)
        if self.family == "siglip":
            return self.encoder(
                pixel_values=pixels, interpolate_pos_encoding=True
            ).last_hidden_state
        if self.family == "siglip2":
            # NaFlex input: patches flattened as (ph, pw, c) like Siglip2ImageProcessor.
            (ph, pw), b = self.patch_size, pixels.shape[0]
            patches = pixels.unflatten(2, (grid[0], ph)).unflatten(4, (grid[1], pw))
            patches = patches.permute(0, 2, 4, 3, 5, 1).reshape(b, grid[0] * grid[1], -1)
            shapes = torch.tensor([grid] * b, dtype=torch.long, device=pixels.device)
            mask = torch.ones(b, grid[0] * grid[1], dtype=torch.long, device=pixels.device)
            out = self.encoder(
                pixel_values=patches, pixel_attention_mask=mask, spatial_shapes=shapes
            )
            return out.last_hidden_state
        return self.encoder(pixel_values=pixels).last_hidden_state

    @torch.no_grad()
    def forward(
        self, images: Float[Tensor, "b 3 h w"], *, grid: tuple[int, int] | None = None
    ) -> tuple[Float[Tensor, "b n e"], tuple[int, int]]:
        """Patch tokens of `images` and their (rows, cols) grid.

        Args:
            images: RGB in [0, 1].
            grid: target patch grid; the images are resized (bilinear, antialiased) to
                (rows·ph, cols·pw) so the teacher grid equals it (pass the DiT's token grid to
                skip feature resampling). None: h and w must be multiples of the patch size.

        Returns:
            (tokens [b, rows·cols, e], (rows, cols)).
        """
        ph, pw = self.patch_size
        if grid is not None:
            size = (grid[0] * ph, grid[1] * pw)
            if tuple(images.shape[-2:]) != size:
                images = F.interpolate(
                    images.float(), size=size, mode="bilinear", align_corners=False, antialias=True
                )
        elif images.shape[-2] % ph or images.shape[-1] % pw:
            raise ValueError(
                f"image size {tuple(images.shape[-2:])} is not a multiple of the teacher patch "
                f"{self.patch_size}: pass grid=(rows, cols) to resize the images onto a grid"
            )
        grid = (images.shape[-2] // ph, images.shape[-1] // pw)
        dtype = next(self.encoder.parameters()).dtype
        pixels = ((images - self.mean.to(images)) / self.std.to(images)).to(dtype)
        hidden = self._encode(pixels, grid)
        n = grid[0] * grid[1]
        if hidden.shape[1] != self.num_prefix_tokens + n:
            raise RuntimeError(
                f"{self.family} teacher from {self.source or '?'} returned {hidden.shape[1]} "
                f"tokens; expected {self.num_prefix_tokens} prefix + {n} patch tokens"
            )
        return hidden[:, self.num_prefix_tokens :], grid


def _mean_std(path: Path, family: TeacherFamily) -> tuple[Sequence[float], Sequence[float]]:
    processor = path / "preprocessor_config.json"
    if processor.is_file():
        cfg = json.loads(processor.read_text())
        if "image_mean" in cfg and "image_std" in cfg:
            return [float(v) for v in cfg["image_mean"]], [float(v) for v in cfg["image_std"]]
    return _HALF if family in ("siglip", "siglip2") else _IMAGENET


def load_teacher(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> PatchTeacher:
    """Load a DINOv2 / DINOv3 / SigLIP / SigLIP-2 encoder from a local transformers directory.

    The family comes from `config.json`'s `model_type`. Full SigLIP(-2) checkpoints (text +
    vision) load their vision tower only. Input mean/std come from
    `preprocessor_config.json` when present, else the family's defaults.

    Args:
        path: directory holding `config.json` and the weights (`save_pretrained` layout).
        dtype: weight dtype (e.g. torch.bfloat16); None keeps the checkpoint's.
        device: where to put the encoder.

    Returns:
        A frozen `PatchTeacher`.

    References:
        Oquab et al. 2024 (DINOv2); Siméoni et al. 2025 (DINOv3); Tschannen et al. 2025
        (SigLIP 2); Krea 2 report, Pretraining (iREPA target: DINOv3).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no teacher encoder at {path} (looked for {path / 'config.json'}): put a "
            "transformers checkpoint there, e.g. `hf download facebook/dinov2-base --local-dir "
            f"{path}` on a machine with hub access, then copy the directory"
        )
    import transformers

    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    family = _HF_FAMILIES.get(config.model_type)
    if family is None:
        raise ValueError(
            f"{path} holds a {config.model_type!r} model; supported teachers: "
            f"{sorted(_HF_FAMILIES)} (or timm models through load_timm_teacher)"
        )
    cls = {
        "siglip": transformers.SiglipVisionModel,
        "siglip2": transformers.Siglip2VisionModel,
    }.get(family, transformers.AutoModel)
    kwargs = {} if dtype is None else {"dtype": dtype}
    encoder = cls.from_pretrained(path, local_files_only=True, **kwargs).to(device)
    vision = encoder.config
    prefix = 0 if family in ("siglip", "siglip2") else 1 + getattr(vision, "num_register_tokens", 0)
    mean, std = _mean_std(path, family)
    return PatchTeacher(
        encoder,
        family=family,
        patch_size=_pair(vision.patch_size),
        num_prefix_tokens=prefix,
        embed_dim=vision.hidden_size,
        mean=mean,
        std=std,
        source=str(path),
    ).to(device)


def load_timm_teacher(
    model_name: str,
    checkpoint: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    **model_kwargs: object,
) -> PatchTeacher:
    """Build a timm ViT (`dynamic_img_size=True`, no head) and load local weights into it.

    Args:
        model_name: timm architecture, e.g. `vit_base_patch14_reg4_dinov2`.
        checkpoint: a `.safetensors` file (or a torch file, read with `weights_only=True`) in
            timm's key layout (what `timm` saves or the hub's `model.safetensors`).
        dtype: weight dtype; None keeps float32.
        device: where to put the encoder.
        **model_kwargs: forwarded to `timm.create_model` (e.g. `img_size`).

    Returns:
        A frozen `PatchTeacher` (`family="timm"`).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"no timm checkpoint at {checkpoint}: put the `model.safetensors` of {model_name} "
            "there (downloaded on a machine with hub access)"
        )
    import timm

    model = timm.create_model(
        model_name, pretrained=False, num_classes=0, dynamic_img_size=True, **model_kwargs
    )
    if checkpoint.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(checkpoint)
    else:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("head")]
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint} does not fit timm {model_name!r}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; check the architecture name and model_kwargs"
        )
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    model = model.to(device=device, dtype=dtype)
    return PatchTeacher(
        model,
        family="timm",
        patch_size=_pair(model.patch_embed.patch_size),
        num_prefix_tokens=model.num_prefix_tokens,
        embed_dim=model.num_features,
        mean=[float(v) for v in cfg.get("mean", _IMAGENET[0])],
        std=[float(v) for v in cfg.get("std", _IMAGENET[1])],
        source=str(checkpoint),
    ).to(device)
