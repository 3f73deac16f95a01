"""GRPO clipped loss, velocity-space KL and group-normalised advantages."""

from __future__ import annotations

import math

import jaxtyping
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from k2_rl.grpo import group_advantages, grpo_loss, sde_mean_std, velocity_kl

F64 = torch.float64


# ---- float64 reference transcriptions -----------------------------------------------------------


def ref_grpo(lp, old, adv, eps, eps_high=None, kl=None, beta=0.0):
    # Flow-GRPO Eq. 8 negated, element by element.
    hi = eps if eps_high is None else eps_high
    out = []
    for i, (a, b) in enumerate(zip(lp.tolist(), old.tolist(), strict=True)):
        r = math.exp(a - b)
        clipped = min(max(r, 1 - eps), 1 + hi)
        term = -min(r * adv[i], clipped * adv[i])
        out.append(term + (beta * kl[i] if kl is not None else 0.0))
    return torch.tensor(out, dtype=F64)


def ref_advantages(rewards, ids, eps, global_std=False):
    out = []
    all_mean = sum(rewards) / len(rewards)
    all_std = math.sqrt(sum((r - all_mean) ** 2 for r in rewards) / len(rewards))
    for r, g in zip(rewards, ids, strict=True):
        grp = [x for x, h in zip(rewards, ids, strict=True) if h == g]
        m = sum(grp) / len(grp)
        sd = all_std if global_std else math.sqrt(sum((x - m) ** 2 for x in grp) / len(grp))
        out.append((r - m) / (sd + eps))
    return torch.tensor(out, dtype=F64)


# ---- loss -----------------------------------------------------------------------------------------


def test_grpo_loss_matches_reference_and_reduces_nothing():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(16, generator=g, dtype=F64) * 0.3
    old = lp + torch.randn(16, generator=g, dtype=F64) * 0.3
    adv = torch.randn(16, generator=g, dtype=F64)
    kl = torch.rand(16, generator=g, dtype=F64)
    out = grpo_loss(lp, old, adv, clip_range=0.2, kl=kl, kl_coef=0.04)
    assert out.loss.shape == (16,)
    torch.testing.assert_close(
        out.loss, ref_grpo(lp, old, adv.tolist(), 0.2, kl=kl.tolist(), beta=0.04)
    )
    asym = grpo_loss(lp, old, adv, clip_range=0.1, clip_range_high=0.3)
    torch.testing.assert_close(asym.loss, ref_grpo(lp, old, adv.tolist(), 0.1, eps_high=0.3))
    ratio = [math.exp(a - b) for a, b in zip(lp.tolist(), old.tolist(), strict=True)]
    assert math.isclose(out.clip_fraction.item(), sum(abs(r - 1) > 0.2 for r in ratio) / 16)
    assert math.isclose(out.ratio_mean.item(), sum(ratio) / 16, rel_tol=1e-12)
    half_sq = sum((a - b) ** 2 for a, b in zip(lp.tolist(), old.tolist(), strict=True)) / 32
    assert math.isclose(out.approx_kl.item(), half_sq, rel_tol=1e-12)


@pytest.mark.parametrize(
    ("ratio", "adv", "loss", "grad"),
    [
        # A > 0: the gain is capped at (1 + ε)·A once r > 1 + ε (no gradient), unclipped below.
        (1.5, 1.0, -1.2, 0.0),
        (0.5, 1.0, -0.5, -0.5),
        # A < 0: the pessimistic max keeps r·|A| above 1 + ε and stops the push below 1 - ε.
        (1.5, -1.0, 1.5, 1.5),
        (0.5, -1.0, 0.8, 0.0),
        (1.1, 2.0, -2.2, -2.2),  # inside the clip range: plain -r·A, d/dlogp = -r·A
    ],
)
def test_clipping_on_hand_derived_cases(ratio, adv, loss, grad):
    lp = torch.tensor([math.log(ratio)], dtype=F64, requires_grad=True)
    out = grpo_loss(lp, torch.zeros(1, dtype=F64), torch.tensor([adv], dtype=F64), clip_range=0.2)
    out.loss.sum().backward()
    assert math.isclose(out.loss.item(), loss, rel_tol=1e-12)
    assert math.isclose(lp.grad.item(), grad, rel_tol=1e-12, abs_tol=1e-15)


