"""Logit-normal timesteps, the resolution shift and per-resolution shift rules.

The central property: training times and the sampling grid are shifted by one function, and
the shifted training distribution is exactly logit-normal(mean + ln s, std).
"""

from __future__ import annotations

import math

import pytest
import torch

from k2_dit.config import ConfigError
from k2_dit.flow import (
    ShiftSchedule,
    flux_shift,
    logit_normal_timesteps,
    sampling_timesteps,
    sd3_shift,
    shift_timesteps,
    shifted_logit_normal_timesteps,
)

N_KS = 20_000
KS_CRIT_1PCT = 1.628 / math.sqrt(N_KS)  # Kolmogorov distribution, alpha = 0.01


def _logit(t: torch.Tensor) -> torch.Tensor:
    return torch.log(t) - torch.log1p(-t)


def _logit_normal_cdf(t: float, mean: float, std: float) -> float:
    z = (math.log(t) - math.log1p(-t) - mean) / std
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _ks_statistic(samples: torch.Tensor, cdf) -> float:
    # sup_x |F_n(x) - F(x)|, checked on both sides of each jump of the empirical CDF.
    xs = sorted(float(v) for v in samples.double())
    n = len(xs)
    d = 0.0
    for i, x in enumerate(xs):
        f = cdf(x)
        d = max(d, (i + 1) / n - f, f - i / n)
    return d


def _flux_time_shift(mu: float, t: float) -> float:
    # FLUX's form of the shift (sigma = 1): e^mu / (e^mu + (1/t - 1)).
    return math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))


# --- shift_timesteps -------------------------------------------------------------------


@pytest.mark.parametrize("s", [0.3, 1.0, 1.65, 3.0, 10.0])
def test_shift_matches_flux_form_and_logit_identity(s):
    t = torch.linspace(0.001, 0.999, 97, dtype=torch.float64)
    out = shift_timesteps(t, s)
    ref = torch.tensor([_flux_time_shift(math.log(s), float(v)) for v in t], dtype=torch.float64)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(_logit(out), _logit(t) + math.log(s))


def test_shift_fixes_endpoints_is_monotone_and_composes():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for s in (0.5, 2.0, 3.16):
        out = shift_timesteps(t, s)
        assert out[0] == 0 and out[-1] == 1
        assert (out.diff() > 0).all()
        assert (out[1:-1] > t[1:-1]).all() if s > 1 else (out[1:-1] < t[1:-1]).all()
    torch.testing.assert_close(shift_timesteps(t, 1.0), t)
    torch.testing.assert_close(
        shift_timesteps(shift_timesteps(t, 2.0), 1.5), shift_timesteps(t, 3.0)
    )
    torch.testing.assert_close(shift_timesteps(shift_timesteps(t, 4.0), 0.25), t)


def test_shift_accepts_per_sample_tensor_and_gradchecks():
    t = torch.rand(5, dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.5, 1.0, 2.0, 3.0, 6.0], dtype=torch.float64, requires_grad=True)
    per_sample = shift_timesteps(t, s).detach()
    for i, si in enumerate([0.5, 1.0, 2.0, 3.0, 6.0]):
        torch.testing.assert_close(per_sample[i], shift_timesteps(t.detach()[i : i + 1], si)[0])
    assert torch.autograd.gradcheck(shift_timesteps, (t, s))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_shift_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="shift"):
        shift_timesteps(torch.rand(3), bad)
    with pytest.raises(ValueError, match="shift"):
        shifted_logit_normal_timesteps(3, shift=bad)
    with pytest.raises(ValueError, match="shift"):
        sampling_timesteps(4, shift=bad)


# --- logit-normal sampling -----------------------------------------------------------


def test_logit_normal_moments_and_ks():
    g = torch.Generator().manual_seed(0)
    t = logit_normal_timesteps(N_KS, mean=0.3, std=0.8, generator=g, dtype=torch.float64)
    assert t.shape == (N_KS,) and ((t > 0) & (t < 1)).all()
    u = _logit(t)
    assert abs(float(u.mean()) - 0.3) < 4 * 0.8 / math.sqrt(N_KS)
    assert abs(float(u.std()) - 0.8) < 0.03
    assert _ks_statistic(t, lambda x: _logit_normal_cdf(x, 0.3, 0.8)) < KS_CRIT_1PCT


def test_logit_normal_dtype_device_and_validation():
    t = logit_normal_timesteps(4, device="cpu", dtype=torch.float64)
    assert t.dtype == torch.float64 and t.device.type == "cpu"
    with pytest.raises(ValueError, match="std"):
        logit_normal_timesteps(4, std=0.0)
    with pytest.raises(ValueError, match="n="):
        logit_normal_timesteps(-1)


@pytest.mark.parametrize("s", [1.0, 3.0])
def test_training_and_inference_apply_the_same_shift(s):
    # Training: the shifted sampler is the pushforward of the unshifted one (same stream).
    a = shifted_logit_normal_timesteps(
        1000, shift=s, mean=-0.2, std=1.1, generator=torch.Generator().manual_seed(5)
    )
    b = logit_normal_timesteps(1000, mean=-0.2, std=1.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, shift_timesteps(b, s))
    # Inference: the sampling grid is the same function applied to the uniform grid.
    steps = 28
    grid = sampling_timesteps(steps, shift=s, dtype=torch.float64)
    assert torch.equal(
        grid, shift_timesteps(torch.linspace(1, 0, steps + 1, dtype=torch.float64), s)
    )
    uniform = torch.tensor([1 - k / steps for k in range(steps + 1)], dtype=torch.float64)
    torch.testing.assert_close(grid, shift_timesteps(uniform, s))
    assert grid[0] == 1 and grid[-1] == 0 and (grid.diff() < 0).all()


