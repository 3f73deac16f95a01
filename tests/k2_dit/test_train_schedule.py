"""WSD learning-rate schedule against the plain piecewise formula."""

from __future__ import annotations

import itertools
import math

import jaxtyping
import pytest
import torch

from k2_dit.train import wsd_phase_steps, wsd_schedule


def _expected_factor(step, *, warmup, stable, decay, kind, floor):
    # Warmup: linear from floor to 1. Stable: 1. Decay: from 1 to floor. After: floor.
    if step < warmup:
        return floor + (1 - floor) * step / warmup
    if step < warmup + stable:
        return 1.0
    if step < warmup + stable + decay:
        p = (step - warmup - stable) / decay
        shape = {
            "linear": 1 - p,
            "cosine": (1 + math.cos(math.pi * p)) / 2,
            "1-sqrt": 1 - math.sqrt(p),
        }[kind]
        return floor + (1 - floor) * shape
    return floor


@pytest.mark.parametrize("kind", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_lr_curve_matches_formula(kind, floor):
    base_lr, warmup, total, frac = 0.3, 10, 100, 0.25
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = wsd_schedule(
        opt,
        warmup_steps=warmup,
        total_steps=total,
        decay_fraction=frac,
        decay_type=kind,
        min_lr_ratio=floor,
    )
    lrs = []
    for _ in range(total + 5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [
        base_lr * _expected_factor(s, warmup=10, stable=65, decay=25, kind=kind, floor=floor)
        for s in range(total + 5)
    ]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert max(lrs) == pytest.approx(base_lr) and lrs[-1] == pytest.approx(base_lr * floor)
    decay_part = lrs[75:101]
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(decay_part))


def test_phase_split_and_validation():
    assert wsd_phase_steps(warmup_steps=100, total_steps=1000, decay_fraction=0.2) == (
        100,
        700,
        200,
    )
    assert wsd_phase_steps(warmup_steps=0, total_steps=7, decay_fraction=0.0) == (0, 7, 0)
    with pytest.raises(ValueError, match="exceed total_steps"):
        wsd_phase_steps(warmup_steps=900, total_steps=1000, decay_fraction=0.2)
    with pytest.raises(ValueError, match="decay_fraction"):
        wsd_phase_steps(warmup_steps=0, total_steps=10, decay_fraction=1.5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    # The Literal annotation is enforced by the test-time type checker; without it the
    # function raises ValueError itself. Either way the message names the argument.
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="decay_type"):
        wsd_schedule(opt, warmup_steps=1, total_steps=10, decay_type="exp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_lr_ratio"):
        wsd_schedule(opt, warmup_steps=1, total_steps=10, min_lr_ratio=2.0)