def test_on_policy_loss_is_minus_advantage_and_steps_broadcast():
    lp = torch.randn(4, 3, dtype=F64)
    adv = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=F64)
    out = grpo_loss(lp, lp.clone(), adv, clip_range=1e-4)
    assert out.loss.shape == (4, 3)
    torch.testing.assert_close(out.loss, -adv[:, None].expand(4, 3))
    assert (
        out.clip_fraction.item() == 0 and out.ratio_mean.item() == 1 and out.approx_kl.item() == 0
    )


def test_gradcheck_loss_wrt_new_log_prob_and_kl():
    g = torch.Generator().manual_seed(1)
    old = torch.randn(6, generator=g, dtype=F64)
    # Ratios 0.7, 0.95, 1.05, 1.3, ... straddle the clip range but stay off its kinks.
    lp = (
        old + torch.log(torch.tensor([0.7, 0.95, 1.05, 1.3, 0.85, 1.15], dtype=F64))
    ).requires_grad_(True)
    kl = torch.rand(6, generator=g, dtype=F64).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.3, 2.0, -2.0], dtype=F64)

    def f(a, k):
        return grpo_loss(a, old, adv, clip_range=0.2, kl=k, kl_coef=0.1).loss

    assert torch.autograd.gradcheck(f, (lp, kl))


def test_old_log_prob_and_advantages_get_no_gradient():
    lp = torch.zeros(3, dtype=F64, requires_grad=True)
    old = torch.full((3,), 0.1, dtype=F64, requires_grad=True)
    adv = torch.ones(3, dtype=F64, requires_grad=True)
    grpo_loss(lp, old, adv, clip_range=0.2).loss.sum().backward()
    assert old.grad is None and adv.grad is None and lp.grad is not None


def test_loss_rejects_bad_inputs():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="kl_coef"):
        grpo_loss(x, x, x, clip_range=0.2, kl_coef=0.1)
    with pytest.raises(ValueError, match="clip_range"):
        grpo_loss(x, x, x, clip_range=0.0)
    with pytest.raises(ValueError, match="kl_coef"):
        grpo_loss(x, x, x, clip_range=0.2, kl=x, kl_coef=-1.0)
    # Shape mismatches: jaxtyping's hook catches them in tests, the function's own check elsewhere.
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="old_log_prob"):
        grpo_loss(torch.zeros(3, 2), torch.zeros(3, 4), x, clip_range=0.2)


# ---- KL -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "tn"), [(0.8, 0.55), (1.0, 0.9)])
def test_velocity_kl_forms_match_the_closed_forms(t, tn):
    g = torch.Generator().manual_seed(2)
    v, v_ref = (
        torch.randn(3, 2, 5, generator=g, dtype=F64),
        torch.randn(3, 2, 5, generator=g, dtype=F64),
    )
    a, dt = 0.7, tn - t
    sigma = a * math.sqrt(t / (1 - (tn if t == 1 else t)))
    dv2 = (v - v_ref).square().mean(dim=(1, 2))
    closed = abs(dt) / 2 * (sigma * (1 - t) / (2 * t) + 1 / sigma) ** 2 * dv2  # rl.md §2.1
    torch.testing.assert_close(velocity_kl(v, v_ref, t, tn, noise_level=a, form="gaussian"), closed)
    code_form = ((1 + sigma**2 * (1 - t) / (2 * t)) * dt) ** 2 * dv2 / (2 * sigma**2)
    torch.testing.assert_close(velocity_kl(v, v_ref, t, tn, noise_level=a), code_form)
    torch.testing.assert_close(velocity_kl(v, v_ref, t, tn, noise_level=a, form="velocity"), dv2)


