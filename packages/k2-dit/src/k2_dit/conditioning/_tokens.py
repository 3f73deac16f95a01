"""In-context timestep tokens (no AdaLN)."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

from k2_dit.conditioning._timestep import timestep_embedding


class TimestepTokens(nn.Module):
    """t → sinusoid(1000·t) → Linear → SiLU → Linear(dim, T·dim): T tokens in the sequence.

    The tokens join the text + image sequence (at RoPE position 0, like text) and replace
    AdaLN entirely. Weights ~ N(0, 0.02²) like the DiT timestep embedder: unlike AdaLN there
    is no gate to zero, and zero tokens would carry no timestep information at init.

    Args:
        dim: model width.
        num_tokens: T, the number of timestep tokens (the report found 4-16 enough at 256px).
        freq_dim: sinusoidal feature width.

    References:
        Peebles & Xie 2023, §3.2 "in-context conditioning"; Krea 2 report, Timestep
        conditioning ("in-context conditioning via timestep tokens").
    """

    def __init__(self, dim: int, *, num_tokens: int, freq_dim: int = 256) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens={num_tokens}: in-context conditioning needs >= 1 token")
        self.dim, self.num_tokens, self.freq_dim = dim, num_tokens, freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, num_tokens * dim)
        )
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, t: Float[Tensor, " b"]) -> Float[Tensor, "b tokens d"]:
        feats = timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(feats).view(t.shape[0], self.num_tokens, self.dim)
