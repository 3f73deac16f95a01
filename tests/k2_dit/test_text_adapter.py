"""LayerAggregation, TextRefiner, TextAdapter against float64 loop transcriptions of their equations."""

from __future__ import annotations

import cmath
import math

import pytest
import torch
from torch import Tensor

from k2_dit.config import ConfigError, TextConfig
from k2_dit.text import LastLayerProjection, LayerAggregation, TextAdapter, TextRefiner

D64 = torch.float64


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (zero-initialised query, unit norm gains) so no term hides."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    ex = [math.exp(s - top) for s in scores]
    return [e / sum(ex) for e in ex]


def _rms(v: Tensor, eps: float) -> Tensor:
    return v / math.sqrt(float((v * v).mean()) + eps)


def _reference_aggregation(agg: LayerAggregation, hidden: Tensor) -> Tensor:
    """Equations (1)-(4) of LayerAggregation's docstring, one token and one head at a time."""
    eps, heads = agg.eps, agg.num_heads
    w_in, b_in = agg.proj_in.weight, agg.proj_in.bias
    d = w_in.shape[0]
    dh = d // heads
    b, n_tok, k, _ = hidden.shape
    out = torch.zeros(b, n_tok, agg.proj_out.weight.shape[0], dtype=D64)
    for bi in range(b):
        for ti in range(n_tok):
            x = [
                w_in @ _rms(hidden[bi, ti, j], eps) + b_in + agg.layer_embed.weight[j]
                for j in range(k)
            ]
            n = [_rms(xj, eps) * (1 + agg.norm_attn.weight) for xj in x]
            qkv = [agg.qkv.weight @ nj + agg.qkv.bias for nj in n]
            q = [t[:d] for t in qkv]
            c = [t[d : 2 * d] for t in qkv]
            v = [t[2 * d :] for t in qkv]
            y = []
            for i in range(k):
                heads_out = []
                for h in range(heads):
                    sl = slice(h * dh, (h + 1) * dh)
                    a = _softmax([float(q[i][sl] @ c[j][sl]) / math.sqrt(dh) for j in range(k)])
                    heads_out.append(sum(a[j] * v[j][sl] for j in range(k)))
                y.append(x[i] + agg.attn_out.weight @ torch.cat(heads_out) + agg.attn_out.bias)
            m = [_rms(yj, eps) * (1 + agg.norm_pool.weight) for yj in y]
            kv = [agg.pool_kv.weight @ mj + agg.pool_kv.bias for mj in m]
            keys = [t[:d] for t in kv]
            vals = [t[d:] for t in kv]
            pooled = []
            for h in range(heads):
                sl = slice(h * dh, (h + 1) * dh)
                s = agg.pool_query[sl]
                beta = _softmax([float(s @ keys[j][sl]) / math.sqrt(dh) for j in range(k)])
                pooled.append(sum(beta[j] * vals[j][sl] for j in range(k)))
            out[bi, ti] = agg.proj_out.weight @ torch.cat(pooled) + agg.proj_out.bias
    return out


