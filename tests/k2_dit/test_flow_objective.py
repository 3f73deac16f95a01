"""Rectified-flow interpolation, velocity target and per-sample loss against float64 formulas."""

from __future__ import annotations

import jaxtyping
import pytest
import torch

from k2_dit.flow import interpolate, rectified_flow_loss, velocity_target


def _ref_interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # x_t = (1 - t) x0 + t eps, sample by sample and element by element.
    out = torch.empty_like(x0, dtype=torch.float64)
    flat_x, flat_n, flat_o = (
        x0.reshape(len(x0), -1),
        noise.reshape(len(x0), -1),
        out.view(len(x0), -1),
    )
    for i in range(len(x0)):
        ti = float(t[i])
        for j in range(flat_x.shape[1]):
            flat_o[i, j] = (1.0 - ti) * float(flat_x[i, j]) + ti * float(flat_n[i, j])
    return out


def _ref_loss(pred, x0, noise, weight=None):
    b = len(x0)
    p, x, n = (a.reshape(b, -1).double() for a in (pred, x0, noise))
    out = []
    for i in range(b):
        total = 0.0
        for j in range(p.shape[1]):
            total += (float(p[i, j]) - (float(n[i, j]) - float(x[i, j]))) ** 2
        li = total / p.shape[1]
        out.append(li * (1.0 if weight is None else float(weight[i])))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2, 2), (2, 5, 3)])
def test_interpolate_matches_reference(shape):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.rand(shape[0], generator=g, dtype=torch.float64)
    torch.testing.assert_close(interpolate(x0, noise, t), _ref_interpolate(x0, noise, t))


def test_interpolate_endpoints_follow_convention():
    # t = 0 is data, t = 1 is noise.
    x0, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(interpolate(x0, noise, torch.zeros(2)), x0)
    torch.testing.assert_close(interpolate(x0, noise, torch.ones(2)), noise)


def test_velocity_target_is_time_derivative_of_path():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    t = torch.rand(3, generator=g, dtype=torch.float64)
    # Directional derivative of x_t along t via autograd, per sample.
    _, jvp = torch.autograd.functional.jvp(
        lambda tt: interpolate(x0, noise, tt), (t,), (torch.ones_like(t),)
    )
    torch.testing.assert_close(jvp, velocity_target(x0, noise))
    torch.testing.assert_close(velocity_target(x0, noise), noise - x0)


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_matches_reference_and_is_per_sample(weighted):
    g = torch.Generator().manual_seed(2)
    pred, x0, noise = (torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    weight = torch.rand(4, generator=g, dtype=torch.float64) if weighted else None
    loss = rectified_flow_loss(pred, x0, noise, weight=weight)
    assert loss.shape == (4,)
    torch.testing.assert_close(loss, _ref_loss(pred, x0, noise, weight))


def test_loss_is_zero_at_true_velocity_and_positive_elsewhere():
    x0, noise = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.equal(rectified_flow_loss(noise - x0, x0, noise), torch.zeros(3))
    assert (rectified_flow_loss(noise - x0 + 0.1, x0, noise) > 0).all()


def test_gradcheck_interpolate_and_loss():
    g = torch.Generator().manual_seed(3)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)  # noqa: E731
    x0, noise, pred = mk(2, 3, 2), mk(2, 3, 2), mk(2, 3, 2)
    t = torch.rand(2, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(interpolate, (x0, noise, t))
    assert torch.autograd.gradcheck(
        lambda p, a, n, ww: rectified_flow_loss(p, a, n, weight=ww), (pred, x0, noise, w)
    )


def test_shape_contract_is_checked():
    # noise of shape [b, 1] would silently broadcast against x0 [b, 3]; the annotations forbid it.
    with pytest.raises(jaxtyping.TypeCheckError):
        interpolate(torch.randn(2, 3), torch.randn(2, 1), torch.rand(2))
    with pytest.raises(jaxtyping.TypeCheckError):
        rectified_flow_loss(
            torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), weight=torch.rand(3)
        )
