"""Group-relative advantages: rewards standardised within the group of samples of one prompt."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from k2_rl.rewards._combine import group_normalize


def group_advantages(
    rewards: Float[Tensor, " b"],
    group_ids: Int[Tensor, " b"],
    *,
    eps: float = 1e-4,
    global_std: bool = False,
    clip: float | None = None,
) -> Float[Tensor, " b"]:
    """A_i = (r_i - mean_g(r)) / (std_g(r) + eps) over the samples sharing the prompt of sample i.

    Groups may have different sizes and appear in any order. Standard deviations are the
    population ones (divisor n), as in the reference's `np.std`; a group with equal rewards
    gets advantages ~0 (no signal). Built from a [b, b] same-group mask, so there is no
    host sync (b is a rollout batch, at most a few thousand).

    Args:
        rewards: one scalar reward per sample.
        group_ids: integer id of each sample's prompt group.
        eps: added to the std (Flow-GRPO: 1e-4).
        global_std: divide by the std of the whole batch instead of the group's
            (Flow-GRPO `global_std`, Dr. GRPO-style scale).
        clip: clamp advantages to [-clip, clip] (Flow-GRPO `adv_clip_max` = 5); None: no clamp.

    Returns:
        One advantage per sample, in the rewards' dtype (float32 or wider).

    References:
        Shao et al. 2024, DeepSeekMath (GRPO), §4.1.2; Flow-GRPO (arXiv 2505.05470), Eq. 7
        and `PerPromptStatTracker`.
    """
    if rewards.shape != group_ids.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and group_ids {tuple(group_ids.shape)} must both be [b]"
        )
    if not eps > 0:
        raise ValueError(f"eps={eps!r} must be > 0 (it keeps zero-variance groups finite)")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip={clip!r} must be > 0 or None")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    if global_std:
        same = (group_ids[:, None] == group_ids[None, :]).to(r.dtype)
        dev = r - same @ r / same.sum(dim=1)
        adv = dev / ((r - r.mean()).square().mean().sqrt() + eps)
    else:
        # The same per-group standardisation the reward combiners use (population std).
        adv = group_normalize(r, group_ids, eps=eps)
    return adv if clip is None else adv.clamp(-clip, clip)
