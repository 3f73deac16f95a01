"""The rotary module: frequency vectors in, per-token cos/sin tables out."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn

from k2_dit.config import RopeConfig
from k2_dit.rope._frequencies import rope_frequencies
from k2_dit.rope._tables import RopeTables


class Rope(nn.Module):
    """Turns token positions into cos/sin tables for every `RopeConfig.kind`.

    Holds only the `[heads, pairs, 3]` frequency vectors; the tables are recomputed from the
    positions on every call, so changing resolution needs nothing cached. The frequency buffer
    is rebuilt in float32 whenever the module is moved or cast (`.to(bfloat16)`, `to_empty` after
    meta-device init), because a bf16 frequency or uninitialised memory would silently corrupt
    the angles.

    References:
        Su et al. 2021, RoFormer, Eq. (34); Krea 2 report, Architecture, "Positional encoding".
    """

    freqs: Tensor

    def __init__(self, cfg: RopeConfig, *, head_dim: int, num_kv_heads: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.head_dim = head_dim
        self.num_kv_heads = num_kv_heads
        freqs = self._build_freqs().to(torch.get_default_device())
        self.register_buffer("freqs", freqs, persistent=False)

    def _build_freqs(self) -> Tensor:
        # Always computed on the CPU (also inside a `torch.device("meta")` context), then moved.
        with torch.device("cpu"):
            freqs = rope_frequencies(
                self.cfg, head_dim=self.head_dim, num_kv_heads=self.num_kv_heads
            )
        return freqs.float()

    @property
    def rotated_dim(self) -> int:
        """Number of leading head dims that are rotated."""
        return self.cfg.rotated_dim(self.head_dim)

    def forward(self, positions: Float[Tensor, "n 3"] | Float[Tensor, "b n 3"]) -> RopeTables:
        """Tables for `[n, 3]` (shared by the batch) or `[b, n, 3]` positions.

        Args:
            positions: per-token (frame, height, width) coordinates, e.g. from `token_positions`.

        Returns:
            `RopeTables` of shape `[b or 1, heads or 1, n, rotated_dim // 2]`, float32.
        """
        if positions.ndim == 2:
            positions = positions[None]
        dtype = torch.promote_types(positions.dtype, torch.float32)
        pos = positions.to(dtype)[:, None, :, None, :]
        freqs = self.freqs.to(dtype)[None, :, None]
        # Written out rather than as a matmul: matmuls may run in TF32 on GPUs, which would cost
        # ~3 digits of every angle.
        angles = (
            pos[..., 0] * freqs[..., 0] + pos[..., 1] * freqs[..., 1] + pos[..., 2] * freqs[..., 2]
        )
        return RopeTables(cos=angles.cos().float(), sin=angles.sin().float())

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Rope:
        super()._apply(fn, recurse=recurse)
        self.freqs = self._build_freqs().to(self.freqs.device)
        return self

    def extra_repr(self) -> str:
        return (
            f"kind={self.cfg.kind!r}, head_dim={self.head_dim}, rotated_dim={self.rotated_dim}, "
            f"table_heads={self.freqs.shape[0]}"
        )