@pytest.mark.parametrize("kind", ["flow_sde", "cps"])
def test_gaussian_kl_is_the_exact_kl_of_the_two_transitions(kind):
    g = torch.Generator().manual_seed(3)
    x, v, v_ref = (torch.randn(2, 4, 3, generator=g, dtype=F64) for _ in range(3))
    eta = 0.8 if kind == "cps" else 0.7
    m1, s = sde_mean_std(x, v, 0.7, 0.4, noise_level=eta, kind=kind)
    m2, _ = sde_mean_std(x, v_ref, 0.7, 0.4, noise_level=eta, kind=kind)
    sd = s.reshape(-1, 1, 1).expand_as(m1)
    exact = kl_divergence(Normal(m1, sd), Normal(m2, sd)).mean(dim=(1, 2))
    got = velocity_kl(v, v_ref, 0.7, 0.4, noise_level=eta, kind=kind, form="gaussian")
    torch.testing.assert_close(got, exact)
    if kind == "cps":  # std = σ_t for CPS, so the reference-code form coincides
        torch.testing.assert_close(
            velocity_kl(v, v_ref, 0.7, 0.4, noise_level=eta, kind=kind), exact
        )


def test_velocity_kl_gradcheck_and_zero_at_reference():
    g = torch.Generator().manual_seed(4)
    v = torch.randn(2, 6, generator=g, dtype=F64, requires_grad=True)
    v_ref = torch.randn(2, 6, generator=g, dtype=F64)
    for form in ("flow_grpo", "gaussian", "velocity"):
        assert torch.autograd.gradcheck(
            lambda a, form=form: velocity_kl(a, v_ref, 0.6, 0.3, noise_level=0.7, form=form), (v,)
        )
        assert torch.all(velocity_kl(v_ref, v_ref, 0.6, 0.3, noise_level=0.7, form=form) == 0)


# ---- advantages -----------------------------------------------------------------------------------


def test_group_advantages_match_reference_for_shuffled_unequal_groups():
    rewards = [0.2, 0.9, 0.4, 0.4, 0.1, 0.8, 0.3, 0.7, 0.5]
    ids = [2, 0, 1, 2, 0, 1, 0, 2, 1]
    r, gi = torch.tensor(rewards, dtype=F64), torch.tensor(ids)
    torch.testing.assert_close(group_advantages(r, gi), ref_advantages(rewards, ids, 1e-4))
    torch.testing.assert_close(
        group_advantages(r, gi, global_std=True, eps=1e-3),
        ref_advantages(rewards, ids, 1e-3, global_std=True),
    )
    clipped = group_advantages(r, gi, eps=1.0, clip=0.1)
    torch.testing.assert_close(clipped, ref_advantages(rewards, ids, 1.0).clamp(-0.1, 0.1))


def test_group_advantages_properties():
    g = torch.Generator().manual_seed(5)
    r = torch.randn(4, 6, generator=g, dtype=F64)
    ids = torch.arange(4).repeat_interleave(6)
    adv = group_advantages(r.reshape(-1), ids, eps=1e-12).reshape(4, 6)
    torch.testing.assert_close(adv.mean(dim=1), torch.zeros(4, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(adv.var(dim=1, unbiased=False), torch.ones(4, dtype=F64))
    # Shift and scale of one group's rewards do not change its advantages.
    r2 = r.clone()
    r2[1] = 3 * r2[1] + 10
    torch.testing.assert_close(group_advantages(r2.reshape(-1), ids, eps=1e-12).reshape(4, 6), adv)
    flat = group_advantages(torch.full((6,), 0.3, dtype=F64), torch.zeros(6, dtype=torch.long))
    assert flat.abs().max() < 1e-9  # an all-equal group has no signal
    assert group_advantages(r.reshape(-1).float(), ids).dtype == torch.float32


def test_group_advantages_reject_bad_inputs():
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="group_ids"):
        group_advantages(torch.zeros(4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="eps"):
        group_advantages(torch.zeros(4), torch.zeros(4, dtype=torch.long), eps=0.0)
    with pytest.raises(ValueError, match="clip"):
        group_advantages(torch.zeros(4), torch.zeros(4, dtype=torch.long), clip=-1.0)
