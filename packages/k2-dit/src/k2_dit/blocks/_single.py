"""Single-stream transformer block: text and image tokens share every weight."""

from __future__ import annotations

from jaxtyping import Bool, Float
from torch import Tensor, nn

from k2_dit.blocks._attention import Attention
from k2_dit.blocks._mlp import make_mlp
from k2_dit.blocks._norm import make_norm
from k2_dit.conditioning import Modulation, TimestepSignal, modulate
from k2_dit.config import AttentionConfig, DiTConfig, MLPKind, NormKind, TimestepKind
from k2_dit.rope import RopeTables


def _is_adaln(timestep: TimestepKind) -> bool:
    return timestep in ("adaln_mlp", "shared_bias")


class SingleStreamBlock(nn.Module):
    """Pre-norm attention + MLP block over the joint [text, image] sequence.

    With AdaLN (`adaln_mlp`, `shared_bias`):
        x ← x + g₁ ⊙ Attn((1 + s₁) ⊙ norm(x) + b₁),  x ← x + g₂ ⊙ MLP((1 + s₂) ⊙ norm(x) + b₂)
    with (b₁, s₁, g₁, b₂, s₂, g₂) from the block's `Modulation` (pre-norms have no affine).
    Without (`in_context`, `none`): x ← x + Attn(norm(x)), x ← x + MLP(norm(x)) with affine
    norms.

    Args:
        dim: model width.
        attention: attention layout.
        mlp: `swiglu` or `gelu`.
        mlp_hidden: MLP inner width.
        norm: `rmsnorm` or `layernorm`.
        eps: norm epsilon.
        timestep: conditioning mode (decides whether the block is modulated).

    References:
        Peebles & Xie 2023 (DiT block, adaLN-Zero); Esser et al. 2024 (SD3) / FLUX single
        blocks; Krea 2 report, Transformer block ("single-stream design").
    """

    def __init__(
        self,
        dim: int,
        *,
        attention: AttentionConfig,
        mlp: MLPKind,
        mlp_hidden: int,
        norm: NormKind,
        eps: float,
        timestep: TimestepKind,
    ) -> None:
        super().__init__()
        adaln = _is_adaln(timestep)
        self.norm1 = make_norm(norm, dim, eps=eps, affine=not adaln)
        self.attn = Attention(dim, attention, norm=norm, eps=eps)
        self.norm2 = make_norm(norm, dim, eps=eps, affine=not adaln)
        self.mlp = make_mlp(mlp, dim, mlp_hidden)
        self.modulation = Modulation(dim, kind=timestep) if adaln else None

    @classmethod
    def from_config(cls, config: DiTConfig) -> SingleStreamBlock:
        """The block `DiT` builds for `config`."""
        return cls(
            config.dim,
            attention=config.attention,
            mlp=config.mlp,
            mlp_hidden=config.mlp_hidden,
            norm=config.norm,
            eps=config.norm_eps,
            timestep=config.timestep,
        )

    def forward(
        self,
        x: Float[Tensor, "b n d"],
        signal: TimestepSignal,
        *,
        rope_tables: RopeTables | None,
        mask: Bool[Tensor, "b n"] | None,
    ) -> Float[Tensor, "b n d"]:
        """Apply the block.

        Args:
            x: the joint token sequence.
            signal: timestep signal (ignored without AdaLN).
            rope_tables: RoPE tables for the n tokens.
            mask: key-padding mask (True = real token).

        Returns:
            The updated sequence.
        """
        if self.modulation is None:
            x = x + self.attn(self.norm1(x), rope_tables=rope_tables, mask=mask)
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(signal).unbind(dim=1)
        h = modulate(self.norm1(x), shift1, scale1)
        x = x + gate1[:, None] * self.attn(h, rope_tables=rope_tables, mask=mask)
        h = modulate(self.norm2(x), shift2, scale2)
        return x + gate2[:, None] * self.mlp(h)
