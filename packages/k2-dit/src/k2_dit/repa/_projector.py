"""Projectors from DiT hidden states to the teacher's feature width: REPA MLP and iREPA conv."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from jaxtyping import Float
from torch import Tensor, nn

ProjectorKind = Literal["conv", "mlp"]


def _check_tokens(tokens: Tensor, grid: tuple[int, int], dim: int) -> None:
    gh, gw = grid
    if gh <= 0 or gw <= 0:
        raise ValueError(f"grid {grid} must have positive sides")
    if tokens.shape[1] != gh * gw:
        raise ValueError(
            f"got {tokens.shape[1]} tokens for a {gh}x{gw} grid ({gh * gw} tokens): pass the "
            "image-token grid (latent height/patch, latent width/patch) the tokens came from"
        )
    if tokens.shape[2] != dim:
        raise ValueError(
            f"tokens have width {tokens.shape[2]} but the projector was built for dim={dim}"
        )


class ConvProjector(nn.Module):
    """iREPA projector: one k×k convolution over the image-token grid (any H×W, not only square).

    Tokens [b, h·w, d] are laid back onto their row-major (h, w) grid, convolved with
    `nn.Conv2d(d, teacher_dim, k, padding=k//2)` (zero padding keeps the grid size) and
    flattened again. Unlike the per-token MLP, the convolution mixes each token with its
    neighbours, so the projection keeps the spatial structure the alignment is about.

    Args:
        dim: DiT width d.
        teacher_dim: teacher feature width e.
        kernel_size: odd k; 3 as in the iREPA README (the official `train.py` defaults to 1).

    References:
        Singh et al. 2025 (iREPA, arXiv 2512.10794), §4 ("convolutional projection layer");
        `ProjectionLayer` in the official code.
    """

    def __init__(self, dim: int, *, teacher_dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size={kernel_size} must be a positive odd number so padding "
                "kernel_size//2 keeps the token grid size (use 1 or 3)"
            )
        self.dim, self.teacher_dim = dim, teacher_dim
        self.conv = nn.Conv2d(dim, teacher_dim, kernel_size, padding=kernel_size // 2)

    def forward(
        self, tokens: Float[Tensor, "b n d"], *, grid: tuple[int, int]
    ) -> Float[Tensor, "b n e"]:
        """Project image tokens on a (rows, cols) grid.

        Args:
            tokens: DiT image tokens, row-major over `grid`.
            grid: (gh, gw) with gh·gw = n.

        Returns:
            [b, n, teacher_dim].
        """
        _check_tokens(tokens, grid, self.dim)
        b = tokens.shape[0]
        image = tokens.transpose(1, 2).reshape(b, self.dim, grid[0], grid[1])
        return self.conv(image).flatten(2).transpose(1, 2)


class MLPProjector(nn.Module):
    """REPA projector: the same MLP on every token, Linear → SiLU → … → Linear.

    Args:
        dim: DiT width d.
        teacher_dim: teacher feature width e.
        hidden_dim: width of the hidden layers (REPA: 2048).
        num_layers: number of linear layers (REPA: 3).

    References:
        Yu et al. 2025 (REPA, arXiv 2410.06940), §3.2 and `build_mlp` in the official code.
    """

    def __init__(
        self, dim: int, *, teacher_dim: int, hidden_dim: int = 2048, num_layers: int = 3
    ) -> None:
        super().__init__()
        if num_layers < 1 or hidden_dim < 1:
            raise ValueError(f"num_layers={num_layers} and hidden_dim={hidden_dim} must be >= 1")
        self.dim, self.teacher_dim = dim, teacher_dim
        widths = [dim] + [hidden_dim] * (num_layers - 1) + [teacher_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers.append(nn.SiLU())
        self.mlp = nn.Sequential(*layers)

    def forward(
        self, tokens: Float[Tensor, "b n d"], *, grid: tuple[int, int] | None = None
    ) -> Float[Tensor, "b n e"]:
        """Project each token independently; `grid`, when given, is only checked."""
        if grid is not None:
            _check_tokens(tokens, grid, self.dim)
        return self.mlp(tokens)


@dataclass(frozen=True, kw_only=True)
class ProjectorConfig:
    """Which projector maps DiT tokens to the teacher width (iREPA: `conv`, k = 3)."""

    kind: ProjectorKind = "conv"
    """`conv` (iREPA) or `mlp` (REPA)."""
    teacher_dim: int = 768
    """Width of the teacher's patch tokens (DINOv2/v3 ViT-B: 768; SigLIP-2 So400m: 1152)."""
    kernel_size: int = 3
    """`conv` only: odd kernel size."""
    hidden_dim: int = 2048
    """`mlp` only: hidden width."""
    num_layers: int = 3
    """`mlp` only: linear layers."""

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "mlp"):
            raise ValueError(f"projector kind={self.kind!r} must be 'conv' or 'mlp'")
        if self.teacher_dim <= 0:
            raise ValueError(f"teacher_dim={self.teacher_dim} must be positive")


def make_projector(config: ProjectorConfig, *, dim: int) -> ConvProjector | MLPProjector:
    """Build the projector a `ProjectorConfig` describes for a DiT of width `dim`."""
    if config.kind == "conv":
        return ConvProjector(dim, teacher_dim=config.teacher_dim, kernel_size=config.kernel_size)
    return MLPProjector(
        dim,
        teacher_dim=config.teacher_dim,
        hidden_dim=config.hidden_dim,
        num_layers=config.num_layers,
    )
