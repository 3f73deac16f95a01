"""Rectified-flow interpolation, v-target and per-sample loss.

Convention used throughout `k2_dit.flow`: t = 1 is pure noise and t = 0 is data;
x_t = (1 - t)·x0 + t·ε, and the network predicts the velocity v = dx_t/dt = ε - x0.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    # t is one value per sample; view it so it broadcasts over every non-batch dim.
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1))).to(like.dtype)


def interpolate(
    x0: Float[Tensor, " b *rest"], noise: Float[Tensor, " b *rest"], t: Float[Tensor, " b"]
) -> Float[Tensor, " b *rest"]:
    """Point on the straight path from data (t = 0) to noise (t = 1).

    Args:
        x0: clean data (latents).
        noise: ε ~ N(0, I), same shape as `x0`.
        t: one time per sample in [0, 1]; 1 is noise, 0 is data.

    Returns:
        x_t = (1 - t)·x0 + t·ε.

    References:
        Liu et al. 2022, "Flow Straight and Fast" (rectified flow), Eq. 1;
        Esser et al. 2024, "Scaling Rectified Flow Transformers" (SD3), Eq. 3 with
        a_t = 1 - t, b_t = t.
    """
    tt = _per_sample(t, x0)
    return (1 - tt) * x0 + tt * noise


def velocity_target(
    x0: Float[Tensor, " b *rest"], noise: Float[Tensor, " b *rest"]
) -> Float[Tensor, " b *rest"]:
    """Velocity of the straight path, the v-parameterisation regression target.

    Args:
        x0: clean data.
        noise: ε, same shape as `x0`.

    Returns:
        v = dx_t/dt = ε - x0 (independent of t on a straight path).

    References:
        Esser et al. 2024 (SD3), Eq. 3-6: u_t(z | ε) for a_t = 1 - t, b_t = t.
    """
    return noise - x0


def rectified_flow_loss(
    pred_v: Float[Tensor, " b *rest"],
    x0: Float[Tensor, " b *rest"],
    noise: Float[Tensor, " b *rest"],
    *,
    weight: Float[Tensor, " b"] | None = None,
) -> Float[Tensor, " b"]:
    """Per-sample mean squared error between the predicted and the true velocity.

    The caller reduces over the batch (mean, or a weighted sum across resolutions).

    Args:
        pred_v: the model's velocity prediction at x_t.
        x0: clean data.
        noise: the ε used to build x_t.
        weight: optional per-sample weight w(t) multiplied onto each sample's loss.

    Returns:
        w · mean over non-batch dims of (pred_v - (ε - x0))², one value per sample.

    References:
        Esser et al. 2024 (SD3), Eq. 9 (conditional flow matching loss) with the
        v-parameterisation; Krea 2 report, Pretraining ("standard rectified-flow loss
        under v-parameterization").
    """
    err = (pred_v - velocity_target(x0, noise)).square()
    loss = err.reshape(err.shape[0], -1).mean(dim=1)
    if weight is not None:
        loss = loss * weight.to(loss.dtype)
    return loss
