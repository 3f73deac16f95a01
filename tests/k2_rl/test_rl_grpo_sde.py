"""Flow-GRPO SDE step, CPS, log-probs, rollouts with SDE windows, and the on-policy ratio self-test."""

from __future__ import annotations

import math

import jaxtyping
import pytest
import torch
from torch import nn

from k2_dit.flow import ShiftSchedule, sampling_timesteps
from k2_rl.grpo import (
    check_on_policy_ratio,
    random_sde_window,
    rollout_timesteps,
    sample_with_logprobs,
    sde_mean_std,
    sde_step,
    sliding_sde_window,
    transition_log_prob,
)

F64 = torch.float64


# ---- float64 reference transcriptions (scalar time, plain formulas) --------------------------


def ref_flow_sde(x, v, t, tn, a):
    # Flow-GRPO Eq. 9 in k2's convention (its sigma is our t); dt < 0. At t = 1 the code
    # replaces 1 - t by 1 - t_next.
    dt = tn - t
    sigma = a * math.sqrt(t / (1 - (tn if t == 1 else t)))
    mean = x + (v + sigma**2 / (2 * t) * (x + (1 - t) * v)) * dt
    return mean, sigma * math.sqrt(-dt)


def ref_cps(x, v, t, tn, eta):
    s = tn * math.sin(eta * math.pi / 2)
    x0_hat = x - t * v
    x1_hat = x + (1 - t) * v
    return (1 - tn) * x0_hat + math.sqrt(tn**2 - s**2) * x1_hat, s


