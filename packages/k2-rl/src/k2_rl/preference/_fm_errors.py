"""Per-sample flow-matching errors, the only model output the preference losses need."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor


def flow_matching_errors(
    pred: Float[Tensor, " b *rest"], target: Float[Tensor, " b *rest"]
) -> Float[Tensor, " b"]:
    """Mean squared velocity error per sample: ℓ = mean over non-batch dims of (v̂ - v)².

    Call it four times per batch (policy and reference, on winner and loser), with the
    winner and loser of a pair noised at the same t with the same ε. Same reduction as
    `k2_dit.flow.rectified_flow_loss`, which takes (x0, ε) instead of the target.

    Args:
        pred: the model's velocity prediction v̂(x_t, t, c).
        target: the velocity target v = ε - x0 (rectified flow).

    Returns:
        ℓ, shape [b]. Keep the graph on the policy errors; compute the reference errors
        under torch.no_grad().

    References:
        Wallace et al. 2023, Diffusion-DPO: per-sample MSE averaged over all dims
        (released train.py); rl.md §1.2 (Flow-DPO: ε replaced by the velocity target).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred has shape {tuple(pred.shape)} but target has {tuple(target.shape)}; "
            "pass the velocity target v = noise - x0 of the same latents"
        )
    if pred.ndim < 2:
        raise ValueError(
            f"pred has shape {tuple(pred.shape)}; pass a batch [b, ...] with at least one "
            "non-batch dim (already per-sample errors go straight into the loss)"
        )
    err = (pred - target).square()
    return err.reshape(err.shape[0], -1).mean(dim=1)
