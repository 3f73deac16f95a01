"""One entry point that picks a preference loss by name, for config-driven trainers."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

from jaxtyping import Float
from torch import Tensor

from k2_rl.preference._beta import BetaSchedule
from k2_rl.preference._dpo import dpop_loss, flow_dpo_loss, rpo_loss
from k2_rl.preference._output import PreferenceOutput
from k2_rl.preference._sdpo import sdpo_loss
from k2_rl.preference._stpo import stpo_a_loss, stpo_c_loss

LossType = Literal["stpo_a", "stpo_c", "dpo", "dpop", "rpo", "sdpo"]

LOSSES: dict[str, Callable[..., PreferenceOutput]] = {
    "stpo_a": stpo_a_loss,
    "stpo_c": stpo_c_loss,
    "dpo": flow_dpo_loss,
    "dpop": dpop_loss,
    "rpo": rpo_loss,
    "sdpo": sdpo_loss,
}
_SHARED = ("beta", "t", "beta_schedule")


def _options(fn: Callable[..., PreferenceOutput]) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _SHARED]


def preference_loss(
    policy_w: Float[Tensor, " b"],
    policy_l: Float[Tensor, " b"],
    ref_w: Float[Tensor, " b"],
    ref_l: Float[Tensor, " b"],
    *,
    loss_type: LossType = "stpo_a",
    beta: float,
    t: Float[Tensor, " b"] | None = None,
    beta_schedule: BetaSchedule = "constant",
    **options: Any,
) -> PreferenceOutput:
    """Per-sample preference loss of the named type, from the four per-sample errors.

    Args:
        policy_w: ℓ_θ(x^w), the policy's mean squared velocity error on the winner
            (see `flow_matching_errors`).
        policy_l: ℓ_θ(x^l), on the loser, at the same t and noise as the winner.
        ref_w: ℓ_ref(x^w), the frozen reference's error on the winner.
        ref_l: ℓ_ref(x^l).
        loss_type: "stpo_a" (default), "stpo_c", "dpo" (Flow-DPO), "dpop", "rpo"
            (DPO + SFT on the winner) or "sdpo" (needs loser_scale=).
        beta: β > 0 (scale of the DPO logit; depends on the MSE convention).
        t: the pair's timestep [b]; needed only by a timestep-dependent schedule.
        beta_schedule: "constant", "flow_elbo" or a callable t -> w(t); β_t = β·w(t).
        **options: the chosen loss's own keywords (tau, dpop_lambda, alpha, anchor,
            loser_scale, sft_alpha, cal_beta); others raise a ValueError.

    Returns:
        PreferenceOutput: loss [b] plus detached Δ_w, Δ_l, implicit rewards, margin and
        accuracy. Reduce with out.loss.mean().

    References:
        rl.md §1 and §6 (the loss family k2-rl exposes); see each loss for its paper.
    """
    fn = LOSSES.get(loss_type)
    if fn is None:
        raise ValueError(f"loss_type={loss_type!r} is unknown; use one of {sorted(LOSSES)}")
    allowed = _options(fn)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"loss_type={loss_type!r} does not take {unknown}; its options are {allowed} "
            f"(plus {list(_SHARED)})"
        )
    if loss_type == "sdpo" and "loser_scale" not in options:
        raise ValueError(
            "loss_type='sdpo' needs loser_scale=: compute it with "
            "sdpo_loser_scale(pred_w, target_w, pred_l, target_l, mu=...)"
        )
    return fn(
        policy_w, policy_l, ref_w, ref_l, beta=beta, t=t, beta_schedule=beta_schedule, **options
    )