def ref_gaussian_log_prob(sample, mean, std):
    # Explicit per-element loop, averaged over every non-batch element.
    out = []
    for xs, ms in zip(
        sample.reshape(sample.shape[0], -1), mean.reshape(mean.shape[0], -1), strict=True
    ):
        total = 0.0
        for a, m in zip(xs.tolist(), ms.tolist(), strict=True):
            total += -((a - m) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
        out.append(total / xs.numel())
    return torch.tensor(out, dtype=F64)


def _xv(seed, shape=(3, 2, 4), dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(
        shape, generator=g, dtype=dtype
    )


# ---- the step --------------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "tn", "a"), [(0.8, 0.6, 0.7), (1.0, 0.9, 0.7), (0.3, 0.0, 1.2)])
def test_flow_sde_mean_std_and_log_prob_match_reference(t, tn, a):
    x, v = _xv(0)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    x_next, lp, mean, std = sde_step(x, v, t, tn, noise_level=a, noise=noise)
    ref_mean, ref_std = ref_flow_sde(x, v, t, tn, a)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, torch.full((3,), ref_std, dtype=F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(x_next, ref_mean + ref_std * noise, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        lp, ref_gaussian_log_prob(x_next, ref_mean, ref_std), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize(("t", "tn", "eta"), [(1.0, 0.8, 0.8), (0.5, 0.2, 0.3)])
def test_cps_mean_std_and_log_probs_match_reference(t, tn, eta):
    x, v = _xv(2)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    x_next, lp, mean, std = sde_step(x, v, t, tn, noise_level=eta, kind="cps", noise=noise)
    ref_mean, s = ref_cps(x, v, t, tn, eta)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, torch.full((3,), s, dtype=F64), rtol=1e-12, atol=0)
    # CPS defaults to the reference's constant-free form -(x' - μ)², averaged.
    torch.testing.assert_close(lp, -(s * noise).square().mean(dim=(1, 2)), rtol=1e-10, atol=1e-12)
    _, lp_g, _, _ = sde_step(
        x, v, t, tn, noise_level=eta, kind="cps", log_prob_form="gaussian", prev_sample=x_next
    )
    torch.testing.assert_close(
        lp_g, ref_gaussian_log_prob(x_next, ref_mean, s), rtol=1e-10, atol=1e-10
    )


def test_per_sample_times_match_scalar_times():
    x, v = _xv(4)
    t = torch.tensor([1.0, 0.7, 0.4], dtype=F64)
    tn = torch.tensor([0.9, 0.5, 0.1], dtype=F64)
    mean, std = sde_mean_std(x, v, t, tn, noise_level=0.7)
    for i in range(3):
        m_i, s_i = ref_flow_sde(x[i : i + 1], v[i : i + 1], t[i].item(), tn[i].item(), 0.7)
        torch.testing.assert_close(mean[i : i + 1], m_i, rtol=1e-12, atol=1e-12)
        assert math.isclose(std[i].item(), s_i, rel_tol=1e-12)


def test_prev_sample_scores_a_given_transition_and_draws_come_from_the_generator():
    x, v = _xv(5)
    a = sde_step(x, v, 0.6, 0.4, noise_level=0.7, generator=torch.Generator().manual_seed(9))
    b = sde_step(x, v, 0.6, 0.4, noise_level=0.7, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    rescored = sde_step(x, v, 0.6, 0.4, noise_level=0.7, prev_sample=a[0])
    assert torch.equal(rescored[0], a[0]) and torch.equal(rescored[1], a[1])


def test_log_probs_are_float32_under_bf16_inputs():
    x, v = _xv(6, dtype=torch.bfloat16)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    x_next, lp, mean, std = sde_step(x, v, 0.7, 0.5, noise_level=0.7, noise=noise)
    assert x_next.dtype == lp.dtype == mean.dtype == std.dtype == torch.float32
    ref_mean, ref_std = ref_flow_sde(x.double(), v.double(), 0.7, 0.5, 0.7)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-6, atol=1e-6)
    ref = ref_gaussian_log_prob(x_next.double(), ref_mean, ref_std)
    torch.testing.assert_close(lp.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["flow_sde", "cps"])
def test_gradcheck_log_prob_wrt_velocity(kind):
    x, v = _xv(7, shape=(2, 3))
    x_next = sde_step(
        x, v, 0.8, 0.5, noise_level=0.7, kind=kind, generator=torch.Generator().manual_seed(1)
    )[0]
    v = v.clone().requires_grad_(True)
    for form in ("gaussian", "unnormalized"):

        def f(vv, form=form):
            return sde_step(
                x, vv, 0.8, 0.5, noise_level=0.7, kind=kind, log_prob_form=form, prev_sample=x_next
            )[1]

        assert torch.autograd.gradcheck(f, (v,))


@pytest.mark.parametrize("kind", ["flow_sde", "cps"])
def test_zero_noise_is_the_euler_step_and_the_gap_closes_quadratically(kind):
    x, v = _xv(8)
    t, tn = 0.75, 0.5
    euler = x + (tn - t) * v
    mean0, std0 = sde_mean_std(x, v, t, tn, noise_level=0.0, kind=kind)
    torch.testing.assert_close(mean0, euler, rtol=0, atol=1e-14)
    assert torch.all(std0 == 0)
    gaps = [
        (sde_mean_std(x, v, t, tn, noise_level=a, kind=kind)[0] - euler).abs().max()
        for a in (1e-2, 5e-3)
    ]
    assert 0 < gaps[0] < 1e-3 and 3.9 < gaps[0] / gaps[1] < 4.1  # O(a²)


@pytest.mark.parametrize(("t", "tn", "eta"), [(1.0, 0.85, 0.8), (0.6, 0.3, 0.5)])
def test_cps_preserves_the_coefficients_of_the_interpolant(t, tn, eta):
    # On a point mass c the exact velocity is v = ε - c, so x̂0 = c and x̂1 = ε exactly; CPS
    # must then give mean = (1 - tn)·c + sqrt(tn² - s²)·ε with std s and
    # sqrt(tn² - s²)² + s² = tn²: x_tn is again (1 - tn)·c + tn·(unit Gaussian).
    g = torch.Generator().manual_seed(11)
    c, eps = torch.randn(1, 6, generator=g, dtype=F64), torch.randn(4000, 6, generator=g, dtype=F64)
    x = (1 - t) * c + t * eps
    x_next, _, mean, std = sde_step(x, eps - c, t, tn, noise_level=eta, kind="cps", generator=g)
    s = std[0].item()
    assert math.isclose(s, tn * math.sin(eta * math.pi / 2), rel_tol=1e-12)
    keep = math.sqrt(tn**2 - s**2)
    torch.testing.assert_close(mean, (1 - tn) * c + keep * eps, rtol=1e-12, atol=1e-12)
    assert math.isclose(keep**2 + s**2, tn**2, rel_tol=1e-12)
    resid = (x_next - (1 - tn) * c) / tn  # should be N(0, 1) per element
    assert abs(resid.var().item() - 1) < 0.05 and abs(resid.mean().item()) < 0.03


def _gaussian_velocity(s0):
    # x0 ~ N(0, s0²), ε ~ N(0, 1): v*(x, t) = E[ε - x0 | x_t = x] = (t - (1-t)s0²) / Var_t · x.
    def v(x, t):
        tt = t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return (tt - (1 - tt) * s0**2) / ((1 - tt) ** 2 * s0**2 + tt**2) * x

    return v


def test_flow_sde_keeps_the_flow_marginal_variance_monte_carlo():
    s0, t0, t1, steps = 0.5, 0.9, 0.4, 30
    g = torch.Generator().manual_seed(12)
    var0 = (1 - t0) ** 2 * s0**2 + t0**2
    x = math.sqrt(var0) * torch.randn(4096, 16, generator=g, dtype=F64)
    grid = torch.linspace(t0, t1, steps + 1, dtype=F64)
    traj = sample_with_logprobs(_gaussian_velocity(s0), x, grid, noise_level=0.7, generator=g)
    # Monte Carlo std error ~0.6 %; Euler-Maruyama bias at 30 steps ~1.2 %. Dropping the
    # score term σ²/(2t)·(x + (1-t)v) or the 1/(1-t) in σ_t breaks this by far more.
    for k in (10, 20, steps):
        t = grid[k].item()
        want = (1 - t) ** 2 * s0**2 + t**2
        got = traj.latents[k].var().item()
        assert abs(got / want - 1) < 0.03, (k, got, want)
        assert abs(traj.latents[k].mean().item()) < 0.02


def test_bad_step_inputs_raise_clear_errors():
    x, v = _xv(13)
    with pytest.raises(ValueError, match="noise_level"):
        sde_step(x, v, 0.8, 0.5, noise_level=0.0)
    # Under the test-time jaxtyping hook the Literal annotation rejects it first.
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="kind"):
        sde_step(x, v, 0.8, 0.5, noise_level=0.7, kind="ddim")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CPS takes"):
        sde_step(x, v, 0.8, 0.5, noise_level=1.5, kind="cps")
    with pytest.raises(ValueError, match="t_next"):
        sde_step(x, v, 0.5, 0.8, noise_level=0.7)
    with pytest.raises(ValueError, match="t="):
        sde_step(x, v, 1.5, 0.8, noise_level=0.7)
    with pytest.raises(ValueError, match="either"):
        sde_step(x, v, 0.8, 0.5, noise_level=0.7, noise=x, prev_sample=x)
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="log_prob_form"):
        sde_step(x, v, 0.8, 0.5, noise_level=0.7, log_prob_form="sum")  # type: ignore[arg-type]


# ---- rollouts -----------------------------------------------------------------------------------


class _Net(nn.Module):
    def __init__(self, d=8, p_drop=0.0):
        super().__init__()
        self.lin = nn.Linear(d + 1, d)
        self.drop = nn.Dropout(p_drop)

    def forward(self, x, t):
        h = torch.cat([x.flatten(1).float(), t[:, None].float()], dim=1)
        return self.drop(torch.tanh(self.lin(h))).reshape(x.shape).to(x.dtype)


def _net(seed=0, p_drop=0.0):
    torch.manual_seed(seed)
    return _Net(p_drop=p_drop).eval()


def test_rollout_uses_ode_outside_the_window_and_records_sde_log_probs():
    net = _net()
    x_T = torch.randn(4, 2, 4, generator=torch.Generator().manual_seed(0))
    ts = rollout_timesteps(6, shift=3.0)
    traj = sample_with_logprobs(
        net, x_T, ts, noise_level=0.7, sde_window=[3, 1], generator=torch.Generator().manual_seed(1)
    )
    assert (
        traj.sde_steps == (1, 3)
        and traj.latents.shape == (7, 4, 2, 4)
        and traj.log_probs.shape == (4, 2)
    )
    with torch.no_grad():
        for k in range(6):
            x, t, tn = traj.latents[k], ts[k], ts[k + 1]
            v = net(x, t.expand(4))
            if k in traj.sde_steps:
                mean, std = ref_flow_sde(x.double(), v.double(), t.item(), tn.item(), 0.7)
                z = (traj.latents[k + 1].double() - mean) / std  # the injected noise
                assert z.abs().max() > 1e-3 and z.abs().max() < 6
                j = traj.sde_steps.index(k)
                ref = ref_gaussian_log_prob(traj.latents[k + 1].double(), mean, std)
                torch.testing.assert_close(traj.log_probs[:, j].double(), ref, rtol=1e-5, atol=1e-5)
            else:
                torch.testing.assert_close(traj.latents[k + 1], x + (tn - t) * v, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "dtype", "window"),
    [
        ("flow_sde", torch.float32, None),
        ("cps", torch.float32, range(5)),
        ("flow_sde", torch.bfloat16, [0, 2]),
    ],
)
def test_on_policy_ratio_is_one(kind, dtype, window):
    net = _net(1)

    def fn(x, t):
        return net(x.float(), t).to(x.dtype)

    x_T = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(2)).to(dtype)
    traj = sample_with_logprobs(
        fn,
        x_T,
        rollout_timesteps(6, shift=2.0),
        noise_level=0.8 if kind == "cps" else 0.7,
        kind=kind,
        sde_window=window,
        generator=torch.Generator().manual_seed(3),
    )
    ratio = check_on_policy_ratio(fn, traj)
    assert ratio.shape == traj.log_probs.shape and traj.log_probs.dtype == torch.float32
    # With gradients enabled (the training path) the ratio is still 1, and gradients flow.
    for j in range(len(traj.sde_steps)):
        out = transition_log_prob(fn, traj, j)
        assert out.log_prob.requires_grad
        assert (torch.exp(out.log_prob - traj.log_probs[:, j]) - 1).abs().max() <= 1e-6


