"""The four timestep-conditioning modes behind one module."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

from k2_dit.conditioning._modulation import SharedModulation, TimestepSignal
from k2_dit.conditioning._timestep import TimestepEmbedder
from k2_dit.conditioning._tokens import TimestepTokens
from k2_dit.config import TimestepKind


class TimestepConditioning(nn.Module):
    """Turns t into the signal the blocks read, for each `DiTConfig.timestep` mode.

    - `adaln_mlp`: c = embedder(t); every block owns SiLU→Linear(dim, 6·dim) on c (DiT
      adaLN-Zero baseline; the per-block MLPs hold most of the modulation parameters).
    - `shared_bias` (default): c = embedder(t) and one shared SiLU→Linear(dim, 6·dim); each
      block adds its own learnable (6, dim) bias (PixArt-α adaLN-single, the report's
      "per-block tunable bias").
    - `in_context`: `num_tokens` timestep tokens prepended to the sequence; no AdaLN.
    - `none`: no timestep input at all (an empty signal).

    Args:
        dim: model width.
        kind: the conditioning mode.
        freq_dim: sinusoidal feature width.
        num_tokens: `in_context` only: number of timestep tokens.

    References:
        Peebles & Xie 2023, §3.2; Chen et al. 2023 (PixArt-α), §2.3; Krea 2 report,
        Timestep conditioning.
    """

    def __init__(
        self, dim: int, *, kind: TimestepKind, freq_dim: int = 256, num_tokens: int = 8
    ) -> None:
        super().__init__()
        self.kind = kind
        self.embedder = (
            TimestepEmbedder(dim, freq_dim=freq_dim)
            if kind in ("adaln_mlp", "shared_bias")
            else None
        )
        self.shared = SharedModulation(dim) if kind == "shared_bias" else None
        self.tokens = (
            TimestepTokens(dim, num_tokens=num_tokens, freq_dim=freq_dim)
            if kind == "in_context"
            else None
        )
        if kind not in ("adaln_mlp", "shared_bias", "in_context", "none"):
            raise ValueError(
                f"unknown timestep kind {kind!r}: use shared_bias, adaln_mlp, in_context or none"
            )

    def forward(
        self, t: Float[Tensor, " b"], *, extra: Float[Tensor, "b d"] | None = None
    ) -> TimestepSignal:
        """The signal for this batch of times (t in [0, 1], 1 = noise).

        Args:
            t: time per sample.
            extra: added to the timestep embedding before the modulation (AdaLN modes only),
                e.g. pooled text.
        """
        if extra is not None and self.embedder is None:
            raise ValueError(f"timestep={self.kind!r} has no embedding to add `extra` to")
        if self.embedder is not None:
            c = self.embedder(t)
            if extra is not None:
                c = c + extra.to(c.dtype)
            shared = self.shared(c) if self.shared is not None else None
            return TimestepSignal(embedding=c, shared=shared)
        if self.tokens is not None:
            return TimestepSignal(tokens=self.tokens(t))
        return TimestepSignal()