@pytest.mark.parametrize(("mean", "std", "s"), [(0.0, 1.0, 3.0), (0.5, 0.7, 1.8)])
def test_shifted_samples_follow_logit_normal_with_shifted_mean(mean, std, s):
    g = torch.Generator().manual_seed(11)
    t = shifted_logit_normal_timesteps(
        N_KS, shift=s, mean=mean, std=std, generator=g, dtype=torch.float64
    )
    d_shifted = _ks_statistic(t, lambda x: _logit_normal_cdf(x, mean + math.log(s), std))
    assert d_shifted < KS_CRIT_1PCT
    # Power: the same samples are far from the unshifted distribution.
    d_unshifted = _ks_statistic(t, lambda x: _logit_normal_cdf(x, mean, std))
    assert d_unshifted > 5 * KS_CRIT_1PCT


# --- per-resolution rules --------------------------------------------------------------


def test_sd3_shift_is_sqrt_of_token_ratio():
    assert sd3_shift(1024, base_tokens=256) == pytest.approx(2.0)
    assert sd3_shift(4096, base_tokens=256) == pytest.approx(4.0)
    assert sd3_shift(4096, base_tokens=1024, base_shift=1.5) == pytest.approx(3.0)
    assert sd3_shift(64, base_tokens=256) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="num_tokens"):
        sd3_shift(0, base_tokens=256)
    with pytest.raises(ValueError, match="base_shift"):
        sd3_shift(16, base_tokens=256, base_shift=-1.0)


def test_flux_shift_matches_published_values_and_line():
    # f16 latents: 256px -> 256 tokens, 512px -> 1024, 1024px -> 4096. FLUX mu runs 0.5 -> 1.15.
    assert flux_shift(256) == pytest.approx(math.exp(0.5))
    assert flux_shift(4096) == pytest.approx(math.exp(1.15))
    assert flux_shift(1024) == pytest.approx(1.88, abs=0.005)  # quoted as ~1.8-1.88 by users
    assert flux_shift(4096) == pytest.approx(3.16, abs=0.005)
    mus = [math.log(flux_shift(n)) for n in (256, 1000, 2500, 4096, 8192)]
    slopes = [
        (mus[i + 1] - mus[i]) / (n1 - n0)
        for i, (n0, n1) in enumerate(
            zip((256, 1000, 2500, 4096), (1000, 2500, 4096, 8192), strict=True)
        )
    ]
    assert max(slopes) == pytest.approx(min(slopes))  # mu is linear, extrapolated beyond 4096
    with pytest.raises(ValueError, match="differ"):
        flux_shift(300, base_tokens=256, max_tokens=256)


def test_shift_schedule_kinds():
    assert ShiftSchedule(shift=2.5).shift_for(123) == 2.5
    sd3 = ShiftSchedule(kind="sd3", shift=1.5, base_tokens=256)
    assert sd3.shift_for(1024) == pytest.approx(3.0)
    flux = ShiftSchedule(kind="flux")
    assert flux.shift_for(4096) == pytest.approx(math.exp(1.15))
    custom = ShiftSchedule(kind="flux", base_tokens=100, max_tokens=200, base_mu=0.0, max_mu=1.0)
    assert custom.shift_for(150) == pytest.approx(math.exp(0.5))


def test_shift_schedule_table_exact_interpolated_and_clamped():
    table = ShiftSchedule(kind="table", table=((4096, 4.0), (256, 1.0), (1024, 2.5)))
    assert table.shift_for(1024) == 2.5  # exact entry wins
    assert table.shift_for(16) == 1.0  # below the table: nearest end
    assert table.shift_for(100_000) == 4.0  # above the table: nearest end
    # Between entries ln(s) is linear in ln(tokens), so a table sampled from the SD3 rule
    # (s proportional to sqrt(tokens)) reproduces it at every size in between.
    sd3_table = ShiftSchedule(kind="table", table=((256, 1.0), (4096, 4.0)))
    for n in (300, 777, 1024, 2048, 4000):
        assert sd3_table.shift_for(n) == pytest.approx(math.sqrt(n / 256))
    lo, hi = table.shift_for(300), table.shift_for(900)
    assert 1.0 < lo < hi < 2.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shift": 0.0}, "shift"),
        ({"shift": -2.0}, "shift"),
        ({"kind": "sd3", "base_tokens": 0}, "base_tokens"),
        ({"kind": "table"}, "non-empty table"),
        ({"kind": "table", "table": ((256, 1.0), (256, 2.0))}, "repeated"),
        ({"kind": "table", "table": ((256, 0.0),)}, "shift"),
        ({"kind": "table", "table": ((0, 1.0),)}, "num_tokens"),
        ({"kind": "constant", "table": ((256, 1.0),)}, "kind='table'"),
        ({"kind": "flux", "max_tokens": 256}, "max_tokens"),
    ],
)
def test_shift_schedule_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ShiftSchedule(**kwargs)
