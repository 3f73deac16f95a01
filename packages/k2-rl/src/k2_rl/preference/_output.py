"""What every preference loss returns, plus the input checks they share.

Notation (rl.md §1.2): ℓ is a per-sample mean squared velocity error, Δ = ℓ_θ - ℓ_ref is
how much worse the policy fits a sample than the reference does, and s = β_t / 2.
The implicit reward of a sample is r = -s·Δ (Diffusion-DPO's log-ratio proxy), so the
DPO logit is the reward margin r_w - r_l = -s·(Δ_w - Δ_l).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from k2_rl.preference._beta import BetaSchedule, timestep_beta


@dataclass(frozen=True, kw_only=True)
class PreferenceOutput:
    """Per-sample loss plus detached diagnostics; the caller reduces and logs.

    Attributes:
        loss: [b] per-sample loss (differentiable).
        delta_w: [b] Δ_w = ℓ_θ(x^w) - ℓ_ref(x^w); > 0 means the policy fits the winner
            worse than the reference does (the winner's likelihood dropped).
        delta_l: [b] Δ_l, the same for the loser. The failure mode the Krea 2 report
            describes is delta_w > 0 and delta_l > 0 at once.
        reward_w: [b] implicit reward -s·Δ_w of the winner.
        reward_l: [b] implicit reward -s·Δ_l of the loser.
        margin: [b] reward_w - reward_l, the plain Flow-DPO logit.
        accuracy: [b] 1.0 where margin > 0 (the policy ranks the pair correctly), else 0.0.
        beta_t: [b] the β used for each sample (constant unless a β(t) schedule is on).
    """

    loss: Tensor
    delta_w: Tensor
    delta_l: Tensor
    reward_w: Tensor
    reward_l: Tensor
    margin: Tensor
    accuracy: Tensor
    beta_t: Tensor

    def metrics(self) -> dict[str, Tensor]:
        """Batch means of every field, as 0-d tensors (no host sync; call .item() when logging)."""
        names = ("loss", "delta_w", "delta_l", "reward_w", "reward_l", "margin", "accuracy")
        return {name: getattr(self, name).detach().mean() for name in names}


def check_errors(
    policy_w: Tensor, policy_l: Tensor, ref_w: Tensor, ref_l: Tensor, t: Tensor | None
) -> None:
    """Raise a ValueError naming the fix when the four error vectors (and t) do not line up."""
    named = {"policy_w": policy_w, "policy_l": policy_l, "ref_w": ref_w, "ref_l": ref_l}
    for name, x in named.items():
        if x.ndim != 1:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}; preference losses take one error per "
                "pair, shape [b]: reduce the squared velocity error over every non-batch dim "
                "with flow_matching_errors(pred, target)"
            )
        if not x.is_floating_point():
            raise ValueError(f"{name} has dtype {x.dtype}; pass floating-point errors")
    shapes = {name: tuple(x.shape) for name, x in named.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"error vectors disagree in length: {shapes}; row i of all four must be the "
            "same pair, evaluated at the same t and noise for winner and loser"
        )
    if t is not None and tuple(t.shape) != shapes["policy_w"]:
        raise ValueError(
            f"t has shape {tuple(t.shape)} but the errors have {shapes['policy_w']}; pass the "
            "one timestep per pair that both branches used"
        )


def make_output(
    loss: Float[Tensor, " b"],
    delta_w: Float[Tensor, " b"],
    delta_l: Float[Tensor, " b"],
    beta_t: Float[Tensor, " b"],
) -> PreferenceOutput:
    """Bundle a loss with the shared Flow-DPO diagnostics (all detached)."""
    s = (beta_t / 2).detach()
    dw, dl = delta_w.detach(), delta_l.detach()
    reward_w, reward_l = -s * dw, -s * dl
    margin = reward_w - reward_l
    return PreferenceOutput(
        loss=loss,
        delta_w=dw,
        delta_l=dl,
        reward_w=reward_w,
        reward_l=reward_l,
        margin=margin,
        accuracy=(margin > 0).to(margin.dtype),
        beta_t=beta_t.detach(),
    )


def prepare(
    policy_w: Tensor,
    policy_l: Tensor,
    ref_w: Tensor,
    ref_l: Tensor,
    *,
    beta: float,
    t: Tensor | None,
    beta_schedule: BetaSchedule,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Check inputs, cast to at least float32 and resolve β_t; shared by every loss."""
    check_errors(policy_w, policy_l, ref_w, ref_l, t)
    dtype = policy_w.dtype
    for x in (policy_l, ref_w, ref_l):
        dtype = torch.promote_types(dtype, x.dtype)
    # β is in the thousands and Δ in the 1e-4s: bf16/fp16 would round the logit away.
    dtype = torch.promote_types(dtype, torch.float32)
    pw, pl, rw, rl = (x.to(dtype) for x in (policy_w, policy_l, ref_w, ref_l))
    tt = None if t is None else t.to(dtype)
    beta_t = timestep_beta(tt, beta=beta, schedule=beta_schedule, like=pw).to(dtype)
    return pw, pl, rw, rl, beta_t
