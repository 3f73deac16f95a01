"""TopK sparse autoencoder (Gao et al. 2024): pre-bias, TopK codes, unit-norm decoder columns."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor, nn


@dataclass(frozen=True, kw_only=True)
class SAEConfig:
    """Shape and sparsity of a TopK SAE, and its dead-latent rule.

    Attributes:
        d_in: embedding width (e.g. 1152 for SigLIP-2 So400m).
        n_latents: dictionary size (a multiple of d_in, e.g. 16x).
        k: active latents per sample.
        k_aux: latents used by the AuxK loss (the paper: 512, or d_in / 2).
        aux_coef: AuxK weight alpha (the paper: 1/32).
        dead_after_steps: a latent that has not fired for this many training steps is dead.
    """

    d_in: int
    n_latents: int
    k: int
    k_aux: int = 256
    aux_coef: float = 1.0 / 32.0
    dead_after_steps: int = 1000

    def __post_init__(self) -> None:
        if self.d_in < 1 or self.n_latents < 1:
            raise ValueError(f"d_in and n_latents must be >= 1: {self}")
        if not 1 <= self.k <= self.n_latents:
            raise ValueError(f"k must be in [1, n_latents={self.n_latents}], got {self.k}")
        if self.k_aux < 0 or self.aux_coef < 0 or self.dead_after_steps < 1:
            raise ValueError(f"need k_aux >= 0, aux_coef >= 0, dead_after_steps >= 1: {self}")


def topk_codes(
    pre: Float[Tensor, "b f"], k: int
) -> tuple[Float[Tensor, "b f"], Float[Tensor, "b k"], Int64[Tensor, "b k"]]:
    """TopK activation: keep the k largest pre-activations per row (then ReLU), zero the rest.

    Args:
        pre: encoder pre-activations.
        k: kept latents per row.

    Returns:
        (z, values, indices): the dense codes, and the k selected values (after ReLU, in
        decreasing order) with their latent ids. Exactly k latents are selected; a selected
        one with a non-positive pre-activation outputs 0 (the ReLU of the authors' code).

    References:
        Gao et al. 2024, "Scaling and evaluating sparse autoencoders", Sec. 2.3 (TopK).
    """
    values, indices = pre.topk(k, dim=-1)
    values = torch.relu(values)
    return torch.zeros_like(pre).scatter(-1, indices, values), values, indices


def topk_sae_loss(
    x: Float[Tensor, "b d"],
    w_enc: Float[Tensor, "f d"],
    b_enc: Float[Tensor, " f"],
    b_pre: Float[Tensor, " d"],
    w_dec: Float[Tensor, "d f"],
    *,
    k: int,
    dead: Bool[Tensor, " f"] | None = None,
    k_aux: int = 0,
    aux_coef: float = 1.0 / 32.0,
) -> tuple[Float[Tensor, " b"], Float[Tensor, " b"], Float[Tensor, " b"], Float[Tensor, "b f"]]:
    """Per-sample TopK SAE loss: reconstruction plus alpha times the AuxK loss on dead latents.

    z = TopK(W_enc (x - b_pre) + b_enc), x_hat = W_dec z + b_pre, L = ||x - x_hat||^2.
    AuxK: e = x - x_hat (no gradient), z_aux = TopK_{k_aux} of the pre-activations of dead
    latents only, e_hat = W_dec z_aux, L_aux = ||e - e_hat||^2; it gives dead latents a
    gradient towards the residual so they can come back.

    Args:
        x: batch of embeddings.
        w_enc, b_enc: encoder weight and bias.
        b_pre: pre-bias, subtracted before encoding and added back after decoding.
        w_dec: decoder, one unit-norm column per latent.
        k: active latents.
        dead: latents counted as dead; no AuxK term if None or none are dead.
        k_aux: AuxK latents (capped at the number of dead latents).
        aux_coef: alpha.

    Returns:
        (total, mse, aux, z): per-sample losses and the dense codes.

    References:
        Gao et al. 2024, "Scaling and evaluating sparse autoencoders", Sec. 2.2-2.4 (pre-bias,
        TopK, AuxK with alpha = 1/32), Appendix A.2 (dead latents).
    """
    pre = (x - b_pre) @ w_enc.T + b_enc
    z, _, _ = topk_codes(pre, k)
    recon = z @ w_dec.T + b_pre
    mse = (x - recon).pow(2).sum(-1)
    aux = torch.zeros_like(mse)
    if dead is not None and k_aux > 0:
        # static size (no host sync): masked latents get -inf, so TopK picks dead ones first
        n_aux = min(k_aux, pre.shape[-1])
        masked = pre.masked_fill(~dead, float("-inf"))
        values, indices = masked.topk(n_aux, dim=-1)
        values = torch.relu(torch.nan_to_num(values, neginf=0.0))
        z_aux = torch.zeros_like(pre).scatter(-1, indices, values)
        residual = (x - recon).detach()
        # no dead latent: nothing to learn, report 0 rather than ||e||^2 (no host sync)
        aux = (residual - z_aux @ w_dec.T).pow(2).sum(-1) * dead.any().to(mse.dtype)
    return mse + aux_coef * aux, mse, aux, z


class TopKSAE(nn.Module):
    """TopK sparse autoencoder with a tied initialisation and unit-norm decoder columns.

    Buffers ``steps_since_active`` (per latent) feed the dead-latent mask of the AuxK loss.
    """

    def __init__(self, config: SAEConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        w_dec = torch.randn(config.d_in, config.n_latents, generator=generator)
        w_dec /= w_dec.norm(dim=0, keepdim=True)
        self.w_dec = nn.Parameter(w_dec)
        self.w_enc = nn.Parameter(w_dec.T.clone())  # tied init (Gao et al. Sec. 2.4)
        self.b_enc = nn.Parameter(torch.zeros(config.n_latents))
        self.b_pre = nn.Parameter(torch.zeros(config.d_in))
        self.register_buffer("steps_since_active", torch.zeros(config.n_latents, dtype=torch.long))

    @property
    def dead(self) -> Bool[Tensor, " f"]:
        return self.steps_since_active >= self.config.dead_after_steps

    def encode(self, x: Float[Tensor, "b d"]) -> tuple[Float[Tensor, "b k"], Int64[Tensor, "b k"]]:
        """The k selected activations (decreasing) and their latent ids."""
        _, values, indices = topk_codes((x - self.b_pre) @ self.w_enc.T + self.b_enc, self.config.k)
        return values, indices

    def decode(self, z: Float[Tensor, "b f"]) -> Float[Tensor, "b d"]:
        return z @ self.w_dec.T + self.b_pre

    def forward(
        self, x: Float[Tensor, "b d"]
    ) -> tuple[Float[Tensor, " b"], Float[Tensor, " b"], Float[Tensor, " b"], Float[Tensor, "b f"]]:
        """(total, mse, aux, z) per sample with the current dead mask (see `topk_sae_loss`)."""
        return topk_sae_loss(
            x,
            self.w_enc,
            self.b_enc,
            self.b_pre,
            self.w_dec,
            k=self.config.k,
            dead=self.dead,
            k_aux=self.config.k_aux,
            aux_coef=self.config.aux_coef,
        )

    @torch.no_grad()
    def record_activity(self, z: Float[Tensor, "b f"]) -> None:
        """Reset the counter of latents that fired in this batch, advance the others."""
        fired = (z > 0).any(dim=0)
        self.steps_since_active.add_(1).masked_fill_(fired, 0)

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Drop the decoder-gradient component along each column, which renormalising would undo."""
        if self.w_dec.grad is not None:
            g, w = self.w_dec.grad, self.w_dec
            g.sub_(w * (g * w).sum(dim=0, keepdim=True))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder column to unit norm."""
        self.w_dec.div_(self.w_dec.norm(dim=0, keepdim=True).clamp_min(1e-12))


@torch.no_grad()
def geometric_median(
    x: Float[Tensor, "n d"], *, n_iter: int = 50, tol: float = 1e-6
) -> Float[Tensor, " d"]:
    """Weiszfeld iterations for the point minimising the sum of distances; initialises b_pre.

    References:
        Gao et al. 2024, Sec. 2.4 (b_pre at the geometric median); Weiszfeld 1937.
    """
    point = x.mean(0)
    for _ in range(n_iter):
        weights = 1.0 / (x - point).norm(dim=1).clamp_min(1e-12)
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - point).norm() <= tol * new.norm().clamp_min(1.0):
            return new
        point = new
    return point
