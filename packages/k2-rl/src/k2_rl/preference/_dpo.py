"""Flow-DPO and two published fixes that work inside it: DPOP's penalty and RPO's SFT term."""

from __future__ import annotations

import math

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from k2_rl.preference._beta import BetaSchedule
from k2_rl.preference._output import PreferenceOutput, make_output, prepare


def _check_non_negative(name: str, value: float, hint: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r} must be a finite number >= 0 ({hint})")


def flow_dpo_loss(
    policy_w: Float[Tensor, " b"],
    policy_l: Float[Tensor, " b"],
    ref_w: Float[Tensor, " b"],
    ref_l: Float[Tensor, " b"],
    *,
    beta: float,
    t: Float[Tensor, " b"] | None = None,
    beta_schedule: BetaSchedule = "constant",
) -> PreferenceOutput:
    """Diffusion-DPO in velocity space: L = -log σ(-(β_t/2)·(Δ_w - Δ_l)).

    Args:
        policy_w: ℓ_θ(x^w), the policy's mean squared velocity error on the winner.
        policy_l: ℓ_θ(x^l), the same on the loser (same t and ε as the winner).
        ref_w: ℓ_ref(x^w), the frozen reference's error on the winner.
        ref_l: ℓ_ref(x^l).
        beta: β > 0 (flow_grpo 100, Flow-Factory 2000, Diffusion-DPO 5000; these are
            not comparable across MSE conventions).
        t: the pair's time in [0, 1] (1 = noise), needed only by a timestep-dependent
            `beta_schedule`.
        beta_schedule: "constant", "flow_elbo" or a callable; see `timestep_beta`.

    Returns:
        PreferenceOutput with loss [b] = -log σ(margin). At policy == reference it is log 2.

    References:
        Wallace et al. 2023, Diffusion-DPO (arXiv 2311.12908), final objective, and the
        released train.py (inside = -½·β·(model_diff - ref_diff)); Liu et al. 2025,
        VideoAlign (arXiv 2501.13918), Flow-DPO; rl.md §1.1-1.2.
    """
    pw, pl, rw, rl, beta_t = prepare(
        policy_w, policy_l, ref_w, ref_l, beta=beta, t=t, beta_schedule=beta_schedule
    )
    dw, dl = pw - rw, pl - rl
    logit = -(beta_t / 2) * (dw - dl)
    return make_output(-F.logsigmoid(logit), dw, dl, beta_t)


def dpop_loss(
    policy_w: Float[Tensor, " b"],
    policy_l: Float[Tensor, " b"],
    ref_w: Float[Tensor, " b"],
    ref_l: Float[Tensor, " b"],
    *,
    beta: float,
    dpop_lambda: float = 50.0,
    t: Float[Tensor, " b"] | None = None,
    beta_schedule: BetaSchedule = "constant",
) -> PreferenceOutput:
    """Flow-DPO with DPOP's positive penalty: L = -log σ(-s·(Δ_w - Δ_l) - λ·s·max(0, Δ_w)).

    DPOP writes -log σ(β[h_w - h_l - λ·max(0, -h_w)]) with h the log-ratio; here the
    log-ratio proxy is h = -s·Δ with s = β_t/2, so max(0, -h_w) = s·max(0, Δ_w). The
    penalty fires only when the policy fits the winner worse than the reference.

    Args:
        policy_w, policy_l, ref_w, ref_l: per-sample errors, as in `flow_dpo_loss`.
        beta: β > 0.
        dpop_lambda: λ >= 0 (DPOP uses a large λ, about 50).
        t, beta_schedule: as in `flow_dpo_loss`.

    Returns:
        PreferenceOutput with the per-sample DPOP loss.

    References:
        Pal et al. 2024, Smaug / DPO-Positive (arXiv 2402.13228), the DPOP objective;
        rl.md §1.3.
    """
    _check_non_negative("dpop_lambda", dpop_lambda, "DPOP uses about 50; 0 gives Flow-DPO")
    pw, pl, rw, rl, beta_t = prepare(
        policy_w, policy_l, ref_w, ref_l, beta=beta, t=t, beta_schedule=beta_schedule
    )
    dw, dl = pw - rw, pl - rl
    s = beta_t / 2
    logit = -s * (dw - dl) - dpop_lambda * s * F.relu(dw)
    return make_output(-F.logsigmoid(logit), dw, dl, beta_t)


def rpo_loss(
    policy_w: Float[Tensor, " b"],
    policy_l: Float[Tensor, " b"],
    ref_w: Float[Tensor, " b"],
    ref_l: Float[Tensor, " b"],
    *,
    beta: float,
    sft_alpha: float = 1.0,
    t: Float[Tensor, " b"] | None = None,
    beta_schedule: BetaSchedule = "constant",
) -> PreferenceOutput:
    """Flow-DPO plus an SFT term on the winner: L = L_FlowDPO + α·ℓ_θ(x^w).

    The flow-matching loss on the winner is the diffusion analogue of RPO's
    length-normalised NLL of the chosen response (the per-sample error is already a
    mean over dims), as Reg-DPO uses for video DiTs.

    Args:
        policy_w, policy_l, ref_w, ref_l: per-sample errors, as in `flow_dpo_loss`.
        beta: β > 0.
        sft_alpha: α >= 0 (RPO recommends 1).
        t, beta_schedule: as in `flow_dpo_loss`.

    Returns:
        PreferenceOutput with the per-sample RPO loss.

    References:
        Pang et al. 2024, Iterative RPO (arXiv 2404.19733), L_DPO + α·NLL/|y|;
        Reg-DPO (arXiv 2511.01450); rl.md §1.3.
    """
    _check_non_negative("sft_alpha", sft_alpha, "RPO recommends 1; 0 gives Flow-DPO")
    pw, pl, rw, rl, beta_t = prepare(
        policy_w, policy_l, ref_w, ref_l, beta=beta, t=t, beta_schedule=beta_schedule
    )
    dw, dl = pw - rw, pl - rl
    logit = -(beta_t / 2) * (dw - dl)
    return make_output(-F.logsigmoid(logit) + sft_alpha * pw, dw, dl, beta_t)