def test_on_policy_check_catches_a_changed_or_stochastic_model():
    net = _net(2)
    x_T = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(4))
    traj = sample_with_logprobs(
        net, x_T, rollout_timesteps(4), noise_level=0.7, generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        net.lin.bias.add_(0.05)
    with pytest.raises(RuntimeError, match="on-policy ratio"):
        check_on_policy_ratio(net, traj)
    noisy = _net(2, p_drop=0.5).train()
    traj = sample_with_logprobs(
        noisy,
        x_T,
        rollout_timesteps(4),
        noise_level=0.7,
        generator=torch.Generator().manual_seed(5),
    )
    with pytest.raises(RuntimeError, match="eval mode"):
        check_on_policy_ratio(noisy, traj)


def test_cfg_rollout_applies_guidance_and_its_ratio_is_one():
    cond, uncond = _net(3), _net(4)
    x_T = torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(6))
    ts = rollout_timesteps(3)
    traj = sample_with_logprobs(
        cond, x_T, ts, noise_level=0.7, sde_window=[], guidance_scale=4.5, uncond_fn=uncond
    )
    assert traj.log_probs.shape == (2, 0)
    with torch.no_grad():
        x = x_T
        for k in range(3):
            t = ts[k].expand(2)
            vu = uncond(x, t)
            x = x + (ts[k + 1] - ts[k]) * (vu + 4.5 * (cond(x, t) - vu))
    torch.testing.assert_close(traj.latents[-1], x, rtol=0, atol=1e-6)
    traj = sample_with_logprobs(
        cond, x_T, ts, noise_level=0.7, guidance_scale=4.5, uncond_fn=uncond
    )
    check_on_policy_ratio(cond, traj, guidance_scale=4.5, uncond_fn=uncond)
    with pytest.raises(RuntimeError):  # scoring without the rollout's guidance is off-policy
        check_on_policy_ratio(cond, traj)


