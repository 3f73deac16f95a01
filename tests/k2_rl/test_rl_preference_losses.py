"""Preference losses (Flow-DPO, DPOP, RPO, SDPO, STPO-A/C) against float64 transcriptions."""

from __future__ import annotations

import contextlib
import math

import jaxtyping
import pytest
import torch

from k2_rl.preference import (
    LOSSES,
    dpop_loss,
    flow_dpo_loss,
    flow_elbo_weight,
    flow_matching_errors,
    preference_loss,
    rpo_loss,
    scale_gradient,
    sdpo_loser_scale,
    sdpo_loss,
    stpo_a_loss,
    stpo_c_loss,
    timestep_beta,
)

# ----------------------------------------------------------------------------------------
# Plain float64 transcriptions of the equations (rl.md §1.2, §1.3, §1.5), one pair at a time.


def _neg_log_sigmoid(z: float) -> float:
    # -log σ(z) = log(1 + e^{-z}), written stably.
    return max(-z, 0.0) + math.log1p(math.exp(-abs(z)))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _ref_beta(t: float | None, beta: float, schedule: str) -> float:
    if schedule == "constant":
        return beta
    tt = min(max(t, 1e-3), 1.0)
    return beta * (1.0 - tt) / tt


def _ref_loss(kind: str, pw, pl, rw, rl, beta_t, **o) -> float:
    s = beta_t / 2.0
    dw, dl = pw - rw, pl - rl
    if kind in ("dpo", "sdpo"):
        return _neg_log_sigmoid(-s * (dw - dl))
    if kind == "dpop":
        return _neg_log_sigmoid(-s * (dw - dl) - o.get("dpop_lambda", 50.0) * s * max(0.0, dw))
    if kind == "rpo":
        return _neg_log_sigmoid(-s * (dw - dl)) + o.get("sft_alpha", 1.0) * pw
    if kind == "stpo_a":
        tau = o.get("tau") or (2.0 / s if s > 0 else math.inf)  # β(1) = 0 under flow_elbo
        lam, alpha = o.get("dpop_lambda", 50.0), o.get("alpha", 1.0)
        z = -s * (dw - min(dl, tau)) - lam * s * max(0.0, dw)
        aux = pw if o.get("anchor", "hinge") == "sft" else max(0.0, dw)
        return _neg_log_sigmoid(z) + alpha * aux
    if kind == "stpo_c":
        alpha, m = o.get("alpha", 1.0), 1.0 / (2.0 * o.get("cal_beta", 0.5))
        hw, hl = -s * dw, -s * dl
        return _neg_log_sigmoid(hw - hl) + alpha * ((hw - m) ** 2 + (hl + m) ** 2)
    raise AssertionError(kind)


CASES = [
    ("dpo", {}),
    ("dpop", {}),
    ("dpop", {"dpop_lambda": 3.0}),
    ("rpo", {}),
    ("rpo", {"sft_alpha": 0.25}),
    ("stpo_a", {}),
    ("stpo_a", {"tau": 0.01, "dpop_lambda": 2.0, "alpha": 0.5}),
    ("stpo_a", {"anchor": "sft", "alpha": 2.0}),
    ("stpo_c", {}),
    ("stpo_c", {"alpha": 0.3, "cal_beta": 0.1}),
]
FUNCS = {
    "dpo": flow_dpo_loss,
    "dpop": dpop_loss,
    "rpo": rpo_loss,
    "sdpo": sdpo_loss,
    "stpo_a": stpo_a_loss,
    "stpo_c": stpo_c_loss,
}


def _errors(b: int, seed: int, *, spread: float = 0.02, dtype=torch.float64):
    # Reference errors near 1 and policy errors a few 1e-2 away, so s·Δ is O(1) at β = 200.
    g = torch.Generator().manual_seed(seed)
    rw = 0.5 + torch.rand(b, generator=g, dtype=dtype)
    rl = 0.5 + torch.rand(b, generator=g, dtype=dtype)
    pw = rw + spread * torch.randn(b, generator=g, dtype=dtype)
    pl = rl + spread * torch.randn(b, generator=g, dtype=dtype)
    return pw, pl, rw, rl


