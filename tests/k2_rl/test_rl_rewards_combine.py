"""k2_rl.rewards: multi-reward combination (GDPO, sum-then-normalise, artifact gate) and the
asynchronous scorer."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from k2_rl.rewards import (
    AsyncRewardScorer,
    artifact_gate,
    artifact_penalty,
    combine_rewards,
    gdpo_advantages,
    group_normalize,
    sum_then_normalize_advantages,
)

# ---- float64 reference transcriptions (plain Python loops over samples) ----


def ref_group_norm(
    values: list[float], groups: list[int], eps: float, ddof: int = 0
) -> list[float]:
    out = []
    for i, gi in enumerate(groups):
        members = [values[j] for j, gj in enumerate(groups) if gj == gi]
        mean = sum(members) / len(members)
        denom = max(len(members) - ddof, 1)
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / denom)
        out.append((values[i] - mean) / (std + eps))
    return out


def ref_batch_norm(values: list[float], eps: float) -> list[float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))
    return [(x - mean) / (std + eps) for x in values]


def ref_gdpo(rewards, groups, weights, eps, batch_normalize=True):
    n, k = len(rewards), len(weights)
    cols = [ref_group_norm([rewards[i][c] for i in range(n)], groups, eps) for c in range(k)]
    adv = [sum(weights[c] * cols[c][i] for c in range(k)) for i in range(n)]
    return ref_batch_norm(adv, eps) if batch_normalize else adv


def ref_sum_then_norm(rewards, groups, weights, eps):
    totals = [sum(w * r for w, r in zip(weights, row, strict=True)) for row in rewards]
    return ref_group_norm(totals, groups, eps)


def _batch(seed: int, n_groups: int = 4, size: int = 5, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(n_groups * size, k, generator=g, dtype=torch.float64)
    # Shuffled, non-contiguous ids: groups are found by equality, not by position.
    groups = torch.tensor([7, -2, 40, 3])[torch.arange(n_groups).repeat_interleave(size)]
    perm = torch.randperm(n_groups * size, generator=g)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    return rewards[perm], groups[perm], weights


def _close(got: torch.Tensor, want: list[float], tol: float = 1e-12) -> None:
    torch.testing.assert_close(got, torch.tensor(want, dtype=got.dtype), rtol=tol, atol=tol)


@pytest.mark.parametrize("unbiased", [False, True])
def test_group_normalize_matches_reference(unbiased):
    rewards, groups, _ = _batch(0)
    got = group_normalize(rewards, groups, eps=1e-4, unbiased=unbiased)
    for c in range(rewards.shape[1]):
        want = ref_group_norm(rewards[:, c].tolist(), groups.tolist(), 1e-4, ddof=int(unbiased))
        _close(got[:, c], want)
    # A 1-D reward gives the same as its column.
    _close(group_normalize(rewards[:, 0], groups, eps=1e-4, unbiased=unbiased), got[:, 0].tolist())


def test_constant_group_and_singleton_get_zero_advantage():
    rewards = torch.tensor([0.3, 0.3, 0.3, 1.0, 2.0, 5.0], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    adv = group_normalize(rewards, groups)
    assert torch.all(adv[:3] == 0) and adv[5] == 0
    assert adv[3] < 0 < adv[4]


def test_group_normalize_gradcheck():
    rewards, groups, _ = _batch(1, n_groups=2, size=3, k=2)
    torch.autograd.gradcheck(
        lambda r: group_normalize(r, groups, eps=1e-3), (rewards.requires_grad_(),)
    )


@pytest.mark.parametrize("batch_normalize", [True, False])
def test_gdpo_matches_reference(batch_normalize):
    rewards, groups, weights = _batch(2)
    got = gdpo_advantages(rewards, groups, weights, eps=1e-4, batch_normalize=batch_normalize)
    want = ref_gdpo(rewards.tolist(), groups.tolist(), weights.tolist(), 1e-4, batch_normalize)
    _close(got, want)


def test_sum_then_normalize_matches_reference():
    rewards, groups, weights = _batch(3)
    got = sum_then_normalize_advantages(rewards, groups, weights, eps=1e-4)
    _close(got, ref_sum_then_norm(rewards.tolist(), groups.tolist(), weights.tolist(), 1e-4))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    column=st.integers(0, 2),
    scale=st.floats(1e-2, 1e2),
    shift=st.floats(-1e2, 1e2),
)
def test_gdpo_is_invariant_to_affine_rescaling_of_one_reward(seed, column, scale, shift):
    rewards, groups, weights = _batch(seed)
    rescaled = rewards.clone()
    rescaled[:, column] = scale * rescaled[:, column] + shift
    base = gdpo_advantages(rewards, groups, weights, eps=0.0)
    torch.testing.assert_close(gdpo_advantages(rescaled, groups, weights, eps=0.0), base)
    # Batch normalisation makes only the ratios of the weights matter.
    torch.testing.assert_close(gdpo_advantages(rewards, groups, scale * weights, eps=0.0), base)


def test_sum_then_normalize_is_not_invariant_to_rescaling():
    # One group; rescaling reward 0 flips which of samples 0 and 1 is better.
    rewards = torch.tensor([[0.0, 2.0], [1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    groups = torch.zeros(3, dtype=torch.long)
    weights = torch.ones(2, dtype=torch.float64)
    scaled = rewards * torch.tensor([10.0, 1.0], dtype=torch.float64)
    before = sum_then_normalize_advantages(rewards, groups, weights, eps=0.0)
    after = sum_then_normalize_advantages(scaled, groups, weights, eps=0.0)
    assert before[0] > before[1] and after[0] < after[1]
    gdpo_before = gdpo_advantages(rewards, groups, weights, eps=0.0)
    torch.testing.assert_close(gdpo_advantages(scaled, groups, weights, eps=0.0), gdpo_before)


def test_gdpo_separates_combinations_that_the_sum_collapses():
    # GDPO's motivating case: one pass vs two passes against a fail both normalise to (-1, 1)
    # under sum-then-normalise, but GDPO gives the double pass twice the advantage.
    rewards = torch.tensor([[0, 0], [1, 0], [0, 0], [1, 1]], dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1])
    weights = torch.ones(2, dtype=torch.float64)
    summed = sum_then_normalize_advantages(rewards, groups, weights, eps=0.0)
    torch.testing.assert_close(summed[:2], summed[2:])
    gdpo = gdpo_advantages(rewards, groups, weights, eps=0.0, batch_normalize=False)
    torch.testing.assert_close(gdpo, torch.tensor([-1.0, 1.0, -2.0, 2.0], dtype=torch.float64))


def test_artifact_gate_modes():
    values = torch.tensor([[1.0, -1.0], [2.0, 0.5], [-3.0, 4.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.2, 0.1], dtype=torch.float64)
    zero = artifact_gate(values, scores, threshold=0.5, mode="zero")
    nonpos = artifact_gate(values, scores, threshold=0.5, mode="nonpositive")
    want_zero = [[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]
    want_nonpos = [[1.0, -1.0], [0.0, 0.0], [-3.0, 0.0]]
    torch.testing.assert_close(zero, torch.tensor(want_zero, dtype=torch.float64))
    torch.testing.assert_close(nonpos, torch.tensor(want_nonpos, dtype=torch.float64))
    with pytest.raises(ValueError, match="gate mode"):
        artifact_gate(values, scores, mode="clip")


def test_artifact_penalty_matches_formula():
    adv = torch.tensor([1.0, 1.0, 1.0, -0.5], dtype=torch.float64)
    scores = torch.tensor([1.0, 0.5, 0.25, 0.0], dtype=torch.float64)
    got = artifact_penalty(adv, scores, threshold=0.5, scale=2.0)
    want = [
        a - 2.0 * max(0.0, 0.5 - s) / 0.5
        for a, s in zip(adv.tolist(), scores.tolist(), strict=True)
    ]
    _close(got, want)
    with pytest.raises(ValueError, match="threshold"):
        artifact_penalty(adv, scores, threshold=0.0)


@pytest.mark.parametrize("mode", ["zero", "nonpositive", "penalty"])
def test_combine_rewards_composes_the_parts(mode):
    rewards, groups, weights = _batch(4)
    scores = torch.rand(
        rewards.shape[0], generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    got = combine_rewards(rewards, groups, weights, artifact_scores=scores, artifact_mode=mode)
    adv = torch.tensor(
        ref_gdpo(rewards.tolist(), groups.tolist(), weights.tolist(), 1e-4), dtype=torch.float64
    )
    if mode == "penalty":
        want = [
            a - max(0.0, 0.5 - s) / 0.5 for a, s in zip(adv.tolist(), scores.tolist(), strict=True)
        ]
    else:
        gated = [s < 0.5 for s in scores.tolist()]
        want = [
            (0.0 if mode == "zero" else min(a, 0.0)) if g else a
            for a, g in zip(adv.tolist(), gated, strict=True)
        ]
    _close(got, want)
    plain = combine_rewards(rewards, groups, weights, method="sum")
    _close(plain, ref_sum_then_norm(rewards.tolist(), groups.tolist(), weights.tolist(), 1e-4))


def test_combine_rejects_bad_arguments():
    rewards, groups, weights = _batch(6)
    with pytest.raises(ValueError, match="method"):
        combine_rewards(rewards, groups, weights, method="mean")
    with pytest.raises(ValueError, match="artifact_mode"):
        combine_rewards(
            rewards, groups, weights, artifact_scores=groups.double(), artifact_mode="x"
        )
    with pytest.raises(ValueError, match="eps"):
        group_normalize(rewards, groups, eps=-1.0)
    # The jaxtyping test hook rejects the shape mismatch before the function's own check.
    with pytest.raises((ValueError, TypeError), match="group_ids"):
        group_normalize(rewards[:, 0], groups[:-1])


def test_float32_stays_float32():
    rewards, groups, weights = _batch(7)
    adv = combine_rewards(rewards.float(), groups, weights.float())
    assert adv.dtype == torch.float32
    _close(adv, combine_rewards(rewards, groups, weights).tolist(), tol=1e-5)


# ---- asynchronous scoring ----


def _reward_a(images, prompts):
    return torch.tensor([float(len(p)) + im for im, p in zip(images, prompts, strict=True)])


def _reward_b(images, prompts):
    return torch.tensor([im * 0.5 for im in images], dtype=torch.float64)


def test_async_scorer_matches_sync():
    images, prompts = [1.0, 2.0, 3.0], ["a", "bb", "ccc"]
    with AsyncRewardScorer({"a": _reward_a, "b": _reward_b}) as scorer:
        sync = scorer.score(images, prompts)
        got = scorer.submit(images, prompts).result(timeout=10)
    assert scorer.names == ("a", "b")
    want = torch.tensor([[2.0, 0.5], [4.0, 1.0], [6.0, 1.5]], dtype=torch.float64)
    torch.testing.assert_close(sync, want)
    torch.testing.assert_close(got, sync)


def test_async_scorer_runs_rewards_concurrently():
    # Each reward waits for the other at a barrier: this only completes if both run at once.
    barrier = threading.Barrier(2, timeout=10)

    def waiting(images, prompts):
        barrier.wait()
        return torch.zeros(len(images))

    with AsyncRewardScorer({"x": waiting, "y": waiting}) as scorer:
        out = scorer.submit([0, 1], ["p", "q"]).result(timeout=20)
    assert out.shape == (2, 2)


def test_async_scorer_propagates_errors():
    def broken(images, prompts):
        raise RuntimeError("reward server down")

    def wrong_shape(images, prompts):
        return torch.zeros(len(images) + 1)

    scorer = AsyncRewardScorer({"ok": _reward_b, "bad": broken})
    with scorer, pytest.raises(RuntimeError, match="reward server down"):
        scorer.submit([1.0], ["p"]).result(timeout=10)
    with AsyncRewardScorer({"bad": wrong_shape}) as scorer:
        with pytest.raises(ValueError, match="shape"):
            scorer.submit([1.0], ["p"]).result(timeout=10)
        with pytest.raises(ValueError, match="shape"):
            scorer.score([1.0], ["p"])
    with pytest.raises(ValueError, match="at least one"):
        AsyncRewardScorer({})
