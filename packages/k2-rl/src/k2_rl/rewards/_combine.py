"""Combining several rewards into one GRPO advantage: GDPO, sum-then-normalise, artifact gate."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

_ARTIFACT_MODES = ("zero", "nonpositive", "penalty")


def _check_eps(eps: float) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}; use a small positive value like 1e-4")


def group_normalize(
    rewards: Float[Tensor, " n *k"],
    group_ids: Int[Tensor, " n"],
    *,
    eps: float = 1e-4,
    unbiased: bool = False,
) -> Float[Tensor, " n *k"]:
    """Standardise each reward within its group (the samples drawn for the same prompt).

    Groups are found by comparing ids pairwise (an n x n mask), so ids can be any integers
    and nothing is synchronised with the host; n is a GRPO batch (hundreds), so n² is cheap.

    Args:
        rewards: one value per sample, or one column per reward.
        group_ids: the group (prompt) of each sample.
        eps: added to the standard deviation; a constant group gets advantage 0 (also
            with eps = 0).
        unbiased: divide the variance by (size - 1) like `torch.std`; the default divides
            by the size like Flow-GRPO's `np.std`. A group of one then gets std 0.

    Returns:
        A = (r - mean_g r) / (std_g r + eps), same shape as `rewards`.

    References:
        Shao et al. 2024, DeepSeekMath (GRPO), §4.1.2 (outcome supervision: the
        group-standardised reward is the advantage); Liu et al. 2025, Flow-GRPO
        (arXiv 2505.05470), group-relative advantage.
    """
    _check_eps(eps)
    if group_ids.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"group_ids has {group_ids.shape[0]} entries but rewards has {rewards.shape[0]} rows"
        )
    same = (group_ids[:, None] == group_ids[None, :]).to(rewards.dtype)
    size = same.sum(1)
    flat = rewards.reshape(rewards.shape[0], -1)
    mean = same @ flat / size[:, None]
    centered = flat - mean
    # Every member of a group shares its mean, so the group's squared deviations sum as a matmul.
    denom = (size - 1).clamp_min(1) if unbiased else size
    std = (same @ centered.square() / denom[:, None]).sqrt()
    return _safe_divide(centered, std, eps).reshape(rewards.shape)


def _safe_divide(centered: Tensor, std: Tensor, eps: float) -> Tensor:
    # std == 0 means every deviation is exactly 0; dividing by 1 there keeps eps = 0 usable.
    return centered / torch.where(std > 0, std + eps, torch.ones_like(std))


def _batch_normalize(x: Float[Tensor, " n"], eps: float) -> Float[Tensor, " n"]:
    centered = x - x.mean()
    return _safe_divide(centered, centered.square().mean().sqrt(), eps)


def gdpo_advantages(
    rewards: Float[Tensor, "n k"],
    group_ids: Int[Tensor, " n"],
    weights: Float[Tensor, " k"],
    *,
    eps: float = 1e-4,
    batch_normalize: bool = True,
) -> Float[Tensor, " n"]:
    """Normalise each reward within its group, then take the weighted sum (GDPO).

    Because every reward is standardised before it is summed, an affine rescaling of one
    reward (a_k·r_k + b_k, a_k > 0) leaves the advantage unchanged, and a reward with a large
    raw range cannot drown the others.

    Args:
        rewards: reward k of sample i in column k.
        group_ids: the group (prompt) of each sample.
        weights: relative weight of each reward.
        eps: stabiliser of every standard deviation.
        batch_normalize: standardise the summed advantage over the whole batch (GDPO's last
            step), which also makes only the ratios of the weights matter.

    Returns:
        A_i = Σ_k w_k (r_ik - mean_g r_k) / (std_g r_k + eps), batch-standardised if asked.

    References:
        GDPO (arXiv 2601.05242), group reward-decoupled normalisation then
        batch normalisation; TRL `multi_objective_aggregation="normalize_then_sum"`.
    """
    per_reward = group_normalize(rewards, group_ids, eps=eps)
    advantages = per_reward @ weights.to(per_reward.dtype)
    return _batch_normalize(advantages, eps) if batch_normalize else advantages


def sum_then_normalize_advantages(
    rewards: Float[Tensor, "n k"],
    group_ids: Int[Tensor, " n"],
    weights: Float[Tensor, " k"],
    *,
    eps: float = 1e-4,
) -> Float[Tensor, " n"]:
    """Weighted sum of the raw rewards, then group normalisation (the Flow-GRPO baseline).

    Args:
        rewards: reward k of sample i in column k.
        group_ids: the group (prompt) of each sample.
        weights: weight of each reward in the raw sum (its scale matters here).
        eps: stabiliser of the standard deviation.

    Returns:
        A_i = (R_i - mean_g R) / (std_g R + eps) with R_i = Σ_k w_k r_ik.

    References:
        Liu et al. 2025, Flow-GRPO (arXiv 2505.05470), `multi_score` reward;
        TRL `multi_objective_aggregation="sum_then_normalize"`.
    """
    total = rewards @ weights.to(rewards.dtype)
    return group_normalize(total, group_ids, eps=eps)


def artifact_gate(
    values: Float[Tensor, " n *k"],
    artifact_scores: Float[Tensor, " n"],
    *,
    threshold: float = 0.5,
    mode: str = "nonpositive",
) -> Float[Tensor, " n *k"]:
    """Stop samples with structural artifacts from being reinforced.

    Applied to advantages, "nonpositive" keeps the push-down on a flawed sample but removes
    any push-up, and "zero" drops it from the update. Applied to rewards in [0, 1] before
    normalisation, "zero" makes a flawed sample the worst of its group.

    Args:
        values: advantages or rewards, one row per sample.
        artifact_scores: per-sample probability that the image is free of artifacts.
        threshold: samples scoring below it are gated.
        mode: "zero" sets gated rows to 0; "nonpositive" clamps them to at most 0.

    Returns:
        `values` with the gated rows changed.

    References:
        Krea 2 report, Reinforcement learning (artifact reward against reward hacking);
        k2 research notes rl.md §3.4 (artifact classifier as a gate, not a traded term).
    """
    if mode not in ("zero", "nonpositive"):
        raise ValueError(f"unknown gate mode {mode!r}; use 'zero' or 'nonpositive'")
    gated = (artifact_scores < threshold).reshape(-1, *([1] * (values.ndim - 1)))
    replacement = torch.zeros_like(values) if mode == "zero" else values.clamp_max(0)
    return torch.where(gated, replacement, values)


def artifact_penalty(
    advantages: Float[Tensor, " n"],
    artifact_scores: Float[Tensor, " n"],
    *,
    threshold: float = 0.5,
    scale: float = 1.0,
) -> Float[Tensor, " n"]:
    """Subtract a penalty that grows linearly as the artifact score falls below a threshold.

    Args:
        advantages: combined advantages (unit scale after normalisation).
        artifact_scores: per-sample probability that the image is free of artifacts.
        threshold: scores at or above it are not penalised; must be in (0, 1].
        scale: the penalty at artifact score 0, in advantage units.

    Returns:
        A - scale · max(0, threshold - s) / threshold.

    References:
        Krea 2 report, Reinforcement learning (artifact reward discourages structural errors).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"penalty threshold must be in (0, 1], got {threshold}")
    shortfall = (threshold - artifact_scores.to(advantages.dtype)).clamp_min(0) / threshold
    return advantages - scale * shortfall


