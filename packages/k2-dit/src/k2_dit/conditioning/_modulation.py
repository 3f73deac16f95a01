"""AdaLN modulation: the shared signal, the per-block parameters, and modulate()."""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from k2_dit.config import TimestepKind

ROWS = ("shift_attn", "scale_attn", "gate_attn", "shift_mlp", "scale_mlp", "gate_mlp")
"""Row order of a block's 6·dim modulation (DiT adaLN-Zero order)."""


class TimestepSignal(NamedTuple):
    """What the conditioning module hands to the blocks; unused fields are None.

    embedding: c [b, dim], the timestep embedding (`adaln_mlp`, `shared_bias`).
    shared: [b, 6, dim], the shared modulation (`shared_bias`).
    tokens: [b, T, dim], timestep tokens (`in_context`).
    """

    embedding: Tensor | None = None
    shared: Tensor | None = None
    tokens: Tensor | None = None


def modulate(
    x: Float[Tensor, "b n d"], shift: Float[Tensor, "b d"], scale: Float[Tensor, "b d"]
) -> Float[Tensor, "b n d"]:
    """AdaLN affine: x·(1 + scale) + shift, one (shift, scale) per sample.

    Args:
        x: normalised tokens.
        shift: per-sample shift.
        scale: per-sample scale offset (0 leaves the norm output unchanged).

    Returns:
        The modulated tokens.

    References:
        Peebles & Xie 2023 (DiT `modulate`); Perez et al. 2018 (FiLM).
    """
    return x * (1 + scale[:, None]) + shift[:, None]


class SharedModulation(nn.Module):
    """One modulation MLP for the whole network: SiLU → Linear(dim, 6·dim) on c.

    Zero-initialised (weights and bias), so at init every block's modulation equals its own
    bias table; the gate rows of those tables start at 0 (adaLN-Zero).

    Args:
        dim: model width.

    References:
        Chen et al. 2023, "PixArt-α", §2.3 adaLN-single (`t_block`); Krea 2 report, Timestep
        conditioning ("per-block tunable bias").
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, c: Float[Tensor, "b d"]) -> Float[Tensor, "b 6 d"]:
        return self.proj(torch.nn.functional.silu(c)).view(c.shape[0], 6, self.dim)


class Modulation(nn.Module):
    """A block's (or the final layer's) AdaLN parameters, `rows` vectors of width dim.

    - `adaln_mlp`: rows = Linear(SiLU(c)), one MLP per block, weights and bias zero at init
      (adaLN-Zero: all of shift, scale, gate start at 0).
    - `shared_bias`: rows = shared[:, :rows] + table, with the table (rows, dim) this block's
      learnable bias. Shift/scale rows start at N(0, 1/dim) (PixArt-α), gate rows at 0, so
      the residual stream is unchanged at init like adaLN-Zero. With `from_embedding=True`
      (final layer) the table is added to c instead, as PixArt-α's final layer does.

    Args:
        dim: model width.
        kind: `adaln_mlp` or `shared_bias`.
        rows: 6 for a block (shift/scale/gate for attention and MLP), 2 for shift/scale only.
        from_embedding: `shared_bias` only: add the bias to c, not to the shared projection.

    References:
        Peebles & Xie 2023, §3.2 adaLN-Zero; Chen et al. 2023 (PixArt-α) adaLN-single and
        `T2IFinalLayer`; Krea 2 report, Timestep conditioning.
    """

    def __init__(
        self, dim: int, *, kind: TimestepKind, rows: int = 6, from_embedding: bool = False
    ) -> None:
        super().__init__()
        if rows not in (2, 6):
            raise ValueError(f"rows={rows}: a modulation has 6 rows (block) or 2 (shift/scale)")
        self.dim, self.kind, self.rows, self.from_embedding = dim, kind, rows, from_embedding
        if kind == "adaln_mlp":
            self.proj = nn.Linear(dim, rows * dim)
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        elif kind == "shared_bias":
            table = torch.randn(rows, dim) / dim**0.5
            table[2::3] = 0.0  # gate rows (2 and 5) start at zero: identity residual at init
            self.table = nn.Parameter(table)
        else:
            raise ValueError(
                f"timestep={kind!r} has no AdaLN modulation: use 'adaln_mlp' or 'shared_bias'"
            )

    def forward(self, signal: TimestepSignal) -> Float[Tensor, "b rows d"]:
        """The modulation rows for each sample, [b, rows, dim] in `ROWS` order."""
        if signal.embedding is None:
            raise ValueError(f"timestep={self.kind!r} modulation needs signal.embedding")
        c = signal.embedding
        if self.kind == "adaln_mlp":
            out = self.proj(torch.nn.functional.silu(c))
            return out.view(c.shape[0], self.rows, self.dim)
        if self.from_embedding:
            return self.table[None].to(c.dtype) + c[:, None]
        if signal.shared is None:
            raise ValueError("timestep='shared_bias' modulation needs signal.shared")
        return signal.shared[:, : self.rows] + self.table[None].to(signal.shared.dtype)
