"""Frequency vectors of every rotary pair: the angle of pair k of table head h is <freqs[h, k], pos>.

Writing every kind as one `[heads, pairs, 3]` table of frequency vectors makes them share one code
path: axial RoPE has one-hot vectors (each pair listens to one axis), Golden Gate RoPE has unit
directions spread over the sphere, and MRoPE assigns slices of the 1D frequency ladder to axes.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from k2_dit.config import ConfigError, RopeConfig


def _generalized_golden_ratio(d: int) -> float:
    """phi_d, the positive root of x**(d + 1) = x + 1 (phi_1 is the golden ratio)."""
    x = 2.0
    # The map x -> (1 + x)**(1 / (d + 1)) is a contraction near the root, so 64 steps reach
    # float64 precision for every d.
    for _ in range(64):
        x = (1.0 + x) ** (1.0 / (d + 1))
    return x


def golden_gate_directions(n: int, dim: int = 3) -> Float[Tensor, "n dim"]:
    """Unit vectors spread near-uniformly over the sphere, from the R_d low-discrepancy sequence.

    Point i (1-based) of the R_d sequence is z_i = frac(i * phi_d**-k) for k = 1..dim; mapping it
    through the Gaussian quantile erfinv(2z - 1) and normalising gives a direction.

    Args:
        n: number of directions.
        dim: dimension of the position space (3 for frame, height, width).

    Returns:
        `[n, dim]` float64 unit vectors.

    References:
        Xiong 2025, "On N-dimensional Rotary Positional Embeddings" (Golden Gate RoPE);
        Roberts 2018, "The unreasonable effectiveness of quasirandom sequences" (R_d sequence).
    """
    if n < 0 or dim < 1:
        raise ValueError(f"golden_gate_directions needs n >= 0 and dim >= 1, got n={n}, dim={dim}")
    g = _generalized_golden_ratio(dim)
    alpha = g ** -torch.arange(1, dim + 1, dtype=torch.float64)
    i = torch.arange(1, n + 1, dtype=torch.float64)[:, None]
    z = torch.frac(i * alpha)
    # z is never exactly 0 for an irrational alpha, but a rounding to 0 would give erfinv = -inf
    # and a NaN direction; the clamp only guards that edge.
    z = z.clamp(1e-12, 1.0 - 1e-12)
    u = torch.erfinv(2.0 * z - 1.0)
    return u / u.norm(dim=-1, keepdim=True)


def _check(cfg: RopeConfig, head_dim: int, num_kv_heads: int) -> None:
    cfg.validate(head_dim)
    if cfg.theta <= 0:
        raise ConfigError(f"rope.theta={cfg.theta} must be positive (10000 is the usual base)")
    if num_kv_heads < 1:
        raise ConfigError(f"num_kv_heads={num_kv_heads} must be >= 1: pass attention.kv_heads")
    if cfg.kind == "golden_gate" and not 0.0 <= cfg.zero_freq_fraction <= 1.0:
        raise ConfigError(
            f"rope.zero_freq_fraction={cfg.zero_freq_fraction} must lie in [0, 1]: "
            "it is the fraction of frequencies set to 0"
        )
    if cfg.kind == "normalized" and cfg.normalized_scale <= 0:
        raise ConfigError(
            f"rope.normalized_scale={cfg.normalized_scale} must be positive: "
            "it is the extent of the [-1, 1] coordinates in rotary units"
        )


def _axial(cfg: RopeConfig, head_dim: int) -> Tensor:
    rows = []
    for axis, d in enumerate(cfg.resolved_axes(head_dim)):
        # FLUX.1 `rope`: omega_k = theta**(-2k / d_axis), a full 1D ladder restarted for each axis.
        omega = cfg.theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        row = torch.zeros(d // 2, 3, dtype=torch.float64)
        row[:, axis] = omega
        rows.append(row)
    return torch.cat(rows)[None]


def _mrope(cfg: RopeConfig, head_dim: int) -> Tensor:
    rot = cfg.rotated_dim(head_dim)
    # One 1D ladder over all rotated dims, cut into (t, h, w) sections: with t = h = w = i every
    # pair turns by omega_k * i, which is exactly 1D RoPE (Qwen2-VL).
    omega = cfg.theta ** (-torch.arange(0, rot, 2, dtype=torch.float64) / rot)
    sections = torch.tensor(cfg.resolved_axes(head_dim)) // 2
    axis = torch.repeat_interleave(torch.arange(3), sections)
    freqs = torch.zeros(rot // 2, 3, dtype=torch.float64)
    freqs[torch.arange(rot // 2), axis] = omega
    return freqs[None]


def _golden_gate(cfg: RopeConfig, head_dim: int, num_kv_heads: int) -> Tensor:
    n_pairs = cfg.rotated_dim(head_dim) // 2
    n_zero = round(cfg.zero_freq_fraction * n_pairs)
    n_live = n_pairs - n_zero
    # Log-spaced from 1/theta to 1 rad per unit of position, the span of 1D RoPE's ladder on the
    # integer grid; zeros first, then ascending, as in the post's reference code.
    omega = torch.cat(
        (
            torch.zeros(n_zero, dtype=torch.float64),
            cfg.theta ** (torch.linspace(0.0, 1.0, n_live, dtype=torch.float64) - 1.0),
        )
    )
    directions = golden_gate_directions(num_kv_heads * n_pairs, 3)
    return directions.view(num_kv_heads, n_pairs, 3) * omega[:, None]


def rope_frequencies(
    cfg: RopeConfig, *, head_dim: int, num_kv_heads: int
) -> Float[Tensor, "heads pairs 3"]:
    """Frequency vector of every rotary pair, so that pair k of head h turns by <freqs[h, k], pos>.

    `axial`, `partial` and `normalized` give one-hot vectors scaled by omega_k = theta**(-2k/d_a)
    per axis; `mrope` gives the 1D ladder omega_k = theta**(-2k/R) split into (t, h, w) sections;
    `golden_gate` gives omega_f * u_{h,f} with R_d directions u per KV head and omega_f log-spaced
    in [1/theta, 1] after `zero_freq_fraction` exact zeros.

    Args:
        cfg: rotary config (validated here).
        head_dim: width of each attention head.
        num_kv_heads: distinct K/V heads; only `golden_gate` has per-head frequencies.

    Returns:
        `[heads, rotated_dim // 2, 3]` float64, heads = num_kv_heads for `golden_gate`, else 1.

    References:
        Su et al. 2021, RoFormer, Eq. (34); Black Forest Labs FLUX.1 `rope` (axial);
        Wang et al. 2024, Qwen2-VL, §2.1 M-RoPE; Xiong 2025, Golden Gate RoPE.
    """
    _check(cfg, head_dim, num_kv_heads)
    if cfg.kind == "golden_gate":
        return _golden_gate(cfg, head_dim, num_kv_heads)
    if cfg.kind == "mrope":
        return _mrope(cfg, head_dim)
    return _axial(cfg, head_dim)
