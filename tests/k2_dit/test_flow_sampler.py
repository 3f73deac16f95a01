"""Euler sampler: exactness on a point mass, convergence on Gaussian data, batched CFG."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from k2_dit.flow import euler_sample, interpolate, sample_trajectory, sampling_timesteps


def _point_mass_velocity(c: torch.Tensor):
    # Data = a single point c: x_t = (1 - t) c + t eps gives E[eps - x0 | x_t] = (x_t - c) / t.
    def v(x, t, cond):
        return (x - c) / t.reshape(-1, *([1] * (x.ndim - 1)))

    return v


def _gaussian_velocity(mu: float, sigma: float):
    # x0 ~ N(mu, sigma^2), eps ~ N(0, 1): v(x, t) = E[eps - x0 | x_t = x]
    #   = -mu + Cov(eps - x0, x_t) / Var(x_t) * (x - E x_t)
    #   with Cov = t - (1 - t) sigma^2, Var = (1 - t)^2 sigma^2 + t^2, E x_t = (1 - t) mu.
    def v(x, t, cond):
        t = t.reshape(-1, *([1] * (x.ndim - 1))).double()
        var = (1 - t) ** 2 * sigma**2 + t**2
        cov = t - (1 - t) * sigma**2
        return -mu + cov / var * (x - (1 - t) * mu)

    return v


@pytest.mark.parametrize(("steps", "shift"), [(1, 1.0), (4, 3.0), (13, 0.5)])
def test_point_mass_is_reached_exactly_on_the_straight_path(steps, shift):
    g = torch.Generator().manual_seed(0)
    c = torch.randn(1, 3, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    out = euler_sample(_point_mass_velocity(c), noise, steps=steps, shift=shift)
    torch.testing.assert_close(out, c.expand_as(out), rtol=0, atol=1e-12)
    states, times = sample_trajectory(_point_mass_velocity(c), noise, steps=steps, shift=shift)
    assert states.shape == (steps + 1, 5, 3, 4) and times.shape == (steps + 1,)
    torch.testing.assert_close(times, sampling_timesteps(steps, shift=shift, dtype=torch.float64))
    for k in range(steps + 1):
        expected = interpolate(c.expand_as(noise), noise, times[k].expand(5))
        torch.testing.assert_close(states[k], expected, rtol=0, atol=1e-12)


def test_gaussian_data_converges_at_first_order():
    mu, sigma = 1.5, 0.5
    noise = torch.randn(256, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # The exact flow map of this 1-D Gaussian transport is the monotone affine map.
    exact = mu + sigma * noise
    errs = []
    for steps in (16, 32, 64, 128, 256):
        out = euler_sample(_gaussian_velocity(mu, sigma), noise, steps=steps, shift=2.0)
        errs.append(float((out - exact).abs().max()))
    assert errs[-1] < 0.02
    for coarse, fine in itertools.pairwise(errs):
        assert 0.4 < fine / coarse < 0.6  # Euler is first order: halving dt halves the error


def _cond_velocity(x, t, cond):
    # A non-linear function of x, t and a dict/tuple condition, per sample.
    emb, (scale, bias) = cond["emb"], cond["pair"]
    tt = t.reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(x * scale[:, :, None]) * (1 + tt) + emb[:, :, None] * tt + bias[:, None, None]


def _conditions(b: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return {
        "emb": torch.randn(b, 3, generator=g, dtype=torch.float64),
        "pair": (
            torch.rand(b, 3, generator=g, dtype=torch.float64),
            torch.randn(b, generator=g, dtype=torch.float64),
        ),
    }


def _manual_euler(noise, steps, shift, fn):
    # Independent loop: uniform grid, shift written out, Euler update in float64.
    x = noise.clone()
    for k in range(steps):
        t0, t1 = 1 - k / steps, 1 - (k + 1) / steps
        t0, t1 = shift * t0 / (1 + (shift - 1) * t0), shift * t1 / (1 + (shift - 1) * t1)
        x = x + (t1 - t0) * fn(x, torch.full((len(x),), t0, dtype=x.dtype))
    return x


def test_cfg_is_one_batched_call_equal_to_two_call_combination():
    b, steps, shift, scale = 3, 6, 2.0, 4.5
    cond, uncond = _conditions(b, 2), _conditions(b, 3)
    noise = torch.randn(b, 3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    seen = []

    def fn(x, t, c):
        seen.append((x.shape[0], t.shape[0]))
        return _cond_velocity(x, t, c)

    out = euler_sample(
        fn, noise, steps=steps, shift=shift, guidance_scale=scale, cond=cond, uncond=uncond
    )
    assert seen == [(2 * b, 2 * b)] * steps

    def guided(x, t):
        vc, vu = _cond_velocity(x, t, cond), _cond_velocity(x, t, uncond)
        return vu + scale * (vc - vu)

    torch.testing.assert_close(out, _manual_euler(noise, steps, shift, guided))


def test_guidance_one_is_conditional_only_and_ignores_uncond():
    b, steps = 2, 5
    cond, uncond = _conditions(b, 5), _conditions(b, 6)
    noise = torch.randn(b, 3, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    calls = []

    def fn(x, t, c):
        calls.append(c)
        return _cond_velocity(x, t, c)

    out = euler_sample(fn, noise, steps=steps, shift=1.5, cond=cond, uncond=uncond)
    assert len(calls) == steps and all(c is cond for c in calls)
    ref = _manual_euler(noise, steps, 1.5, lambda x, t: _cond_velocity(x, t, cond))
    torch.testing.assert_close(out, ref)


def test_cfg_with_plain_tensor_conditions_and_zero_scale_is_unconditional():
    b = 2
    noise = torch.randn(b, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    cond, uncond = (
        torch.full((b, 4), 2.0, dtype=torch.float64),
        torch.full((b, 4), -1.0, dtype=torch.float64),
    )
    fn = lambda x, t, c: c - x * t[:, None]  # noqa: E731
    out = euler_sample(fn, noise, steps=4, guidance_scale=0.0, cond=cond, uncond=uncond)
    ref = euler_sample(fn, noise, steps=4, cond=uncond)
    torch.testing.assert_close(out, ref)


def test_callback_sees_each_step_and_low_precision_state():
    seen = []
    dtypes = []
    noise = torch.randn(2, 8, dtype=torch.bfloat16)

    def fn(x, t, c):
        dtypes.append((x.dtype, t.dtype))
        return -x

    out = euler_sample(
        fn, noise, steps=3, shift=3.0, callback=lambda i, t, x: seen.append((i, float(t)))
    )
    grid = sampling_timesteps(3, shift=3.0)
    assert [i for i, _ in seen] == [0, 1, 2]
    assert [t for _, t in seen] == pytest.approx(grid[1:].tolist())
    assert dtypes == [(torch.bfloat16, torch.float32)] * 3 and out.dtype == torch.bfloat16
    # v = -x: each Euler step multiplies x by (1 - dt); the float32 state keeps the product exact-ish.
    factor = math.prod(1 - float(grid[k + 1] - grid[k]) for k in range(3))
    torch.testing.assert_close(
        out.float(), (noise.float() * factor).bfloat16().float(), rtol=1e-2, atol=1e-2
    )


def test_sampler_errors_are_explicit():
    noise = torch.randn(2, 3)
    fn = lambda x, t, c: x  # noqa: E731
    with pytest.raises(ValueError, match="uncond"):
        euler_sample(fn, noise, steps=2, guidance_scale=3.0, cond=torch.zeros(2, 1))
    with pytest.raises(ValueError, match="steps"):
        euler_sample(fn, noise, steps=0)
    with pytest.raises(ValueError, match="different keys"):
        euler_sample(
            fn,
            noise,
            steps=1,
            guidance_scale=2.0,
            cond={"a": torch.zeros(2)},
            uncond={"b": torch.zeros(2)},
        )
    with pytest.raises(ValueError, match="must match"):
        euler_sample(
            fn,
            noise,
            steps=1,
            guidance_scale=2.0,
            cond=(torch.zeros(2),),
            uncond=(torch.zeros(2), torch.zeros(2)),
        )
    with pytest.raises(TypeError, match="cannot batch"):
        euler_sample(
            fn, noise, steps=1, guidance_scale=2.0, cond=torch.zeros(2), uncond=[torch.zeros(2)]
        )