@contextlib.contextmanager
def _no_jaxtyping():
    # The test-time shape checks fire before the library's own ValueErrors; switch them
    # off to check the messages users get in production.
    old = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", old)


# ----------------------------------------------------------------------------------------
# Values against the transcriptions


@pytest.mark.parametrize(("kind", "opts"), CASES)
@pytest.mark.parametrize("schedule", ["constant", "flow_elbo"])
def test_loss_matches_float64_reference(kind, opts, schedule):
    pw, pl, rw, rl = _errors(6, seed=1)
    t = torch.tensor([0.0005, 0.1, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
    beta = 200.0
    out = preference_loss(
        pw, pl, rw, rl, loss_type=kind, beta=beta, t=t, beta_schedule=schedule, **opts
    )
    direct = FUNCS[kind](pw, pl, rw, rl, beta=beta, t=t, beta_schedule=schedule, **opts)
    expected = [
        _ref_loss(
            kind,
            *(float(x[i]) for x in (pw, pl, rw, rl)),
            _ref_beta(float(t[i]), beta, schedule),
            **opts,
        )
        for i in range(6)
    ]
    torch.testing.assert_close(out.loss, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(direct.loss, out.loss)


def test_diagnostics_match_definitions():
    pw, pl, rw, rl = _errors(5, seed=2)
    out = stpo_a_loss(pw, pl, rw, rl, beta=300.0)
    for i in range(5):
        dw, dl = float(pw[i] - rw[i]), float(pl[i] - rl[i])
        assert out.delta_w[i].item() == pytest.approx(dw, abs=1e-12)
        assert out.delta_l[i].item() == pytest.approx(dl, abs=1e-12)
        assert out.reward_w[i].item() == pytest.approx(-150.0 * dw)
        assert out.reward_l[i].item() == pytest.approx(-150.0 * dl)
        assert out.margin[i].item() == pytest.approx(-150.0 * (dw - dl))
        assert out.accuracy[i].item() == (1.0 if dw < dl else 0.0)
        assert out.beta_t[i].item() == 300.0
    assert not any(x.requires_grad for x in (out.delta_w, out.delta_l, out.margin, out.accuracy))
    metrics = out.metrics()
    assert metrics["accuracy"].item() == pytest.approx(float((pw - rw < pl - rl).double().mean()))
    assert metrics["loss"].item() == pytest.approx(float(out.loss.mean()))


def test_low_precision_errors_are_computed_in_float32():
    pw, pl, rw, rl = _errors(4, seed=3, dtype=torch.float32)
    half = [x.to(torch.bfloat16) for x in (pw, pl, rw, rl)]
    out = flow_dpo_loss(*half, beta=200.0)
    assert out.loss.dtype == torch.float32
    upcast = flow_dpo_loss(*(x.float() for x in half), beta=200.0)
    torch.testing.assert_close(out.loss, upcast.loss)


# ----------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize(("kind", "opts"), CASES)
def test_gradcheck_every_loss(kind, opts):
    pw, pl, rw, rl = (x.clone().requires_grad_() for x in _errors(4, seed=4))
    t = torch.tensor([0.2, 0.4, 0.6, 0.9], dtype=torch.float64)
    fn = FUNCS[kind]
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: fn(a, b, c, d, beta=200.0, t=t, beta_schedule="flow_elbo", **opts).loss,
        (pw, pl, rw, rl),
    )


def test_gradcheck_sdpo():
    pw, pl, rw, rl = (x.clone().requires_grad_() for x in _errors(4, seed=5))
    # λ = 1 is plain Flow-DPO: every input's gradient is the true one.
    ones = torch.ones(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b, c, d: sdpo_loss(a, b, c, d, beta=200.0, loser_scale=ones).loss,
        (pw, pl, rw, rl),
    )
    # λ < 1 changes only the policy-loser gradient, so the other three stay exact.
    lam = torch.tensor([0.1, 0.5, 0.9, 0.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, c, d: sdpo_loss(a, pl.detach(), c, d, beta=200.0, loser_scale=lam).loss,
        (pw, rw, rl),
    )


def test_gradcheck_flow_matching_errors():
    g = torch.Generator().manual_seed(6)
    pred = torch.randn(3, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(flow_matching_errors, (pred, target))


def test_flow_matching_errors_match_loop():
    g = torch.Generator().manual_seed(7)
    pred, target = (torch.randn(3, 2, 5, generator=g, dtype=torch.float64) for _ in range(2))
    expected = []
    for i in range(3):
        vals = [
            (float(pred[i, a, c]) - float(target[i, a, c])) ** 2 for a in range(2) for c in range(5)
        ]
        expected.append(sum(vals) / len(vals))
    torch.testing.assert_close(
        flow_matching_errors(pred, target), torch.tensor(expected, dtype=torch.float64)
    )


def _grads(fn, pw, pl, rw, rl, **kw):
    xs = [x.clone().requires_grad_() for x in (pw, pl, rw, rl)]
    fn(*xs, **kw).loss.sum().backward()
    return [x.grad for x in xs]


def test_dpo_gradient_lowers_winner_error_relative_to_loser():
    pw, pl, rw, rl = _errors(8, seed=8)
    gw, gl, grw, grl = _grads(flow_dpo_loss, pw, pl, rw, rl, beta=200.0)
    assert bool((gw > 0).all())  # descent lowers the policy's winner error
    assert bool((gl < 0).all())  # ... and raises its loser error
    for i in range(8):
        z = -100.0 * (float(pw[i] - rw[i]) - float(pl[i] - rl[i]))
        assert gw[i].item() == pytest.approx(100.0 * _sigmoid(-z))
        assert gl[i].item() == pytest.approx(-100.0 * _sigmoid(-z))
    torch.testing.assert_close(grw, -gw)
    torch.testing.assert_close(grl, -gl)


# ----------------------------------------------------------------------------------------
# Properties


@pytest.mark.parametrize("kind", ["dpo", "dpop", "stpo_a", "sdpo"])
def test_policy_equal_to_reference_gives_log_2(kind):
    ref = 0.5 + torch.rand(5, dtype=torch.float64)
    extra = {"loser_scale": torch.full((5,), 0.3, dtype=torch.float64)} if kind == "sdpo" else {}
    out = preference_loss(ref, ref.clone(), ref, ref.clone(), loss_type=kind, beta=1000.0, **extra)
    torch.testing.assert_close(out.loss, torch.full((5,), math.log(2.0), dtype=torch.float64))


def test_at_reference_rpo_and_stpo_c_add_their_terms_to_log_2():
    ref = 0.5 + torch.rand(5, dtype=torch.float64)
    rpo = rpo_loss(ref, ref, ref, ref, beta=100.0, sft_alpha=0.5)
    torch.testing.assert_close(rpo.loss, math.log(2.0) + 0.5 * ref)
    # m = 1/(2·0.25) = 2, so the calibration terms are α·(m² + m²) = 0.3·8.
    c = stpo_c_loss(ref, ref, ref, ref, beta=100.0, alpha=0.3, cal_beta=0.25)
    torch.testing.assert_close(c.loss, torch.full((5,), math.log(2.0) + 2.4, dtype=torch.float64))


def _loss_at(fn, dw, dl, **kw):
    ref = torch.ones(len(dw), dtype=torch.float64)
    return fn(ref + dw, ref + dl, ref, ref, **kw).loss


def test_stpo_a_never_rewards_raising_both_errors():
    # The report's failure mode: winner and loser errors both rise above the reference.
    # Flow-DPO sees only Δ_w - Δ_l, so an equal rise is free; STPO-A charges for it.
    grid = torch.tensor([-0.02, -0.005, 0.0, 0.004, 0.03], dtype=torch.float64)
    dw, dl = torch.cartesian_prod(grid, grid).unbind(1)
    for shift in (0.001, 0.01, 0.05):
        kw = {"beta": 200.0, "tau": 0.01}
        before, after = (
            _loss_at(stpo_a_loss, dw, dl, **kw),
            _loss_at(stpo_a_loss, dw + shift, dl + shift, **kw),
        )
        assert bool((after >= before - 1e-12).all())
        assert bool((after > before)[dw + shift > 0].all())
        dpo_before = _loss_at(flow_dpo_loss, dw, dl, beta=200.0)
        dpo_after = _loss_at(flow_dpo_loss, dw + shift, dl + shift, beta=200.0)
        torch.testing.assert_close(dpo_after, dpo_before)


def test_stpo_a_stops_pushing_the_loser_beyond_tau():
    pw, pl, rw, rl = (torch.tensor([v], dtype=torch.float64) for v in (1.01, 1.05, 1.0, 1.0))
    # Δ_w = 0.01 > 0 and Δ_l = 0.05 > τ = 0.02: both errors already rose.
    gw, gl, _, _ = _grads(stpo_a_loss, pw, pl, rw, rl, beta=200.0, tau=0.02)
    assert gl.item() == 0.0
    assert gw.item() > 0.0  # descent lowers the winner error back towards the reference
    _, dpo_gl, _, _ = _grads(flow_dpo_loss, pw, pl, rw, rl, beta=200.0)
    assert dpo_gl.item() < 0.0  # Flow-DPO would keep raising the loser error
    # With the default τ = 2/s the cap sits at Δ_l = 0.02 for β = 200, too.
    _, gl_default, _, _ = _grads(stpo_a_loss, pw, pl, rw, rl, beta=200.0)
    assert gl_default.item() == 0.0


def test_stpo_a_is_flow_dpo_while_the_winner_beats_the_reference():
    dw = torch.tensor([-0.03, -0.01, -0.001], dtype=torch.float64)
    dl = torch.tensor([0.005, -0.02, 0.01], dtype=torch.float64)
    a = _loss_at(stpo_a_loss, dw, dl, beta=200.0, tau=0.015, dpop_lambda=50.0, alpha=3.0)
    torch.testing.assert_close(a, _loss_at(flow_dpo_loss, dw, dl, beta=200.0))


def test_stpo_c_penalises_raising_both_errors_and_stops_pushing_the_loser():
    beta, alpha, m = 200.0, 1.0, 1.0  # cal_beta = 0.5 gives m = 1
    dw = torch.tensor([0.0, 0.01, 0.02, -0.004], dtype=torch.float64, requires_grad=True)
    dl = torch.tensor([0.002, 0.03, 0.0, 0.01], dtype=torch.float64, requires_grad=True)
    ref = torch.ones(4, dtype=torch.float64)
    stpo_c_loss(ref + dw, ref + dl, ref, ref, beta=beta, alpha=alpha).loss.sum().backward()
    # Directional derivative along "raise both equally" is positive where Δ_w + Δ_l > 0.
    assert bool((dw.grad + dl.grad > 0).all())
    # Beyond ĥ_l = -s·Δ_l < -m - 1/(2α) descent lowers the loser error instead of raising it.
    s = beta / 2
    far = (m + 1 / (2 * alpha)) / s + 0.005
    _, gl, _, _ = _grads(stpo_c_loss, ref[:1] + 0.0, ref[:1] + far, ref[:1], ref[:1], beta=beta)
    assert gl.item() > 0.0
    _, dpo_gl, _, _ = _grads(
        flow_dpo_loss, ref[:1] + 0.0, ref[:1] + far, ref[:1], ref[:1], beta=beta
    )
    assert dpo_gl.item() < 0.0


def test_stpo_c_optimum_raises_the_winner_likelihood():
    # Minimise over the two deltas directly: Flow-DPO has no minimiser (Δ_l -> ∞), STPO-C
    # has one with Δ_w < 0 (winner fits better than the reference) and a bounded Δ_l.
    # Newton's method on the two deltas (torch.optim would pull in dynamo: seconds).
    ref = torch.ones(1, dtype=torch.float64)
    d = torch.zeros(2, dtype=torch.float64)
    for _ in range(30):
        d.requires_grad_(True)
        loss = stpo_c_loss(ref + d[:1], ref + d[1:], ref, ref, beta=200.0).loss.sum()
        (grad,) = torch.autograd.grad(loss, d, create_graph=True)
        hess = torch.stack(
            [torch.autograd.grad(grad[k], d, retain_graph=True)[0] for k in range(2)]
        )
        d = (d - torch.linalg.solve(hess, grad)).detach()
    assert float(grad.detach().abs().max()) < 1e-10
    hw, hl = -100.0 * d[0].item(), -100.0 * d[1].item()
    assert d[0].item() < 0 < d[1].item()
    # Stationarity: ĥ_w = m + σ(-(ĥ_w - ĥ_l))/(2α), ĥ_l = -m - σ(-(ĥ_w - ĥ_l))/(2α).
    p = _sigmoid(-(hw - hl))
    assert hw == pytest.approx(1.0 + p / 2, abs=1e-6)
    assert hl == pytest.approx(-1.0 - p / 2, abs=1e-6)
    big = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    dpo = _loss_at(flow_dpo_loss, torch.zeros(3, dtype=torch.float64), big, beta=200.0)
    assert bool((dpo[1:] < dpo[:-1]).all())  # Flow-DPO keeps rewarding a worse loser


def test_sdpo_scales_only_the_loser_gradient_by_lambda():
    pw, pl, rw, rl = _errors(6, seed=9)
    lam = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0, 0.33], dtype=torch.float64)
    out = sdpo_loss(pw, pl, rw, rl, beta=200.0, loser_scale=lam)
    torch.testing.assert_close(out.loss, flow_dpo_loss(pw, pl, rw, rl, beta=200.0).loss)
    gw, gl, _, _ = _grads(sdpo_loss, pw, pl, rw, rl, beta=200.0, loser_scale=lam)
    for i in range(6):
        z = -100.0 * (float(pw[i] - rw[i]) - float(pl[i] - rl[i]))
        assert gw[i].item() == pytest.approx(100.0 * _sigmoid(-z))
        assert gl[i].item() == pytest.approx(-float(lam[i]) * 100.0 * _sigmoid(-z))
    x = torch.tensor([1.5, -2.0], requires_grad=True)
    y = scale_gradient(x, torch.tensor([0.25, 3.0]))
    y.sum().backward()
    assert torch.equal(y.detach(), x.detach())
    assert x.grad.tolist() == [0.25, 3.0]


def _ref_sdpo_scale(pred_w, target_w, pred_l, target_l, mu):
    # As in the released code: gradients of the mean MSE w.r.t. the outputs, via autograd.
    pw = pred_w.detach().clone().requires_grad_()
    pl = pred_l.detach().clone().requires_grad_()
    (ga,) = torch.autograd.grad(((pw - target_w) ** 2).mean(), pw)
    (gb,) = torch.autograd.grad(((pl - target_l) ** 2).mean(), pl)
    dot = float((ga * gb).sum())
    if dot <= 0:
        return 1.0
    return min(max((1 - mu) * float((ga * ga).sum()) / dot, 0.0), 1.0)


@pytest.mark.parametrize("mu", [0.0, 0.6, 0.9])
def test_sdpo_loser_scale_matches_reference(mu):
    g = torch.Generator().manual_seed(10)
    pred_w, target_w, target_l = (
        torch.randn(4, 3, 2, generator=g, dtype=torch.float64) for _ in range(3)
    )
    # Make the loser residual aligned with the winner's for half the batch, opposed for the rest.
    noise = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    sign = torch.tensor([3.0, 0.5, -1.0, 1.0], dtype=torch.float64).view(4, 1, 1)
    pred_l = target_l + sign * (pred_w - target_w) + 0.1 * noise
    batch = sdpo_loser_scale(pred_w, target_w, pred_l, target_l, mu=mu)
    expected = _ref_sdpo_scale(pred_w, target_w, pred_l, target_l, mu)
    torch.testing.assert_close(batch, torch.full((4,), expected, dtype=torch.float64))
    per = sdpo_loser_scale(pred_w, target_w, pred_l, target_l, mu=mu, per_sample=True)
    for i in range(4):
        one = _ref_sdpo_scale(
            pred_w[i : i + 1], target_w[i : i + 1], pred_l[i : i + 1], target_l[i : i + 1], mu
        )
        assert per[i].item() == pytest.approx(one)
    assert per[2].item() == 1.0  # opposed residuals: the loser push already helps the winner
    assert per[0].item() == pytest.approx((1 - mu) / 3.0, rel=0.1)


def test_sdpo_keeps_the_winner_error_from_rising_to_first_order():
    # Per pair, both branches share the parameters θ_i (pred = θ_i + offset), so the
    # output-space gradients are the parameter gradients. The loser residual is 3x the
    # winner's: Flow-DPO raises the winner error, SDPO lowers it at rate μ·c·s·‖∇A‖².
    mu, beta = 0.6, 200.0
    g = torch.Generator().manual_seed(11)
    r_w = torch.randn(3, 8, generator=g, dtype=torch.float64)
    target_w = torch.randn(3, 8, generator=g, dtype=torch.float64)
    target_l = torch.randn(3, 8, generator=g, dtype=torch.float64)
    theta = torch.zeros(3, 8, dtype=torch.float64, requires_grad=True)
    off_w, off_l = target_w + r_w, target_l + 3.0 * r_w
    ref_w, ref_l = (
        torch.full((3,), 1.0, dtype=torch.float64),
        torch.full((3,), 9.0, dtype=torch.float64),
    )

    def winner_error():
        return flow_matching_errors(theta + off_w, target_w)

    def rate(loss_fn, **kw):
        # d/dη of each pair's winner error along the negative loss gradient.
        theta.grad = None
        err_w, err_l = winner_error(), flow_matching_errors(theta + off_l, target_l)
        loss_fn(err_w, err_l, ref_w, ref_l, beta=beta, **kw).loss.sum().backward()
        (ga,) = torch.autograd.grad(winner_error().sum(), theta)
        return -(ga * theta.grad).sum(dim=1), ga

    dpo_rate, _ = rate(flow_dpo_loss)
    lam = sdpo_loser_scale(theta + off_w, target_w, theta + off_l, target_l, mu=mu, per_sample=True)
    torch.testing.assert_close(lam, torch.full((3,), (1 - mu) / 3, dtype=torch.float64))
    sdpo_rate, ga = rate(sdpo_loss, loser_scale=lam)
    assert bool((dpo_rate > 0).all())
    assert bool((sdpo_rate < 0).all())
    with torch.no_grad():
        err_w, err_l = winner_error(), flow_matching_errors(theta + off_l, target_l)
        c = torch.sigmoid(-(-(beta / 2) * ((err_w - ref_w) - (err_l - ref_l))))
        torch.testing.assert_close(sdpo_rate, -mu * c * (beta / 2) * ga.square().sum(dim=1))


def test_flow_elbo_weight_is_the_velocity_space_elbo_weight():
    # Independent route: -½·dλ/dt with λ = log SNR = 2·log((1-t)/t), times (1-t)² for
    # ε-error -> v-error; the result should be (1-t)/t, i.e. 1 at t = 1/2.
    t = torch.tensor([0.05, 0.2, 0.5, 0.7, 0.95], dtype=torch.float64, requires_grad=True)
    lam = 2 * torch.log((1 - t) / t)
    (dlam,) = torch.autograd.grad(lam.sum(), t)
    expected = -0.5 * dlam.detach() * (1 - t.detach()) ** 2
    torch.testing.assert_close(flow_elbo_weight(t.detach()), expected)
    beta_t = timestep_beta(t.detach(), beta=300.0, schedule="flow_elbo")
    assert beta_t[2].item() == pytest.approx(300.0)
    edge = flow_elbo_weight(torch.tensor([0.0, 1e-5, 1.0], dtype=torch.float64))
    assert edge.tolist() == pytest.approx([999.0, 999.0, 0.0])


def test_beta_schedule_callable_constant_reduces_to_constant_beta():
    pw, pl, rw, rl = _errors(5, seed=12)
    t = torch.rand(5, dtype=torch.float64)
    for kind in ("dpo", "stpo_a", "stpo_c"):
        const = FUNCS[kind](pw, pl, rw, rl, beta=250.0)
        flat = FUNCS[kind](
            pw, pl, rw, rl, beta=250.0, t=t, beta_schedule=lambda tt: torch.ones_like(tt)
        )
        torch.testing.assert_close(flat.loss, const.loss)
        torch.testing.assert_close(flat.beta_t, const.beta_t)
    halved = flow_dpo_loss(pw, pl, rw, rl, beta=500.0, t=t, beta_schedule=lambda tt: 0.5 + 0 * tt)
    torch.testing.assert_close(halved.loss, flow_dpo_loss(pw, pl, rw, rl, beta=250.0).loss)


def test_every_registered_loss_is_tested_here():
    assert set(LOSSES) == set(FUNCS)
    assert {k for k, _ in CASES} | {"sdpo"} == set(LOSSES)


# ----------------------------------------------------------------------------------------
# Bad input


def test_bad_inputs_raise_errors_that_name_the_fix():
    pw, pl, rw, rl = _errors(3, seed=13)
    with _no_jaxtyping():
        with pytest.raises(ValueError, match="same pair"):
            flow_dpo_loss(pw, pl[:2], rw, rl, beta=100.0)
        with pytest.raises(ValueError, match="flow_matching_errors"):
            flow_dpo_loss(pw[:, None], pl[:, None], rw[:, None], rl[:, None], beta=100.0)
        with pytest.raises(ValueError, match="one timestep per pair"):
            flow_dpo_loss(pw, pl, rw, rl, beta=100.0, t=torch.rand(4))
        with pytest.raises(ValueError, match="unknown; use one of"):
            preference_loss(pw, pl, rw, rl, loss_type="ipo", beta=100.0)
        with pytest.raises(ValueError, match="'hinge' or 'sft'"):
            stpo_a_loss(pw, pl, rw, rl, beta=100.0, anchor="l2")
        with pytest.raises(ValueError, match="callable"):
            flow_dpo_loss(pw, pl, rw, rl, beta=100.0, t=torch.rand(3), beta_schedule="cosine")
    for beta in (-1.0, 0.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="must be a finite number > 0"):
            preference_loss(pw, pl, rw, rl, loss_type="dpo", beta=beta)
    with pytest.raises(ValueError, match="pass t="):
        flow_dpo_loss(pw, pl, rw, rl, beta=100.0, beta_schedule="flow_elbo")
    with pytest.raises(ValueError, match="one weight per"):
        flow_dpo_loss(
            pw,
            pl,
            rw,
            rl,
            beta=100.0,
            t=torch.rand(3, dtype=torch.float64),
            beta_schedule=lambda tt: tt[:1],
        )
    with pytest.raises(ValueError, match=r"does not take \['tau'\]"):
        preference_loss(pw, pl, rw, rl, loss_type="stpo_c", beta=100.0, tau=0.1)
    with pytest.raises(ValueError, match="sdpo_loser_scale"):
        preference_loss(pw, pl, rw, rl, loss_type="sdpo", beta=100.0)
    with pytest.raises(ValueError, match="tau"):
        stpo_a_loss(pw, pl, rw, rl, beta=100.0, tau=-0.1)
    with pytest.raises(ValueError, match="dpop_lambda"):
        dpop_loss(pw, pl, rw, rl, beta=100.0, dpop_lambda=-1.0)
    with pytest.raises(ValueError, match="cal_beta"):
        stpo_c_loss(pw, pl, rw, rl, beta=100.0, cal_beta=0.0)
    with pytest.raises(ValueError, match="mu"):
        sdpo_loser_scale(
            torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3), mu=1.5
        )
    with pytest.raises(ValueError, match="velocity target"), _no_jaxtyping():
        flow_matching_errors(torch.randn(2, 3), torch.randn(2, 4))


def test_shape_contract_is_checked_at_test_time():
    pw, pl, rw, rl = _errors(3, seed=14)
    with pytest.raises((jaxtyping.TypeCheckError, ValueError)):
        flow_dpo_loss(pw, pl[:2], rw, rl, beta=100.0)
    with pytest.raises((jaxtyping.TypeCheckError, ValueError)):
        preference_loss(pw, pl, rw, rl, loss_type="nope", beta=100.0)
