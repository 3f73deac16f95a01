"""Zero-centred RMSNorm (the report's default) and the LayerNorm baseline."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from k2_dit.config import NormKind


class RMSNorm(nn.Module):
    """RMSNorm with a zero-centred gain: y = x / sqrt(mean(x²) + eps) · (1 + w).

    The gain is stored as w (initialised to 0) so weight decay pulls the effective gain
    (1 + w) toward 1 instead of 0, which is why the report can decay norm parameters.
    The statistics are computed in at least float32 and the result is cast back.

    Args:
        dim: size of the normalised (last) axis.
        eps: added to the mean square before the square root.
        zero_centered: store the gain as 1 + w (True) or as a plain w initialised to 1.
        affine: learn a gain; False gives a parameter-free norm (for AdaLN pre-norms).

    References:
        Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", Eq. 4;
        Qwen3-Next `Qwen3NextRMSNorm` (gain 1 + w, w = 0 at init); Krea 2 report,
        Normalization.
    """

    def __init__(
        self, dim: int, *, eps: float, zero_centered: bool = True, affine: bool = True
    ) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.zero_centered = zero_centered
        if affine:
            init = torch.zeros(dim) if zero_centered else torch.ones(dim)
            self.weight: nn.Parameter | None = nn.Parameter(init)
        else:
            self.register_parameter("weight", None)

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        # float64 stays float64 (gradchecks); bf16/fp16 are upcast for the statistics.
        compute = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(compute)
        y = xf * torch.rsqrt(xf.square().mean(dim=-1, keepdim=True) + self.eps)
        if self.weight is not None:
            w = self.weight.to(compute)
            y = y * (1 + w) if self.zero_centered else y * w
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, zero_centered={self.zero_centered}, affine={self.weight is not None}"


def make_norm(kind: NormKind, dim: int, *, eps: float, affine: bool = True) -> nn.Module:
    """Build the block's normalisation layer.

    Args:
        kind: `rmsnorm` (zero-centred `RMSNorm`) or `layernorm` (`nn.LayerNorm`, the baseline).
        dim: normalised width.
        eps: numerical floor.
        affine: learnable gain (and bias for LayerNorm); AdaLN pre-norms use False because
            the timestep modulation supplies scale and shift.

    Returns:
        The norm module.

    References:
        Krea 2 report, Normalization ("we replaced all normalization layers with RMSNorm").
    """
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, affine=affine)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
    raise ValueError(f"unknown norm kind {kind!r}: use 'rmsnorm' or 'layernorm'")
