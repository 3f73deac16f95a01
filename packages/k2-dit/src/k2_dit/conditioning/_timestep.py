"""Sinusoidal timestep features and the timestep-embedding MLP."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn

TIME_SCALE = 1000.0
"""t in [0, 1] is multiplied by this before the sinusoid (DiT/SD3 convention, where the
embedding was designed for integer steps 0..999)."""


def timestep_embedding(
    t: Float[Tensor, " b"], dim: int, *, max_period: float = 10000.0
) -> Float[Tensor, "b dim"]:
    """Sinusoidal features of a continuous timestep, [cos(ω_i·1000t), sin(ω_i·1000t)].

    t in [0, 1] (1 = noise) is scaled by `TIME_SCALE` = 1000 first, so the features match
    the DiT convention for integer steps; ω_i = max_period^(-i / (dim/2)), i = 0..dim/2-1.
    Computed in float32 at least (float64 stays float64) and returned in that precision.

    Args:
        t: one time per sample in [0, 1].
        dim: feature width (even).
        max_period: longest period of the sinusoids.

    Returns:
        [cos | sin] features, `dim` per sample.

    References:
        Vaswani et al. 2017, §3.5; Dhariwal & Nichol 2021 / DiT `TimestepEmbedder.
        timestep_embedding` (cos first); Peebles & Xie 2023.
    """
    if dim % 2:
        raise ValueError(f"timestep embedding dim={dim} must be even (cos and sin halves)")
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32)
    i = torch.arange(half, device=t.device, dtype=dtype)
    freqs = torch.exp(-math.log(max_period) * i / half)
    args = (t.to(dtype) * TIME_SCALE)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """t → sinusoid(1000·t) → Linear → SiLU → Linear: the shared timestep embedding c.

    Args:
        dim: model width (output).
        freq_dim: sinusoidal feature width.

    References:
        Peebles & Xie 2023 (DiT `TimestepEmbedder`, weights ~ N(0, 0.02²)).
    """

    def __init__(self, dim: int, *, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, t: Float[Tensor, " b"]) -> Float[Tensor, "b d"]:
        feats = timestep_embedding(t, self.freq_dim)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))
