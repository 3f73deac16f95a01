"""The DPO temperature β, constant or timestep-dependent β(t) = β·w(t).

Convention (as in `k2_dit.flow`): t = 1 is noise, t = 0 is data, x_t = (1 - t)·x0 + t·ε,
and the model predicts v = ε - x0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

BetaSchedule = Literal["constant", "flow_elbo"] | Callable[[Tensor], Tensor]
"""How β varies with t: "constant", "flow_elbo", or a callable t [b] -> weight w(t) [b]."""

# (1 - t)/t blows up at t -> 0; below this the weight is held at its t = 1e-3 value (999).
_MIN_T = 1e-3


def flow_elbo_weight(t: Float[Tensor, " b"]) -> Float[Tensor, " b"]:
    """ELBO weight of the velocity MSE, normalised to 1 at t = 1/2: w(t) = (1 - t) / t.

    Diffusion-DPO's bound weights the ε-MSE at time t by ω(λ_t) ∝ -dλ/dt, with
    λ = log SNR. On the rectified-flow path α_t = 1 - t and σ_t = t, so
    λ = 2·log((1 - t)/t) and -½·dλ/dt = 1/(t(1 - t)). The ε error is (1 - t) times the
    velocity error (ε̂ = x_t + (1 - t)·v̂), so the weight on the velocity MSE is
    (1 - t)²/(t(1 - t)) = (1 - t)/t. This is k2's derivation; it is the kind of
    timestep-dependent β_t that VideoAlign derives for Flow-DPO (which then reports a
    constant β working better). t is clamped below at 1e-3.

    Args:
        t: one time per sample in [0, 1] (1 is noise), not diffusers' 0-1000 timestep
            (divide those by 1000); not range-checked, which would cost a host sync.

    Returns:
        w(t) = (1 - t)/t, so β(t) = β·w(t) is large near the data and 0 at pure noise.

    References:
        Wallace et al. 2023, Diffusion-DPO (arXiv 2311.12908), final objective: the
        T·ω(λ_t) factor; Kingma et al. 2021, Variational Diffusion Models, continuous-time
        loss -½·SNR'(t)·‖x - x̂‖² = -½·λ'(t)·‖ε - ε̂‖²; Liu et al. 2025, VideoAlign
        (arXiv 2501.13918), Flow-DPO with a timestep-dependent β_t.
    """
    tt = t.clamp(min=_MIN_T, max=1.0)
    return (1 - tt) / tt


def check_beta(beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(
            f"beta={beta!r} must be a finite number > 0. It scales mean squared velocity "
            "errors, so useful values are large (flow_grpo 100, Flow-Factory 2000, "
            "Diffusion-DPO 5000) and not comparable across MSE conventions"
        )


def timestep_beta(
    t: Float[Tensor, " b"] | None,
    *,
    beta: float,
    schedule: BetaSchedule = "constant",
    like: Float[Tensor, " b"] | None = None,
) -> Float[Tensor, " b"]:
    """Per-sample β_t = β·w(t) for a named schedule or a user callable.

    Args:
        t: one time per pair (the same t for winner and loser); may be None only for
            the "constant" schedule, in which case `like` gives the batch size.
        beta: β > 0, the value at w = 1 (for "flow_elbo", the value at t = 1/2).
        schedule: "constant" (w = 1, the Diffusion-DPO code and flow_grpo), "flow_elbo"
            (w = (1 - t)/t, see `flow_elbo_weight`), or a callable mapping t [b] to
            non-negative weights [b] (not sign-checked, to avoid a host sync).
        like: a [b] tensor whose shape, dtype and device β_t takes when t is None.

    Returns:
        β_t, shape [b].

    References:
        Wallace et al. 2023, Diffusion-DPO, final objective (T·ω(λ_t) folded into β with
        ω constant in the released code); rl.md §1.2 (beta_schedule for Flow-DPO).
    """
    check_beta(beta)
    if isinstance(schedule, str) and schedule not in ("constant", "flow_elbo"):
        raise ValueError(
            f"beta_schedule={schedule!r} is unknown; use 'constant', 'flow_elbo', or a "
            "callable mapping t [b] to weights [b]"
        )
    if schedule == "constant":
        base = t if t is not None else like
        if base is None:
            raise ValueError("timestep_beta needs t or like= to know the batch shape")
        return torch.full_like(base, beta, dtype=torch.promote_types(base.dtype, torch.float32))
    if t is None:
        name = schedule if isinstance(schedule, str) else "a callable"
        raise ValueError(
            f"beta_schedule={name} depends on the timestep: pass t=<the [b] times used for "
            "both winner and loser>, or use beta_schedule='constant'"
        )
    weight = flow_elbo_weight(t) if schedule == "flow_elbo" else schedule(t)
    if not isinstance(weight, Tensor) or tuple(weight.shape) != tuple(t.shape):
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(
            f"the beta_schedule callable returned {got}; it must return one weight per "
            f"sample, a tensor of shape {tuple(t.shape)}"
        )
    return beta * weight.to(torch.promote_types(weight.dtype, torch.float32))
