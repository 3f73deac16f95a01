"""Diffusion-SDPO: scale the loser's gradient so the winner's error does not rise (to first order)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from k2_rl.preference._beta import BetaSchedule
from k2_rl.preference._output import PreferenceOutput, make_output, prepare


def scale_gradient(x: Float[Tensor, " b"], scale: Float[Tensor, " b"]) -> Float[Tensor, " b"]:
    """Identity in value, gradient multiplied by `scale`: x.detach() + scale·(x - x.detach()).

    Args:
        x: any tensor on the autograd graph.
        scale: per-element gradient factor (treated as a constant).

    Returns:
        A tensor equal to `x` whose gradient with respect to `x` is `scale`.

    References:
        Fu et al. 2025, Diffusion-SDPO (arXiv 2511.03317), released train.py (the loser
        term becomes l.detach() + λ·(l - l.detach())).
    """
    if tuple(scale.shape) != tuple(x.shape):
        raise ValueError(
            f"loser_scale has shape {tuple(scale.shape)} but the errors have "
            f"{tuple(x.shape)}; sdpo_loser_scale returns one factor per pair"
        )
    xd = x.detach()
    return xd + scale.detach().to(x.dtype) * (x - xd)


def sdpo_loser_scale(
    pred_w: Float[Tensor, " b *rest"],
    target_w: Float[Tensor, " b *rest"],
    pred_l: Float[Tensor, " b *rest"],
    target_l: Float[Tensor, " b *rest"],
    *,
    mu: float = 0.6,
    per_sample: bool = False,
) -> Float[Tensor, " b"]:
    """Winner-preserving loser scale λ = clamp((1 - μ)·‖g_w‖² / (g_l·g_w), 0, 1), or 1 if g_l·g_w <= 0.

    g_w and g_l are the gradients of the winner and loser errors with respect to the
    policy's outputs (the output-space proxy for the parameter gradients). A DPO step
    moves the winner error along -(g_w - λ·g_l)·g_w; with this λ that is at most
    -μ·‖g_w‖², so the winner's error does not rise to first order. For the mean squared
    error g = 2(v̂ - v)/N, and the 2/N cancels in the ratio.

    Args:
        pred_w: the policy's velocity prediction on the winner (detached here).
        target_w: the winner's velocity target.
        pred_l: the policy's prediction on the loser (same shape as the winner's).
        target_l: the loser's velocity target.
        mu: μ in [0, 1], the fraction of the winner's descent to keep (the SDXL launch
            script uses 0.6, the SD1.5 one 0.9).
        per_sample: False (the released code) computes one λ from the batch-mean errors
            and repeats it; True computes one λ per pair from that pair's errors.

    Returns:
        λ, shape [b], detached, in [0, 1]. Pass it as `loser_scale` to `sdpo_loss` or
        `stpo_a_loss`.

    References:
        Fu et al. 2025, Diffusion-SDPO (arXiv 2511.03317), §4 (safety condition),
        Eq. 15-17 and Algorithm 1 (output-space proxy); released train.py
        `get_adaptive_lose_l_scale`; rl.md §1.3.
    """
    if not (math.isfinite(mu) and 0.0 <= mu <= 1.0):
        raise ValueError(f"mu={mu!r} must lie in [0, 1] (the SDPO scripts use 0.6 or 0.9)")
    shapes = [tuple(x.shape) for x in (pred_w, target_w, pred_l, target_l)]
    if len(set(shapes)) != 1 or pred_w.ndim < 2:
        raise ValueError(
            f"pred_w, target_w, pred_l, target_l have shapes {shapes}; pass four [b, ...] "
            "tensors of one shape (the winner and loser latents of each pair at the same size)"
        )
    with torch.no_grad():
        dtype = torch.promote_types(pred_w.dtype, torch.float32)
        r_w = (pred_w - target_w).to(dtype).flatten(1)
        r_l = (pred_l - target_l).to(dtype).flatten(1)
        dims = 1 if per_sample else (0, 1)
        num = r_w.square().sum(dim=dims)
        den = (r_w * r_l).sum(dim=dims)
        # Where den <= 0 the loser's gradient already lowers (or is orthogonal to) the
        # winner's error, so it is left unscaled.
        ratio = (1 - mu) * num / den.clamp_min(torch.finfo(dtype).tiny)
        lam = torch.where(den > 0, ratio, torch.ones_like(ratio)).clamp(0.0, 1.0)
        return lam.expand(pred_w.shape[0]).clone() if lam.ndim == 0 else lam


def sdpo_loss(
    policy_w: Float[Tensor, " b"],
    policy_l: Float[Tensor, " b"],
    ref_w: Float[Tensor, " b"],
    ref_l: Float[Tensor, " b"],
    *,
    beta: float,
    loser_scale: Float[Tensor, " b"],
    t: Float[Tensor, " b"] | None = None,
    beta_schedule: BetaSchedule = "constant",
) -> PreferenceOutput:
    """Flow-DPO whose loser-error gradient is multiplied by λ (Diffusion-SDPO).

    The loss value equals Flow-DPO's; only dL/dℓ_θ(x^l) is scaled by `loser_scale`.

    Args:
        policy_w, policy_l, ref_w, ref_l: per-sample errors, as in `flow_dpo_loss`.
        beta: β > 0.
        loser_scale: λ [b] from `sdpo_loser_scale` (any constant in [0, 1] works).
        t, beta_schedule: as in `flow_dpo_loss`.

    Returns:
        PreferenceOutput; loss [b] has Flow-DPO's value and the SDPO gradient.

    References:
        Fu et al. 2025, Diffusion-SDPO (arXiv 2511.03317), Algorithm 1; rl.md §1.3.
    """
    pw, pl, rw, rl, beta_t = prepare(
        policy_w, policy_l, ref_w, ref_l, beta=beta, t=t, beta_schedule=beta_schedule
    )
    pl = scale_gradient(pl, loser_scale)
    dw, dl = pw - rw, pl - rl
    logit = -(beta_t / 2) * (dw - dl)
    return make_output(-F.logsigmoid(logit), dw, dl, beta_t)