def combine_rewards(
    rewards: Float[Tensor, "n k"],
    group_ids: Int[Tensor, " n"],
    weights: Float[Tensor, " k"],
    *,
    method: str = "gdpo",
    artifact_scores: Float[Tensor, " n"] | None = None,
    artifact_mode: str = "nonpositive",
    artifact_threshold: float = 0.5,
    penalty_scale: float = 1.0,
    eps: float = 1e-4,
) -> Float[Tensor, " n"]:
    """Turn per-sample rewards into one advantage per sample, with an optional artifact gate.

    Args:
        rewards: reward k of sample i in column k (aesthetic, rubric, OCR, ...).
        group_ids: the group (prompt) of each sample.
        weights: weight of each reward column.
        method: "gdpo" (normalise each reward, then sum; recommended) or "sum" (sum the raw
            rewards, then normalise).
        artifact_scores: per-sample probability of an artifact-free image, or None.
        artifact_mode: "nonpositive" or "zero" (see `artifact_gate`), or "penalty"
            (see `artifact_penalty`).
        artifact_threshold: artifact scores below it are gated or penalised.
        penalty_scale: the penalty at artifact score 0 ("penalty" mode only).
        eps: stabiliser of every standard deviation.

    Returns:
        The advantage of each sample.

    References:
        GDPO (arXiv 2601.05242); Liu et al. 2025, Flow-GRPO; Krea 2
        report, Reinforcement learning (multi-reward GRPO with an artifact reward).
    """
    if method == "gdpo":
        adv = gdpo_advantages(rewards, group_ids, weights, eps=eps)
    elif method == "sum":
        adv = sum_then_normalize_advantages(rewards, group_ids, weights, eps=eps)
    else:
        raise ValueError(f"unknown combination method {method!r}; use 'gdpo' or 'sum'")
    if artifact_scores is None:
        return adv
    if artifact_mode not in _ARTIFACT_MODES:
        raise ValueError(f"unknown artifact_mode {artifact_mode!r}; use one of {_ARTIFACT_MODES}")
    if artifact_mode == "penalty":
        return artifact_penalty(
            adv, artifact_scores, threshold=artifact_threshold, scale=penalty_scale
        )
    return artifact_gate(adv, artifact_scores, threshold=artifact_threshold, mode=artifact_mode)
