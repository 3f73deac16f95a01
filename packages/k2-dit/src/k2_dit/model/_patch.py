"""Patchify / unpatchify and the optional learned 2D sin-cos position table."""

from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn import functional as F


def patchify(x: Float[Tensor, "b c h w"], patch_size: int) -> Float[Tensor, "b n p"]:
    """Cut a latent into non-overlapping p×p patches, row-major, each flattened as (c, p, p).

    Args:
        x: latent; h and w must be multiples of `patch_size`.
        patch_size: patch side p.

    Returns:
        Tokens [b, (h/p)·(w/p), c·p·p].
    """
    h, w = x.shape[-2:]
    if h % patch_size or w % patch_size:
        raise ValueError(
            f"latent size {h}x{w} is not divisible by patch_size={patch_size}: "
            f"crop or pad the latent to a multiple of {patch_size}"
        )
    return rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=patch_size, q=patch_size)


def unpatchify(
    tokens: Float[Tensor, "b n p"], *, grid: tuple[int, int], patch_size: int
) -> Float[Tensor, "b c h w"]:
    """Inverse of `patchify` for a (h/p, w/p) token grid.

    Args:
        tokens: [b, gh·gw, c·p·p] in the layout `patchify` produces.
        grid: (gh, gw), the token grid.
        patch_size: patch side p.

    Returns:
        The latent [b, c, gh·p, gw·p].
    """
    gh, gw = grid
    return rearrange(
        tokens, "b (h w) (c p q) -> b c (h p) (w q)", h=gh, w=gw, p=patch_size, q=patch_size
    )


def sincos_2d(dim: int, grid: tuple[int, int]) -> Float[Tensor, "n d"]:
    """Fixed 2D sin-cos position values: half the channels encode the row, half the column.

    Each half is [sin(pos·ω_k), cos(pos·ω_k)] with ω_k = 10000^(-k / (dim/4)).

    Args:
        dim: embedding width (multiple of 4).
        grid: (gh, gw).

    Returns:
        [gh·gw, dim] in row-major token order, float32.

    References:
        He et al. 2022, "Masked Autoencoders" (`get_2d_sincos_pos_embed`); DiT uses the same.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    gh, gw = grid
    rows = torch.arange(gh, dtype=torch.float64).repeat_interleave(gw)
    cols = torch.arange(gw, dtype=torch.float64).repeat(gh)

    def axis(pos: Tensor) -> Tensor:
        args = pos[:, None] * omega[None]
        return torch.cat([args.sin(), args.cos()], dim=1)

    return torch.cat([axis(rows), axis(cols)], dim=1).float()


class LearnedPosEmbed(nn.Module):
    """Learned absolute position table for image tokens, stored at `grid`², started at 2D
    sin-cos values, resized bilinearly to other token grids (same weights at 16 and 32 px).

    Args:
        dim: model width (multiple of 4).
        grid: side of the stored square table.

    References:
        Dosovitskiy et al. 2021 (ViT), §3.2 fine-tuning at higher resolution (2D
        interpolation of position embeddings); He et al. 2022 (sin-cos initial values).
    """

    def __init__(self, dim: int, *, grid: int) -> None:
        super().__init__()
        self.dim, self.grid = dim, grid
        self.table = nn.Parameter(sincos_2d(dim, (grid, grid)))

    def forward(self, grid: tuple[int, int]) -> Float[Tensor, "n d"]:
        """The table at a (gh, gw) token grid, [gh·gw, dim] row-major."""
        gh, gw = grid
        if (gh, gw) == (self.grid, self.grid):
            return self.table
        square = self.table.view(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
        resized = F.interpolate(square, size=(gh, gw), mode="bilinear", align_corners=False)
        return resized[0].permute(1, 2, 0).reshape(gh * gw, self.dim)
