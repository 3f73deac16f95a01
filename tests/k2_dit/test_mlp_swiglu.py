"""SwiGLU and the tanh-GeLU MLP against float64 transcriptions; parameter matching."""

from __future__ import annotations

import math

import pytest
import torch

from k2_dit.blocks import GeluMLP, SwiGLU, make_mlp
from k2_dit.config import DiTConfig


def _silu(z: float) -> float:
    return z / (1.0 + math.exp(-z))


def _gelu_tanh(z: float) -> float:
    return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))


def _matvec(w: torch.Tensor, x: list[float]) -> list[float]:
    w = w.detach()
    return [sum(float(w[o, i]) * x[i] for i in range(len(x))) for o in range(w.shape[0])]


def test_swiglu_matches_reference() -> None:
    torch.manual_seed(0)
    mlp = SwiGLU(4, 6).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    ref = torch.empty_like(x)
    for r in range(3):
        xr = [float(v) for v in x[r]]
        a = _matvec(mlp.w1.weight, xr)
        g = _matvec(mlp.w3.weight, xr)
        h = [_silu(ai) * gi for ai, gi in zip(a, g, strict=True)]
        ref[r] = torch.tensor(_matvec(mlp.w2.weight, h), dtype=torch.float64)
    torch.testing.assert_close(mlp(x), ref, rtol=1e-12, atol=1e-12)
    assert all(m.bias is None for m in (mlp.w1, mlp.w2, mlp.w3))


def test_gelu_mlp_matches_reference() -> None:
    torch.manual_seed(1)
    mlp = GeluMLP(4, 8).double()
    x = torch.randn(3, 4, dtype=torch.float64) * 2
    ref = torch.empty_like(x)
    for r in range(3):
        xr = [float(v) for v in x[r]]
        pre = _matvec(mlp.fc1.weight, xr)
        h = [_gelu_tanh(z + float(b)) for z, b in zip(pre, mlp.fc1.bias.detach(), strict=True)]
        post = _matvec(mlp.fc2.weight, h)
        out = [z + float(b) for z, b in zip(post, mlp.fc2.bias.detach(), strict=True)]
        ref[r] = torch.tensor(out, dtype=torch.float64)
    torch.testing.assert_close(mlp(x), ref, rtol=1e-12, atol=1e-12)


def test_swiglu_gradcheck() -> None:
    torch.manual_seed(2)
    mlp = SwiGLU(3, 5).double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    params = dict(mlp.named_parameters())

    def f(a, w1, w2, w3):
        return torch.func.functional_call(
            mlp, {"w1.weight": w1, "w2.weight": w2, "w3.weight": w3}, (a,)
        )

    assert torch.autograd.gradcheck(
        f, (x, params["w1.weight"], params["w2.weight"], params["w3.weight"])
    )


def test_make_mlp_builds_each_kind() -> None:
    assert isinstance(make_mlp("swiglu", 8, 16), SwiGLU)
    assert isinstance(make_mlp("gelu", 8, 32), GeluMLP)


@pytest.mark.parametrize("dim", [64, 512, 1024, 3072])
def test_swiglu_hidden_is_parameter_matched_to_a_4x_gelu_mlp(dim: int) -> None:
    swiglu = DiTConfig(dim=dim, attention=_heads(dim), mlp="swiglu").mlp_hidden
    gelu = DiTConfig(dim=dim, attention=_heads(dim), mlp="gelu").mlp_hidden
    assert gelu == 4 * dim
    assert swiglu % 64 == 0
    # 3·d·h_swiglu ≈ 2·d·h_gelu, up to rounding h to a multiple of 64.
    assert 0 <= 3 * swiglu - 2 * gelu < 3 * 64


def _heads(dim: int):
    from k2_dit.config import AttentionConfig

    return AttentionConfig(num_heads=dim // 32, num_kv_heads=1)