def test_aggregation_matches_reference() -> None:
    torch.manual_seed(0)
    agg = LayerAggregation(6, 5, num_layers=4, num_heads=2, width=8).to(D64)
    _randomise(agg, 1)
    # Per-layer scales that differ by orders of magnitude, as in an LLM.
    hidden = (
        torch.randn(2, 3, 4, 6, dtype=D64)
        * torch.tensor([0.01, 1.0, 30.0, 500.0], dtype=D64)[:, None]
    )
    got = agg(hidden)
    with torch.no_grad():
        expected = _reference_aggregation(agg, hidden)
    assert got.shape == (2, 3, 5)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_aggregation_starts_as_mean_pooling() -> None:
    """The pooling query starts at 0, so pooling weights are uniform and the keys do not matter."""
    torch.manual_seed(0)
    agg = LayerAggregation(6, 8, num_layers=3, num_heads=2).to(D64)
    assert torch.all(agg.pool_query == 0)
    hidden = torch.randn(1, 2, 3, 6, dtype=D64)
    before = agg(hidden)
    width = agg.pool_query.shape[0]
    with torch.no_grad():
        agg.pool_kv.weight[:width] += torch.randn(width, width, dtype=D64)
    torch.testing.assert_close(agg(hidden), before, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        agg.pool_query.fill_(1.0)
    assert not torch.allclose(agg(hidden), before)


def test_aggregation_tokens_are_independent_and_padding_is_finite() -> None:
    torch.manual_seed(0)
    agg = LayerAggregation(6, 8, num_layers=3, num_heads=2).to(D64)
    _randomise(agg, 2)
    hidden = torch.randn(1, 4, 3, 6, dtype=D64)
    changed = hidden.clone()
    changed[0, 2:] = 0.0  # zero features, as TextEncoder writes at padded positions
    a, b = agg(hidden), agg(changed)
    torch.testing.assert_close(a[:, :2], b[:, :2], rtol=0, atol=0)
    assert torch.isfinite(b).all()


def test_aggregation_gradcheck() -> None:
    torch.manual_seed(0)
    agg = LayerAggregation(4, 4, num_layers=3, num_heads=2).to(D64)
    _randomise(agg, 3)
    hidden = torch.randn(1, 2, 3, 4, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(agg, (hidden,), eps=1e-6, atol=1e-6)


def test_aggregation_validates() -> None:
    with pytest.raises(ValueError, match="divisible by num_heads"):
        LayerAggregation(4, 6, num_layers=3, num_heads=4)
    agg = LayerAggregation(4, 8, num_layers=3, num_heads=2)
    with pytest.raises(ValueError, match=r"got 5 hidden states .* num_layers=3"):
        agg(torch.randn(1, 2, 5, 4))


def test_last_layer_projection() -> None:
    torch.manual_seed(0)
    last = LastLayerProjection(6, 5, num_layers=4).to(D64)
    hidden = torch.randn(2, 3, 4, 6, dtype=D64)
    other = hidden.clone()
    other[:, :, :3] = torch.randn(2, 3, 3, 6, dtype=D64)
    expected = torch.einsum("ble,de->bld", hidden[:, :, 3], last.proj.weight) + last.proj.bias
    torch.testing.assert_close(last(hidden), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last(other), expected, rtol=1e-12, atol=1e-12)


def _norm(v: Tensor, module: torch.nn.Module) -> Tensor:
    """Zero-centred RMSNorm: v / rms(v) * (1 + w)."""
    return _rms(v, module.eps) * (1 + module.weight)


def _silu(v: Tensor) -> Tensor:
    return v / (1 + torch.exp(-v))


def _rotate_1d(v: Tensor, pos: int, *, theta: float = 10000.0) -> Tensor:
    """RoPE on interleaved pairs (2i, 2i+1) at angle pos * theta^(-2i/d), as complex products."""
    d = v.shape[0]
    out = v.clone()
    for i in range(d // 2):
        z = complex(float(v[2 * i]), float(v[2 * i + 1])) * cmath.exp(
            1j * pos * theta ** (-2 * i / d)
        )
        out[2 * i], out[2 * i + 1] = z.real, z.imag
    return out


def _reference_refiner(refiner: TextRefiner, x: Tensor, mask: Tensor) -> Tensor:
    """Per layer: x += W_o MHA(rope(qknorm(W_q n)), rope(qknorm(W_k n)), W_v n) over real keys
    with n = norm1(x) and 1D RoPE at the token index; x += W_2(silu(W_1 m) * W_3 m) with
    m = norm2(x). Then a final norm."""
    b, n_tok, _ = x.shape
    x = x.clone()
    for layer in refiner.layers:
        attn = layer.attn
        heads, dh = attn.heads, attn.head_dim
        for bi in range(b):
            keys_ok = [bool(mask[bi, j]) for j in range(n_tok)]
            if not any(keys_ok):
                keys_ok = [True] * n_tok  # an empty row attends to all of its positions
            js = [j for j in range(n_tok) if keys_ok[j]]
            n = [_norm(x[bi, t], layer.norm1) for t in range(n_tok)]
            q = [attn.q_proj.weight @ v for v in n]
            kk = [attn.k_proj.weight @ v for v in n]
            vv = [attn.v_proj.weight @ v for v in n]
            new = []
            for i in range(n_tok):
                outs = []
                for h in range(heads):
                    sl = slice(h * dh, (h + 1) * dh)
                    qh = _rotate_1d(_norm(q[i][sl], attn.q_norm), i)
                    scores = [
                        float(qh @ _rotate_1d(_norm(kk[j][sl], attn.k_norm), j)) / math.sqrt(dh)
                        for j in js
                    ]
                    a = _softmax(scores)
                    outs.append(sum(aj * vv[j][sl] for aj, j in zip(a, js, strict=True)))
                new.append(x[bi, i] + attn.o_proj.weight @ torch.cat(outs))
            for i in range(n_tok):
                m = _norm(new[i], layer.norm2)
                mlp = layer.mlp
                hidden = _silu(mlp.w1.weight @ m) * (mlp.w3.weight @ m)
                x[bi, i] = new[i] + mlp.w2.weight @ hidden
    return torch.stack(
        [torch.stack([_norm(x[bi, t], refiner.norm) for t in range(n_tok)]) for bi in range(b)]
    )


def test_refiner_matches_reference() -> None:
    torch.manual_seed(0)
    refiner = TextRefiner(8, num_layers=2, num_heads=2).to(D64)
    _randomise(refiner, 4)
    x = torch.randn(3, 5, 8, dtype=D64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        got = refiner(x, mask)
        expected = _reference_refiner(refiner, x, mask)
    # RoPE tables are float32 by design (k2_dit.rope), so agreement is to ~1e-7, not 1e-12.
    torch.testing.assert_close(got[mask], expected[mask], rtol=1e-6, atol=1e-6)
    assert torch.isfinite(got).all()
    # The empty row attends to all of its positions instead of producing NaN.
    torch.testing.assert_close(got[2], expected[2], rtol=1e-6, atol=1e-6)


def test_refiner_starts_as_identity_then_norm() -> None:
    # Zero-initialised output projections: at init each layer passes its input through.
    refiner = TextRefiner(8, num_layers=2, num_heads=2).to(D64)
    x = torch.randn(2, 5, 8, dtype=D64)
    mask = torch.ones(2, 5, dtype=torch.bool)
    expected = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(refiner(x, mask), expected, rtol=1e-12, atol=1e-12)


def test_refiner_depends_on_token_order() -> None:
    # 1D RoPE makes the refiner order-aware: reversing the tokens is not just a permutation.
    torch.manual_seed(0)
    refiner = TextRefiner(8, num_layers=1, num_heads=2).to(D64)
    _randomise(refiner, 4)
    x = torch.randn(1, 5, 8, dtype=D64)
    mask = torch.ones(1, 5, dtype=torch.bool)
    forward = refiner(x, mask)
    reversed_back = refiner(x.flip(1), mask).flip(1)
    assert (forward - reversed_back).abs().max() > 1e-3


def test_refiner_ignores_padded_inputs() -> None:
    torch.manual_seed(0)
    refiner = TextRefiner(8, num_layers=2, num_heads=2).to(D64)
    x = torch.randn(2, 6, 8, dtype=D64)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    changed = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    a, b = refiner(x, mask), refiner(changed, mask)
    torch.testing.assert_close(a[mask], b[mask], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(a[~mask], b[~mask])


def test_refiner_without_layers_is_identity() -> None:
    refiner = TextRefiner(8, num_layers=0, num_heads=2)
    x = torch.randn(2, 3, 8)
    assert torch.equal(refiner(x, torch.ones(2, 3, dtype=torch.bool)), x)


def _tiny_cfg(**kw) -> TextConfig:
    base = {
        "encoder_dim": 6,
        "num_layers": 3,
        "aggregation_heads": 2,
        "refiner_layers": 1,
        "max_tokens": 8,
    }
    return TextConfig(**{**base, **kw})


@pytest.mark.parametrize("aggregation", ["attention", "last"])
def test_adapter_forward_backward_and_padding(aggregation: str) -> None:
    torch.manual_seed(0)
    adapter = TextAdapter(_tiny_cfg(aggregation=aggregation), dim=8)
    hidden = torch.randn(2, 5, 3, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = adapter(hidden, mask)
    assert out.shape == (2, 5, 8)
    assert torch.all(out[~mask] == 0) and torch.isfinite(out).all()
    changed = torch.where(mask[..., None, None], hidden, torch.randn_like(hidden))
    torch.testing.assert_close(adapter(changed, mask), out, rtol=1e-6, atol=1e-6)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in adapter.parameters())
    # The composition equals its parts.
    expected = adapter.refiner(adapter.aggregate(hidden), mask) * mask[..., None]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_adapter_gradcheck() -> None:
    torch.manual_seed(0)
    adapter = TextAdapter(_tiny_cfg(encoder_dim=4, refiner_layers=1), dim=4).to(D64)
    _randomise(adapter, 5)
    hidden = torch.randn(1, 3, 3, 4, dtype=D64, requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    assert torch.autograd.gradcheck(lambda h: adapter(h, mask), (hidden,), eps=1e-6, atol=1e-5)


def test_adapter_input_mismatch_errors() -> None:
    adapter = TextAdapter(_tiny_cfg(), dim=8)
    mask = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(
        ConfigError, match=r"4 hidden states .* text.num_layers=3.*num_hidden_states \(4\)"
    ):
        adapter(torch.randn(1, 2, 4, 6), mask)
    with pytest.raises(ConfigError, match=r"7 wide but text.encoder_dim=6.*hidden_size \(7\)"):
        adapter(torch.randn(1, 2, 3, 7), mask)
    with pytest.raises(ConfigError, match=r"exceed text\.max_tokens=8"):
        adapter(torch.randn(1, 9, 3, 6), torch.ones(1, 9, dtype=torch.bool))


def test_adapter_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"text\.num_layers=0"):
        TextAdapter(_tiny_cfg(num_layers=0), dim=8)
    with pytest.raises(ConfigError, match=r"text\.encoder_dim=0"):
        TextAdapter(_tiny_cfg(encoder_dim=0), dim=8)
    with pytest.raises(ConfigError, match="aggregation_heads=3"):
        TextAdapter(_tiny_cfg(aggregation_heads=3), dim=8)
    with pytest.raises(ConfigError, match="refiner's 3 heads"):
        TextAdapter(_tiny_cfg(), dim=8, refiner_heads=3)


def test_adapter_on_tiny_encoder() -> None:
    from k2_dit.text import build_tiny_text_encoder

    encoder = build_tiny_text_encoder(
        ["a red cube", "a blue sphere"], hidden_size=16, num_layers=2, num_heads=2
    )
    hidden, mask = encoder.encode(["a red cube", ""], max_length=8)
    cfg = _tiny_cfg(encoder_dim=encoder.hidden_size, num_layers=encoder.num_hidden_states)
    out = TextAdapter(cfg, dim=8)(hidden, mask)
    assert out.shape == (2, 3, 8) and torch.isfinite(out).all()
