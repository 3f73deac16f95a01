"""Per-step PPO-clipped GRPO objective and the velocity-space KL to the reference model."""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from k2_rl.grpo._sde import SdeKind, Time, _check_kind, _check_times, _column, sde_coefficients

KlForm = Literal["flow_grpo", "gaussian", "velocity"]
_KL_FORMS = ("flow_grpo", "gaussian", "velocity")


class GrpoLossOutput(NamedTuple):
    loss: Tensor
    """Per sample (and step): policy_loss + kl_coef·kl; the caller reduces."""
    policy_loss: Tensor
    """-min(r·A, clip(r, 1 - ε, 1 + ε_high)·A)."""
    kl: Tensor
    """The KL term as given (zeros when none was)."""
    ratio: Tensor
    """r = exp(logp_new - logp_old)."""
    clip_fraction: Tensor
    """0-d: share of ratios with |r - 1| > ε (Flow-GRPO's `clipfrac`)."""
    approx_kl: Tensor
    """0-d: ½·mean((logp_new - logp_old)²), Schulman's low-variance k2 estimator of KL."""
    ratio_mean: Tensor
    """0-d: mean ratio (drifts below 1 at low-noise steps: GRPO-Guard)."""


def grpo_loss(
    log_prob: Float[Tensor, " b *steps"],
    old_log_prob: Float[Tensor, " b *steps"],
    advantages: Float[Tensor, " b"],
    *,
    clip_range: float,
    clip_range_high: float | None = None,
    kl: Float[Tensor, " b *steps"] | None = None,
    kl_coef: float = 0.0,
) -> GrpoLossOutput:
    """Clipped-ratio policy loss per transition, plus an optional KL penalty.

    L = -min(r·A, clip(r, 1 - ε, 1 + ε_high)·A) + β·KL, r = exp(logp_θ - logp_old),
    i.e. the negated per-step summand of Flow-GRPO's objective. Computed in float32 or wider.

    Args:
        log_prob: logp_θ of the stored transitions (with gradient), [b] or [b, steps].
        old_log_prob: logp_old recorded at rollout time, same shape (treated as constant).
        advantages: one per sample (`group_advantages`), broadcast over the step dims.
        clip_range: ε > 0 (Flow-GRPO: 1e-4; 1e-5 without CFG).
        clip_range_high: upper ε ("clip-higher", DAPO); defaults to `clip_range`.
        kl: per-sample KL term to the reference (`velocity_kl`), same shape as `log_prob`.
        kl_coef: β >= 0 (Flow-GRPO: 0.04 GenEval/OCR, 0.01 PickScore; 0 without CFG).

    Returns:
        `GrpoLossOutput` with per-sample tensors and 0-d diagnostics (no host syncs).

    References:
        Liu et al. 2025, Flow-GRPO (arXiv 2505.05470), Eq. 8; Schulman et al. 2017 (PPO),
        Eq. 7; Yu et al. 2025, DAPO (arXiv 2503.14476), Eq. 10 (clip-higher).
    """
    high = clip_range if clip_range_high is None else clip_range_high
    if not (clip_range > 0 and high > 0):
        raise ValueError(
            f"clip_range={clip_range!r} and clip_range_high={clip_range_high!r} must be > 0"
        )
    if kl_coef < 0:
        raise ValueError(f"kl_coef={kl_coef!r} must be >= 0")
    if kl_coef > 0 and kl is None:
        raise ValueError(f"kl_coef={kl_coef} needs kl=velocity_kl(v, v_ref, ...) per sample")
    if log_prob.shape != old_log_prob.shape or (kl is not None and kl.shape != log_prob.shape):
        raise ValueError(
            f"log_prob {tuple(log_prob.shape)}, old_log_prob {tuple(old_log_prob.shape)} and kl "
            f"{None if kl is None else tuple(kl.shape)} must have one shape"
        )
    dtype = torch.promote_types(log_prob.dtype, torch.float32)
    delta = log_prob.to(dtype) - old_log_prob.detach().to(dtype)
    ratio = torch.exp(delta)
    adv = advantages.detach().to(dtype).reshape(-1, *([1] * (log_prob.ndim - 1)))
    # max of the negated terms = -min(r·A, clip(r)·A): the pessimistic bound of PPO.
    policy = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_range, 1 + high))
    kl_term = torch.zeros_like(policy) if kl is None else kl.to(dtype)
    d = delta.detach()
    return GrpoLossOutput(
        loss=policy + kl_coef * kl_term,
        policy_loss=policy,
        kl=kl_term,
        ratio=ratio,
        clip_fraction=((ratio.detach() - 1).abs() > clip_range).to(dtype).mean(),
        approx_kl=0.5 * d.square().mean(),
        ratio_mean=ratio.detach().mean(),
    )


def velocity_kl(
    v: Float[Tensor, " b *rest"],
    v_ref: Float[Tensor, " b *rest"],
    t: Time,
    t_next: Time,
    *,
    noise_level: float,
    kind: SdeKind = "flow_sde",
    form: KlForm = "flow_grpo",
) -> Float[Tensor, " b"]:
    """KL between the policy's and the reference's transition Gaussians, written in velocity space.

    Both transitions share x_t and the std, and the mean is c_x·x + c_v·v, so
    μ_θ - μ_ref = c_v·(v_θ - v_ref). With D the latent size and ‖·‖² averaged over it:
    "gaussian": c_v²‖Δv‖²/(2·std²), the exact KL / D (for flow_sde
    = (|dt|/2)·(σ_t(1 - t)/(2t) + 1/σ_t)²‖Δv‖²); "flow_grpo": c_v²‖Δv‖²/(2σ_t²), the
    reference code's form without |dt| in the denominator (the same as "gaussian" for cps,
    where std = σ_t); "velocity": ‖Δv‖² (plain velocity MSE, as in Flow-Factory/DiffusionNFT).

    Args:
        v: policy velocity at (x_t, t) (with gradient).
        v_ref: reference velocity at the same input (treated as constant).
        t: current time.
        t_next: next time.
        noise_level: a (flow_sde) or η (cps) of the rollout.
        kind: "flow_sde" or "cps".
        form: "flow_grpo" (default; its β values assume it), "gaussian" or "velocity".

    Returns:
        One KL value per sample, float32 or wider.

    References:
        Flow-GRPO (arXiv 2505.05470), Eq. 12-13 and `train_sd3.py` (`kl_loss`).
    """
    if form not in _KL_FORMS:
        raise ValueError(f"form={form!r} must be one of {_KL_FORMS}")
    if v.shape != v_ref.shape:
        raise ValueError(f"v {tuple(v.shape)} and v_ref {tuple(v_ref.shape)} must have one shape")
    dtype = torch.promote_types(v.dtype, torch.float32)
    dv2 = (v.to(dtype) - v_ref.detach().to(dtype)).square()
    dv2 = dv2.reshape(dv2.shape[0], -1).mean(dim=1)
    if form == "velocity":
        return dv2
    _check_kind(kind, noise_level, allow_zero=False)
    _check_times(t, t_next)
    tc = _column(t, v, dtype).reshape(-1)
    tn = _column(t_next, v, dtype).reshape(-1)
    _, c_v, std, sigma = sde_coefficients(tc, tn, noise_level=noise_level, kind=kind)
    scale = std if form == "gaussian" else sigma
    return c_v.square() * dv2 / (2 * scale.square())