def test_rollouts_are_deterministic_given_the_generator():
    net = _net(5)
    x_T = torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(7))
    a, b = (
        sample_with_logprobs(
            net,
            x_T,
            rollout_timesteps(4),
            noise_level=0.7,
            generator=torch.Generator().manual_seed(8),
        )
        for _ in range(2)
    )
    c = sample_with_logprobs(
        net, x_T, rollout_timesteps(4), noise_level=0.7, generator=torch.Generator().manual_seed(9)
    )
    assert torch.equal(a.latents, b.latents) and torch.equal(a.log_probs, b.log_probs)
    assert not torch.equal(a.latents[-1], c.latents[-1])


def test_bad_rollout_inputs_raise_clear_errors():
    net, x_T = _net(), torch.randn(2, 2, 4)
    ts = rollout_timesteps(4)
    with pytest.raises(ValueError, match="decrease"):
        sample_with_logprobs(net, x_T, ts.flip(0), noise_level=0.7)
    with pytest.raises(ValueError, match="sde_window"):
        sample_with_logprobs(net, x_T, ts, noise_level=0.7, sde_window=[4])
    with pytest.raises(ValueError, match="sde_window"):
        sample_with_logprobs(net, x_T, ts, noise_level=0.7, sde_window=[1, 1])
    with pytest.raises(ValueError, match="drop step 3"):
        sample_with_logprobs(net, x_T, ts, noise_level=0.8, kind="cps")
    with pytest.raises(ValueError, match="uncond_fn"):
        sample_with_logprobs(net, x_T, ts, noise_level=0.7, guidance_scale=3.0)
    with pytest.raises(ValueError, match="uncond_fn"):
        sample_with_logprobs(net, x_T, ts, noise_level=0.7, uncond_fn=net)
    with pytest.raises(ValueError, match="num_tokens"):
        rollout_timesteps(4, schedule=ShiftSchedule(kind="sd3"))


