"""Feed-forward layers: SwiGLU (the report's choice) and the tanh-GeLU baseline."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn
from torch.nn import functional as F

from k2_dit.config import MLPKind


class SwiGLU(nn.Module):
    """Gated feed-forward W2(silu(W1 x) ⊙ W3 x), no biases.

    Args:
        dim: model width.
        hidden: inner width (`DiTConfig.mlp_hidden` is parameter-matched to a 4x GeLU MLP).

    References:
        Shazeer 2020, "GLU Variants Improve Transformer", Eq. 6 (FFN_SwiGLU);
        Krea 2 report, Transformer block.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class GeluMLP(nn.Module):
    """Two-layer MLP with tanh-approximated GeLU, fc2(gelu(fc1 x)), with biases as in DiT.

    Args:
        dim: model width.
        hidden: inner width (4·dim in DiT).

    References:
        Peebles & Xie 2023, "Scalable Diffusion Models with Transformers" (DiT block MLP,
        timm `Mlp` with `approx_gelu`); Hendrycks & Gimpel 2016, GeLU tanh approximation.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def make_mlp(kind: MLPKind, dim: int, hidden: int) -> nn.Module:
    """Build the block's MLP.

    Args:
        kind: `swiglu` or `gelu`.
        dim: model width.
        hidden: inner width.

    Returns:
        The MLP module.

    References:
        Krea 2 report, Transformer block ("replacing the GeLU MLP with SwiGLU").
    """
    if kind == "swiglu":
        return SwiGLU(dim, hidden)
    if kind == "gelu":
        return GeluMLP(dim, hidden)
    raise ValueError(f"unknown mlp kind {kind!r}: use 'swiglu' or 'gelu'")
