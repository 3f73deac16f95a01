"""STPO, k2's reading of the Krea 2 report's DPO variant (rl.md §1.5).

The report says only that STPO "adds an auxiliary loss and a modification to the
original DPO formulation" so that the policy stops winning the DPO margin by lowering
the likelihood of winner and loser at once (Δ_w > 0 and Δ_l > 0), a drift that shows
up as high-frequency artifacts. The two formulations here are k2's proposals, not the
report's equations: STPO-A (default) modifies the logit and anchors the winner; STPO-C
ports Cal-DPO's calibration. Defaults are k2's and untuned.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from k2_rl.preference._beta import BetaSchedule
from k2_rl.preference._output import PreferenceOutput, make_output, prepare
from k2_rl.preference._sdpo import scale_gradient

# With tau=None the loser cap is τ = _LOSER_REWARD_FLOOR / s: the loser stops being
# pushed once its implicit reward -s·Δ_l falls below -2 (σ(2) ≈ 0.88 of the margin).
_LOSER_REWARD_FLOOR = 2.0


def _check(name: str, value: float, *, positive: bool, hint: str) -> None:
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(
            f"{name}={value!r} must be a finite number {'>' if positive else '>='} 0 ({hint})"
        )


def stpo_a_loss(
    policy_w: Float[Tensor, " b"],
    policy_l: Float[Tensor, " b"],
    ref_w: Float[Tensor, " b"],
    ref_l: Float[Tensor, " b"],
    *,
    beta: float,
    tau: float | None = None,
    dpop_lambda: float = 50.0,
    alpha: float = 1.0,
    anchor: Literal["hinge", "sft"] = "hinge",
    loser_scale: Float[Tensor, " b"] | None = None,
    t: Float[Tensor, " b"] | None = None,
    beta_schedule: BetaSchedule = "constant",
) -> PreferenceOutput:
    """STPO-A: L = -log σ(-s·(Δ_w - min(Δ_l, τ)) - λ·s·max(0, Δ_w)) + α·max(0, Δ_w).

    The min(Δ_l, τ) removes the unbounded "destroy the loser" direction: once the
    loser's error is τ above the reference, the loss has no gradient on the loser. The
    λ term (DPOP's penalty) and the hinge anchor act only when the policy fits the
    winner worse than the reference. Raising both errors by the same amount never
    lowers this loss (in Flow-DPO it is neutral).

    Args:
        policy_w, policy_l, ref_w, ref_l: per-sample errors, as in `flow_dpo_loss`.
        beta: β > 0; s = β_t/2.
        tau: cap on Δ_l in the errors' units, > 0. None: τ = 2/s per sample, i.e. the
            cap binds once the loser's implicit reward -s·Δ_l is below -2.
        dpop_lambda: λ >= 0 for the in-logit penalty (DPOP's ≈ 50).
        alpha: weight >= 0 of the auxiliary anchor.
        anchor: "hinge" (α·max(0, Δ_w), the default) or "sft" (α·ℓ_θ(x^w), as RPO and
            Reg-DPO).
        loser_scale: optional SDPO λ [b] from `sdpo_loser_scale`, applied to the loser
            error's gradient.
        t, beta_schedule: as in `flow_dpo_loss`.

    Returns:
        PreferenceOutput with the per-sample STPO-A loss; at policy == reference it is
        log 2 (hinge anchor).

    References:
        rl.md §1.5 (STPO-A); Krea 2 report, "Preference optimization" (STPO); Pal et al.
        2024, DPOP (arXiv 2402.13228); Fu et al. 2025, Diffusion-SDPO (arXiv 2511.03317).
    """
    if tau is not None:
        _check("tau", tau, positive=True, hint="a cap on Δ_l in the errors' units; None picks 2/s")
    _check("dpop_lambda", dpop_lambda, positive=False, hint="DPOP uses about 50")
    _check("alpha", alpha, positive=False, hint="the anchor weight; 0 disables it")
    if anchor not in ("hinge", "sft"):
        raise ValueError(f"anchor={anchor!r} is unknown; use 'hinge' or 'sft'")
    pw, pl, rw, rl, beta_t = prepare(
        policy_w, policy_l, ref_w, ref_l, beta=beta, t=t, beta_schedule=beta_schedule
    )
    if loser_scale is not None:
        pl = scale_gradient(pl, loser_scale)
    dw, dl = pw - rw, pl - rl
    s = beta_t / 2
    cap = _LOSER_REWARD_FLOOR / s if tau is None else torch.full_like(dl, tau)
    logit = -s * (dw - torch.minimum(dl, cap)) - dpop_lambda * s * F.relu(dw)
    aux = F.relu(dw) if anchor == "hinge" else pw
    return make_output(-F.logsigmoid(logit) + alpha * aux, dw, dl, beta_t)


def stpo_c_loss(
    policy_w: Float[Tensor, " b"],
    policy_l: Float[Tensor, " b"],
    ref_w: Float[Tensor, " b"],
    ref_l: Float[Tensor, " b"],
    *,
    beta: float,
    alpha: float = 1.0,
    cal_beta: float = 0.5,
    t: Float[Tensor, " b"] | None = None,
    beta_schedule: BetaSchedule = "constant",
) -> PreferenceOutput:
    """STPO-C: L = -log σ(ĥ_w - ĥ_l) + α·[(ĥ_w - m)² + (ĥ_l + m)²], ĥ = -κ·Δ, m = 1/(2β_cal).

    κ = β_t/2 (the role βT/2 plays in Diffusion-DPO), so ĥ is the implicit reward and
    the first term is Flow-DPO. The squared terms pin the winner's reward near +m (its
    likelihood must rise relative to the reference) and the loser's near -m, so the
    loser stops being pushed once ĥ_l ≈ -m. Raising both errors by the same amount
    is penalised whenever Δ_w + Δ_l > 0.

    Args:
        policy_w, policy_l, ref_w, ref_l: per-sample errors, as in `flow_dpo_loss`.
        beta: β > 0; κ = β_t/2.
        alpha: weight >= 0 of the calibration terms.
        cal_beta: β_cal > 0; the reward targets are ±m = ±1/(2β_cal) (0.5 gives ±1).
        t, beta_schedule: as in `flow_dpo_loss`.

    Returns:
        PreferenceOutput with the per-sample STPO-C loss; at policy == reference it is
        log 2 + 2α·m².

    References:
        rl.md §1.5 (STPO-C); Xiao et al. 2024, Cal-DPO (arXiv 2412.14516), the
        calibrated objective; Krea 2 report, "Preference optimization" (STPO).
    """
    _check("alpha", alpha, positive=False, hint="the calibration weight; 0 gives Flow-DPO")
    _check("cal_beta", cal_beta, positive=True, hint="the reward targets are ±1/(2·cal_beta)")
    pw, pl, rw, rl, beta_t = prepare(
        policy_w, policy_l, ref_w, ref_l, beta=beta, t=t, beta_schedule=beta_schedule
    )
    dw, dl = pw - rw, pl - rl
    kappa = beta_t / 2
    h_w, h_l = -kappa * dw, -kappa * dl
    m = 1.0 / (2.0 * cal_beta)
    calibration = (h_w - m).square() + (h_l + m).square()
    return make_output(-F.logsigmoid(h_w - h_l) + alpha * calibration, dw, dl, beta_t)
