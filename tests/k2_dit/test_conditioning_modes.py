"""Timestep features and each conditioning mode's modulation maths vs float64 transcriptions."""

from __future__ import annotations

import math

import pytest
import torch

from k2_dit.conditioning import (
    ROWS,
    TIME_SCALE,
    Modulation,
    TimestepConditioning,
    TimestepSignal,
    modulate,
    timestep_embedding,
)

D, FREQ = 8, 6


def _silu(z: torch.Tensor) -> torch.Tensor:
    return z / (1 + torch.exp(-z))


def _sinusoid_ref(t: float, dim: int, max_period: float = 10000.0) -> list[float]:
    half = dim // 2
    args = [t * 1000.0 * math.exp(-math.log(max_period) * i / half) for i in range(half)]
    return [math.cos(a) for a in args] + [math.sin(a) for a in args]


def _randomise(module: torch.nn.Module, seed: int) -> None:
    # Zero/adaLN-Zero inits would make every comparison trivially 0 = 0.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def _mlp_ref(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    # Linear -> SiLU -> Linear (DiT TimestepEmbedder).
    h = x @ sd[f"{prefix}.0.weight"].T + sd[f"{prefix}.0.bias"]
    return _silu(h) @ sd[f"{prefix}.2.weight"].T + sd[f"{prefix}.2.bias"]


def test_timestep_embedding_matches_reference_and_scales_t_by_1000() -> None:
    t = torch.tensor([0.0, 0.25, 0.999, 1.0], dtype=torch.float64)
    got = timestep_embedding(t, 10, max_period=500.0)
    ref = torch.tensor([_sinusoid_ref(float(v), 10, 500.0) for v in t], dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert TIME_SCALE == 1000.0
    # t = 0 gives cos = 1, sin = 0 whatever the frequency.
    assert torch.equal(got[0], torch.tensor([1.0] * 5 + [0.0] * 5, dtype=torch.float64))


def test_timestep_embedding_rejects_odd_dim() -> None:
    with pytest.raises(ValueError, match="must be even"):
        timestep_embedding(torch.zeros(1), 5)


def test_adaln_mlp_modulation_matches_reference() -> None:
    cond = TimestepConditioning(D, kind="adaln_mlp", freq_dim=FREQ).double()
    mod = Modulation(D, kind="adaln_mlp").double()
    _randomise(cond, 0)
    _randomise(mod, 1)
    t = torch.tensor([0.1, 0.7], dtype=torch.float64)
    sig = cond(t)
    assert sig.shared is None and sig.tokens is None
    sd = {
        **{f"c.{k}": v for k, v in cond.state_dict().items()},
        **{f"m.{k}": v for k, v in mod.state_dict().items()},
    }
    feats = torch.tensor([_sinusoid_ref(float(v), FREQ) for v in t], dtype=torch.float64)
    c = _mlp_ref(feats, sd, "c.embedder.mlp")
    rows = _silu(c) @ sd["m.proj.weight"].T + sd["m.proj.bias"]
    torch.testing.assert_close(sig.embedding, c, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mod(sig), rows.view(2, 6, D), rtol=1e-12, atol=1e-12)


def test_shared_bias_modulation_matches_reference() -> None:
    cond = TimestepConditioning(D, kind="shared_bias", freq_dim=FREQ).double()
    block_a = Modulation(D, kind="shared_bias").double()
    block_b = Modulation(D, kind="shared_bias", rows=2).double()
    final = Modulation(D, kind="shared_bias", rows=2, from_embedding=True).double()
    for i, m in enumerate((cond, block_a, block_b, final)):
        _randomise(m, 10 + i)
    t = torch.tensor([0.3, 0.9], dtype=torch.float64)
    sig = cond(t)
    sd = {k: v for k, v in cond.state_dict().items()}
    feats = torch.tensor([_sinusoid_ref(float(v), FREQ) for v in t], dtype=torch.float64)
    c = _mlp_ref(feats, sd, "embedder.mlp")
    shared = (_silu(c) @ sd["shared.proj.weight"].T + sd["shared.proj.bias"]).view(2, 6, D)
    torch.testing.assert_close(sig.shared, shared, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        block_a(sig), shared + block_a.table.detach()[None], rtol=1e-12, atol=1e-12
    )
    # A shift/scale-only modulation uses the shared attention shift/scale rows.
    torch.testing.assert_close(
        block_b(sig), shared[:, :2] + block_b.table.detach()[None], rtol=1e-12, atol=1e-12
    )
    # The final layer adds its bias to c (PixArt-α T2IFinalLayer).
    torch.testing.assert_close(
        final(sig), c[:, None] + final.table.detach()[None], rtol=1e-12, atol=1e-12
    )
    # The per-block part really is per block: two blocks share the signal, not the bias.
    assert not torch.allclose(block_a(sig)[:, :2], block_b(sig))


def test_in_context_tokens_match_reference() -> None:
    cond = TimestepConditioning(D, kind="in_context", freq_dim=FREQ, num_tokens=3).double()
    _randomise(cond, 20)
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    sig = cond(t)
    assert sig.embedding is None and sig.shared is None
    feats = torch.tensor([_sinusoid_ref(float(v), FREQ) for v in t], dtype=torch.float64)
    ref = _mlp_ref(feats, dict(cond.state_dict()), "tokens.mlp").view(2, 3, D)
    torch.testing.assert_close(sig.tokens, ref, rtol=1e-12, atol=1e-12)
    # Distinct tokens that change with t.
    assert not torch.allclose(sig.tokens[:, 0], sig.tokens[:, 1])
    assert not torch.allclose(sig.tokens[0], sig.tokens[1])


def test_none_mode_has_no_parameters_and_an_empty_signal() -> None:
    cond = TimestepConditioning(D, kind="none")
    assert list(cond.parameters()) == []
    assert cond(torch.rand(3)) == TimestepSignal()
    with pytest.raises(ValueError, match="has no AdaLN modulation"):
        Modulation(D, kind="none")


def test_modulate_matches_reference() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, D, dtype=torch.float64)
    shift, scale = torch.randn(2, D, dtype=torch.float64), torch.randn(2, D, dtype=torch.float64)
    ref = torch.stack([x[b] * (1 + scale[b]) + shift[b] for b in range(2)])
    torch.testing.assert_close(modulate(x, shift, scale), ref, rtol=0, atol=0)


def test_adaln_inits_have_zero_gates() -> None:
    """adaLN-Zero in both AdaLN modes: gate rows are 0 at init for every t."""
    t = torch.rand(4)
    for kind in ("adaln_mlp", "shared_bias"):
        cond = TimestepConditioning(D, kind=kind)
        with torch.no_grad():  # a trained-looking embedder, so the zeros come from the init
            for p in cond.embedder.parameters():
                p.normal_()
        rows = Modulation(D, kind=kind)(cond(t))
        gates = [i for i, name in enumerate(ROWS) if name.startswith("gate")]
        assert torch.equal(rows[:, gates], torch.zeros(4, 2, D))
    # shared_bias: shift/scale rows start at the (non-zero) per-block bias, PixArt-α style.
    table = Modulation(D, kind="shared_bias").table
    assert table[[0, 1, 3, 4]].abs().sum() > 0