def test_rollout_timesteps_use_the_k2_dit_shift():
    torch.testing.assert_close(rollout_timesteps(10, shift=3.0), sampling_timesteps(10, shift=3.0))
    sched = ShiftSchedule(kind="sd3", shift=1.0, base_tokens=256)
    torch.testing.assert_close(
        rollout_timesteps(10, schedule=sched, num_tokens=1024), sampling_timesteps(10, shift=2.0)
    )


def test_sde_windows():
    starts = [
        sliding_sde_window(10, size=4, iteration=i, shift_every=25)[0] for i in range(0, 200, 25)
    ]
    assert starts == [0, 1, 2, 3, 4, 5, 6, 0]  # slides to num_steps - size, then rolls back
    assert sliding_sde_window(10, size=4, iteration=60, shift_every=25, stride=2) == range(4, 8)
    ws = [
        random_sde_window(10, size=3, high=5, generator=torch.Generator().manual_seed(s))
        for s in range(40)
    ]
    assert {w.start for w in ws} == {0, 1, 2} and all(len(w) == 3 for w in ws)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert random_sde_window(10, size=2, generator=g1) == random_sde_window(
        10, size=2, generator=g2
    )
    with pytest.raises(ValueError, match="size"):
        sliding_sde_window(4, size=5, iteration=0, shift_every=1)
    with pytest.raises(ValueError, match="high"):
        random_sde_window(10, size=3, low=4, high=5)
