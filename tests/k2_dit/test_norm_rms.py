"""RMSNorm(1 + w) and the LayerNorm path against float64 transcriptions of their equations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from k2_dit.blocks import RMSNorm, make_norm


def _rmsnorm_ref(x: torch.Tensor, w: torch.Tensor | None, eps: float, zero_centered: bool):
    # y_i = x_i / sqrt(1/D sum_j x_j^2 + eps) * g_i with g = 1 + w (zero-centred) or w.
    out = torch.empty_like(x)
    d = x.shape[-1]
    flat, oflat = x.reshape(-1, d), out.view(-1, d)
    for r in range(flat.shape[0]):
        ms = sum(float(v) ** 2 for v in flat[r]) / d
        inv = 1.0 / math.sqrt(ms + eps)
        for i in range(d):
            gain = 1.0 if w is None else (1.0 + float(w[i]) if zero_centered else float(w[i]))
            oflat[r, i] = float(flat[r, i]) * inv * gain
    return out


@pytest.mark.parametrize("zero_centered", [True, False])
def test_rmsnorm_matches_reference(zero_centered: bool) -> None:
    torch.manual_seed(0)
    norm = RMSNorm(6, eps=1e-5, zero_centered=zero_centered).double()
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(2, 3, 6, dtype=torch.float64) * 3
    ref = _rmsnorm_ref(x, norm.weight.detach(), 1e-5, zero_centered)
    torch.testing.assert_close(norm(x), ref, rtol=1e-12, atol=1e-12)


def test_rmsnorm_zero_centered_init_is_unit_gain_and_affine_false_has_no_params() -> None:
    norm = RMSNorm(5, eps=1e-6)
    assert torch.equal(norm.weight, torch.zeros(5))  # weight decay pulls 1 + w toward 1
    bare = RMSNorm(5, eps=1e-6, affine=False)
    assert list(bare.parameters()) == []
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(bare.double()(x), _rmsnorm_ref(x, None, 1e-6, True))
    torch.testing.assert_close(norm.double()(x), bare(x))


def test_rmsnorm_computes_in_float32_and_returns_input_dtype() -> None:
    torch.manual_seed(1)
    norm = RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(std=0.1)
    x = (torch.randn(3, 64) * 50).bfloat16()
    y = norm(x)
    assert y.dtype == torch.bfloat16
    ref = _rmsnorm_ref(x.double(), norm.weight.detach().double(), 1e-6, True)
    # Exactly the float64 result rounded once to bf16 (a bf16 computation would be worse).
    torch.testing.assert_close(y, ref.bfloat16(), rtol=0, atol=0)


def test_rmsnorm_gradcheck() -> None:
    torch.manual_seed(2)
    norm = RMSNorm(4, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w: torch.func.functional_call(norm, {"weight": w}, (a,)), (x, norm.weight)
    )


def test_layernorm_path_matches_reference() -> None:
    torch.manual_seed(3)
    norm = make_norm("layernorm", 6, eps=1e-5).double()
    assert isinstance(norm, nn.LayerNorm)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(5, 6, dtype=torch.float64)
    mean = x.sum(-1, keepdim=True) / 6
    var = ((x - mean) ** 2).sum(-1, keepdim=True) / 6  # biased variance, as in Ba et al. 2016
    ref = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), ref, rtol=1e-12, atol=1e-12)
    assert list(make_norm("layernorm", 6, eps=1e-5, affine=False).parameters()) == []
    assert isinstance(make_norm("rmsnorm", 6, eps=1e-5), RMSNorm)
