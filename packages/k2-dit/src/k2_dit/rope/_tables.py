"""Cos/sin tables and the rotation of interleaved pairs (FLUX layout)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Float32
from torch import Tensor


@dataclass(frozen=True)
class RopeTables:
    """cos and sin of the angle of every (batch, table head, token, rotary pair)."""

    cos: Float32[Tensor, "b h n p"]
    """`[B or 1, heads or 1, n, rotated_dim // 2]`."""
    sin: Float32[Tensor, "b h n p"]
    """Same shape as `cos`."""

    @property
    def rotated_dim(self) -> int:
        """Number of leading head dims the tables rotate."""
        return 2 * self.cos.shape[-1]


def apply_rope(x: Float[Tensor, "b h n d"], tables: RopeTables) -> Float[Tensor, "b h n d"]:
    """Rotate the first `tables.rotated_dim` dims of every head by pairs (2i, 2i + 1).

    Pair (x0, x1) becomes (x0 cos - x1 sin, x0 sin + x1 cos); dims past `rotated_dim` pass through
    untouched. With h = g * table_heads, query head j uses table head j // g (GQA groups). Computes
    in float32 (float64 stays float64) and returns x's dtype.

    Args:
        x: queries or keys, `[b, h, n, d]`.
        tables: output of `Rope`, with batch 1 or b, heads dividing h, and n tokens.

    Returns:
        The rotated `[b, h, n, d]` tensor.

    References:
        Su et al. 2021, RoFormer, Eq. (34); Black Forest Labs FLUX.1 `apply_rope` (pair layout).
    """
    b, h, n, d = x.shape
    tb, th, tn, p = tables.cos.shape
    r = 2 * p
    if tn != n:
        raise ValueError(
            f"RoPE tables cover {tn} tokens but x has {n}: build the positions for the full "
            "sequence (text, extra and image tokens) before calling Rope"
        )
    if tb not in (1, b):
        raise ValueError(f"RoPE tables have batch {tb} but x has batch {b}: use batch 1 or {b}")
    if h % th != 0:
        raise ValueError(
            f"x has {h} heads, not a multiple of the {th} table heads: build Rope with "
            "num_kv_heads equal to the number of K/V heads"
        )
    if r > d:
        raise ValueError(
            f"RoPE tables rotate {r} dims but heads have {d}: build Rope with head_dim={d}"
        )
    compute = torch.promote_types(x.dtype, torch.float32)
    # View heads as (table head, group member) so a table head broadcasts over its query group
    # without materialising repeated tables.
    pairs = x[..., :r].to(compute).reshape(b, th, h // th, n, p, 2)
    cos = tables.cos.to(compute)[:, :, None]
    sin = tables.sin.to(compute)[:, :, None]
    x0, x1 = pairs.unbind(-1)
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    rotated = rotated.reshape(b, h, n, r).to(x.dtype)
    if r == d:
        return rotated
    return torch.cat((rotated, x[..., r:]), dim=-1)
