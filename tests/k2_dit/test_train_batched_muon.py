"""BatchedMuon and the batched Newton-Schulz iteration against float64 loop transcriptions."""

from __future__ import annotations

import math

import pytest
import torch

from k2_dit.train import NS_COEFFICIENTS, BatchedMuon, muon_adamw_optimizers, newton_schulz


def _ns_reference(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Jordan's quintic, one matrix at a time, written out with explicit products."""
    a, b, c = NS_COEFFICIENTS
    x = g.clone()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / max(math.sqrt(float((x * x).sum())), 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def _muon_reference(w, grads, *, lr, wd, mu, nesterov, rule):
    """The Muon rule step by step in float64 (momentum, Nesterov, decay, RMS-matched LR)."""
    w, m = w.clone(), torch.zeros_like(w)
    rows, cols = w.shape
    scale = {"match_rms_adamw": 0.2 * math.sqrt(max(rows, cols)), None: 1.0}[rule]
    for g in grads:
        m = mu * m + (1 - mu) * g
        u = (1 - mu) * g + mu * m if nesterov else m
        w = (1 - lr * wd) * w - lr * scale * _ns_reference(u)
    return w


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 7, 5), (4, 6, 6), (1, 1, 9)])
def test_newton_schulz_matches_the_loop_transcription_in_float64(shape):
    g = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = newton_schulz(g, dtype=None)
    assert got.dtype == torch.float64 and got.shape == g.shape
    for i in range(shape[0]):
        torch.testing.assert_close(got[i], _ns_reference(g[i]), rtol=1e-12, atol=1e-12)


def test_newton_schulz_pushes_singular_values_toward_one_and_keeps_zero():
    g = torch.randn(16, 32, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(newton_schulz(g, dtype=None))
    # The quintic maps every singular value into about [0.7, 1.2] (not exactly 1, by design).
    assert s.min() > 0.5 and s.max() < 1.3
    zero = newton_schulz(torch.zeros(2, 4, 3, dtype=torch.float64), dtype=None)
    assert torch.equal(zero, torch.zeros_like(zero))
    # A vector is refused (by the test-time shape check, or by the function itself).
    with pytest.raises((ValueError, TypeError), match=r"matrices|batch m n"):
        newton_schulz(torch.ones(5))


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("rule", ["match_rms_adamw", None])
def test_step_matches_the_float64_rule(nesterov, rule):
    gen = torch.Generator().manual_seed(2)
    shapes = [(6, 10), (6, 10), (10, 6), (4, 4)]
    ws = [torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes]
    grads = [[torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes] for _ in range(3)]
    params = [torch.nn.Parameter(w.clone()) for w in ws]
    kw = dict(lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=nesterov, adjust_lr_fn=rule)
    opt = BatchedMuon(params, ns_dtype=None, **kw)
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()
    for i, p in enumerate(params):
        want = _muon_reference(
            ws[i],
            [step[i] for step in grads],
            lr=0.05,
            wd=0.1,
            mu=0.9,
            nesterov=nesterov,
            rule=rule,
        )
        torch.testing.assert_close(p.detach(), want, rtol=1e-10, atol=1e-10)


def test_agrees_with_torch_muon_in_bfloat16():
    muon_cls = getattr(torch.optim, "Muon", None)
    if muon_cls is None:
        pytest.fail(f"torch {torch.__version__} has no torch.optim.Muon (needs >= 2.9)")
    gen = torch.Generator().manual_seed(3)
    shapes = [(32, 96), (32, 96), (96, 32), (64, 64), (16, 48)]
    ws = [torch.randn(s, generator=gen) for s in shapes]
    ours = [torch.nn.Parameter(w.clone()) for w in ws]
    theirs = [torch.nn.Parameter(w.clone()) for w in ws]
    kw = dict(lr=0.02, weight_decay=0.01, adjust_lr_fn="match_rms_adamw")
    opts = [BatchedMuon(ours, **kw), muon_cls(theirs, **kw)]
    for _ in range(4):
        gs = [torch.randn(s, generator=gen) for s in shapes]
        for group in (ours, theirs):
            for p, g in zip(group, gs, strict=True):
                p.grad = g.clone()
        for opt in opts:
            opt.step()
    for a, b, w in zip(ours, theirs, ws, strict=True):
        # Same rule in bfloat16: batched and looped matmuls may round differently, so compare
        # the total parameter change, which is four steps of size ~lr * 0.2 * sqrt(max(A, B)).
        delta = (b - w).detach()
        err = ((a - b).detach().norm() / delta.norm()).item()
        assert err < 2e-2, err


def test_rejects_non_matrices_and_unknown_lr_rules():
    with pytest.raises(ValueError, match="2-D matrices"):
        BatchedMuon([torch.nn.Parameter(torch.ones(3))])
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        BatchedMuon([torch.nn.Parameter(torch.ones(2, 2))], adjust_lr_fn="nope")


def test_muon_adamw_optimizers_can_build_the_batched_variant():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    from k2_dit.train import muon_param_groups

    split = muon_param_groups(model, exclude=("0", "2"))
    muon, adamw = muon_adamw_optimizers(split, lr=1e-3, batched=True)
    assert isinstance(muon, BatchedMuon) and isinstance(adamw, torch.optim.AdamW)
    assert [n for g in split.muon for n, _ in g["params"]] == ["1.weight"]
