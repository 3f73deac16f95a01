"""k2_dit.rope against float64 transcriptions written with plain loops, plus RoPE's properties."""

from __future__ import annotations

import cmath
import math
from statistics import NormalDist

import pytest
import torch

from k2_dit.config import ConfigError, RopeConfig
from k2_dit.rope import (
    Rope,
    RopeTables,
    apply_rope,
    extra_positions,
    golden_gate_directions,
    rope_frequencies,
    token_positions,
)

KINDS = ["axial", "partial", "golden_gate", "mrope", "normalized"]
HEAD_DIM = 16
HEADS = 4
KV_HEADS = 2


def _cfg(kind: str, **kw) -> RopeConfig:
    if kind == "golden_gate":
        kw.setdefault("zero_freq_fraction", 0.25)
    if kind == "normalized":
        kw.setdefault("normalized_scale", 4.0)
    return RopeConfig(kind=kind, theta=100.0, **kw)


# ----------------------------------------------------------------------------------------------
# Reference transcriptions (python floats and loops; nothing from k2_dit.rope).


def ref_positions(cfg: RopeConfig, n_text: int, grid: tuple[int, int, int]) -> list[list[float]]:
    f, h, w = grid
    out: list[list[float]] = []
    for i in range(n_text):
        out.append([float(i)] * 3 if cfg.kind == "mrope" else [0.0, 0.0, 0.0])
    longer = max(h, w)
    for fi in range(f):
        for yi in range(h):
            for xi in range(w):
                if cfg.kind == "normalized":
                    # cell edges at -n/L + 2*i/L; take the middle of cell i.
                    def centre(i: int, n: int, span: int) -> float:
                        lo = -n / span + 2.0 * i / span
                        return lo + 1.0 / span

                    s = cfg.normalized_scale
                    out.append(
                        [s * centre(fi, f, f), s * centre(yi, h, longer), s * centre(xi, w, longer)]
                    )
                elif cfg.kind == "mrope":
                    out.append([float(n_text + fi), float(n_text + yi), float(n_text + xi)])
                else:
                    out.append([float(fi), float(yi), float(xi)])
    return out


def ref_golden_ratio(d: int) -> float:
    lo, hi = 1.0, 2.0  # bisection on x**(d+1) - x - 1, positive root lies in (1, 2)
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid ** (d + 1) - mid - 1 > 0:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def ref_direction(i: int) -> list[float]:
    """Direction number i (1-based) of the 3D R_d sequence mapped to the sphere."""
    phi = ref_golden_ratio(3)
    g = [NormalDist().inv_cdf((i * phi ** -(k + 1)) % 1.0) for k in range(3)]
    norm = math.sqrt(sum(v * v for v in g))
    return [v / norm for v in g]


def ref_pairs(
    cfg: RopeConfig, head_dim: int, kv_heads: int
) -> list[list[tuple[float, list[float]]]]:
    """For every table head, for every rotary pair: (omega, unit direction)."""
    theta = cfg.theta
    if cfg.kind == "golden_gate":
        n_pairs = head_dim // 2
        n_zero = round(cfg.zero_freq_fraction * n_pairs)
        live = n_pairs - n_zero
        w_min, w_max = 1.0 / theta, 1.0
        omegas = [0.0] * n_zero + [w_min * (w_max / w_min) ** (m / (live - 1)) for m in range(live)]
        return [
            [(omegas[k], ref_direction(h * n_pairs + k + 1)) for k in range(n_pairs)]
            for h in range(kv_heads)
        ]
    axes = cfg.resolved_axes(head_dim)
    pairs = []
    if cfg.kind == "mrope":
        rot = sum(axes)
        for k in range(rot // 2):
            axis = 0 if k < axes[0] // 2 else (1 if k < (axes[0] + axes[1]) // 2 else 2)
            pairs.append((theta ** (-2.0 * k / rot), [float(a == axis) for a in range(3)]))
    else:
        for axis, d in enumerate(axes):
            for k in range(d // 2):
                pairs.append((theta ** (-2.0 * k / d), [float(a == axis) for a in range(3)]))
    return [pairs]


def ref_rotate(
    x: torch.Tensor, positions: list[list[float]], pairs: list[list[tuple[float, list[float]]]]
) -> torch.Tensor:
    """Rotate pair (2k, 2k+1) of every head by complex multiplication with exp(i angle)."""
    b, h, n, _ = x.shape
    group = h // len(pairs)
    xs = x.tolist()
    for bi in range(b):
        for j in range(h):
            table = pairs[j // group]
            for t in range(n):
                for k, (omega, u) in enumerate(table):
                    angle = omega * sum(u[a] * positions[t][a] for a in range(3))
                    z = complex(xs[bi][j][t][2 * k], xs[bi][j][t][2 * k + 1]) * cmath.exp(
                        1j * angle
                    )
                    xs[bi][j][t][2 * k], xs[bi][j][t][2 * k + 1] = z.real, z.imag
    return torch.tensor(xs, dtype=torch.float64)


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _rotate(cfg: RopeConfig, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return apply_rope(x, Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS)(positions))


# ----------------------------------------------------------------------------------------------
# Against the references.


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grid", [(1, 2, 3), (2, 3, 2)])
def test_token_positions_match_reference(kind: str, grid: tuple[int, int, int]) -> None:
    cfg = _cfg(kind)
    got = token_positions(cfg, n_text=3, grid=grid)
    assert got.dtype == torch.float32
    want = torch.tensor(ref_positions(cfg, 3, grid), dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_golden_gate_directions_match_reference() -> None:
    got = golden_gate_directions(40)
    want = torch.tensor([ref_direction(i) for i in range(1, 41)], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_apply_rope_matches_reference(kind: str) -> None:
    cfg = _cfg(kind)
    for grid in [(1, 2, 3), (2, 3, 3)]:  # the same module at two resolutions: nothing cached
        rope = Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS)
        x = _randn(2, HEADS, 3 + math.prod(grid), HEAD_DIM, seed=len(kind))
        got = apply_rope(x, rope(token_positions(cfg, n_text=3, grid=grid)))
        want = ref_rotate(x, ref_positions(cfg, 3, grid), ref_pairs(cfg, HEAD_DIM, KV_HEADS))
        # float32 tables: angles carry ~1e-6 absolute error
        torch.testing.assert_close(got, want, rtol=0, atol=2e-5)


def test_rope_frequencies_match_reference() -> None:
    for kind in KINDS:
        cfg = _cfg(kind)
        freqs = rope_frequencies(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS)
        want = torch.tensor(
            [
                [[om * ui for ui in u] for om, u in table]
                for table in ref_pairs(cfg, HEAD_DIM, KV_HEADS)
            ],
            dtype=torch.float64,
        )
        torch.testing.assert_close(freqs, want, rtol=1e-12, atol=1e-12)


def test_mrope_on_text_is_1d_rope() -> None:
    cfg = _cfg("mrope")
    n_text = 6
    x = _randn(1, HEADS, n_text + 4, HEAD_DIM, seed=3)
    got = _rotate(cfg, x, token_positions(cfg, n_text=n_text, grid=(1, 2, 2)))[:, :, :n_text]
    want = x[:, :, :n_text].clone()
    for t in range(n_text):
        for k in range(HEAD_DIM // 2):
            angle = t * cfg.theta ** (-2.0 * k / HEAD_DIM)  # plain 1D RoPE, position t
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[0, :, t, 2 * k], x[0, :, t, 2 * k + 1]
            want[0, :, t, 2 * k] = a * c - b * s
            want[0, :, t, 2 * k + 1] = a * s + b * c
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)


# ----------------------------------------------------------------------------------------------
# Properties.


def _scores(cfg: RopeConfig, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    rope = Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS)
    tables = rope(pos)
    qr, kr = apply_rope(q, tables), apply_rope(k, tables)
    kr = kr.repeat_interleave(HEADS // KV_HEADS, dim=1)  # query head j reads kv head j // g
    return qr @ kr.transpose(-1, -2)


@pytest.mark.parametrize("kind", KINDS)
def test_scores_depend_only_on_relative_position(kind: str) -> None:
    cfg = _cfg(kind)
    n_text, grid = 2, (2, 3, 3)
    n = n_text + math.prod(grid)
    q, k = _randn(1, HEADS, n, HEAD_DIM, seed=1), _randn(1, KV_HEADS, n, HEAD_DIM, seed=2)
    pos = token_positions(cfg, n_text=n_text, grid=grid)
    shift = torch.tensor([1.0, -2.0, 3.0])
    if kind == "normalized":
        shift = shift * 0.25 * cfg.normalized_scale  # a shift in normalized coordinates
    base = _scores(cfg, q, k, pos)
    torch.testing.assert_close(_scores(cfg, q, k, pos + shift), base, rtol=0, atol=1e-4)
    # Sensitivity: stretching the positions changes relative offsets, so scores must move.
    assert (_scores(cfg, q, k, 1.5 * pos) - base).abs().max() > 0.1


@pytest.mark.parametrize("kind", ["axial", "partial", "golden_gate", "normalized"])
def test_text_tokens_are_not_rotated(kind: str) -> None:
    cfg = _cfg(kind)
    n_text = 4
    x = _randn(2, HEADS, n_text + 6, HEAD_DIM, seed=4, dtype=torch.float32)
    out = _rotate(cfg, x, token_positions(cfg, n_text=n_text, grid=(1, 2, 3)))
    assert torch.equal(out[:, :, :n_text], x[:, :, :n_text])
    assert not torch.equal(out[:, :, n_text:], x[:, :, n_text:])
    extra = _rotate(cfg, x[:, :, :3], extra_positions(3))
    assert torch.equal(extra, x[:, :, :3])


def test_partial_leaves_tail_bit_identical() -> None:
    cfg = _cfg("partial")
    rot = cfg.rotated_dim(HEAD_DIM)
    assert rot == HEAD_DIM // 2  # the report: "rotate only the first half of the head dimension"
    pos = token_positions(cfg, n_text=2, grid=(1, 3, 3))
    for dtype in (torch.float32, torch.bfloat16):
        x = _randn(1, HEADS, pos.shape[0], HEAD_DIM, seed=5, dtype=dtype)
        out = _rotate(cfg, x, pos)
        assert out.dtype == dtype
        assert torch.equal(out[..., rot:], x[..., rot:])
        assert not torch.equal(out[..., :rot], x[..., :rot])


@pytest.mark.parametrize("kind", KINDS)
def test_rotation_preserves_pair_norms(kind: str) -> None:
    cfg = _cfg(kind)
    pos = token_positions(cfg, n_text=3, grid=(2, 2, 3))
    x = _randn(2, HEADS, pos.shape[0], HEAD_DIM, seed=6)
    out = _rotate(cfg, x, pos)
    pair_norm = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(x), rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", ["partial", "golden_gate"])
def test_apply_rope_gradcheck(kind: str) -> None:
    cfg = _cfg(kind)
    pos = token_positions(cfg, n_text=1, grid=(1, 2, 2))
    tables = Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS)(pos)
    x = _randn(1, HEADS, pos.shape[0], HEAD_DIM, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, tables), (x,))


def test_gqa_query_head_uses_its_kv_group_table() -> None:
    cfg = _cfg("golden_gate")
    pos = token_positions(cfg, n_text=2, grid=(1, 2, 2))
    tables = Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS)(pos)
    assert tables.cos.shape == (1, KV_HEADS, pos.shape[0], HEAD_DIM // 2)
    x = _randn(1, 1, pos.shape[0], HEAD_DIM, seed=8).expand(1, HEADS, -1, -1)
    out = apply_rope(x, tables)
    g = HEADS // KV_HEADS
    for j in range(HEADS):
        one = RopeTables(
            cos=tables.cos[:, j // g : j // g + 1], sin=tables.sin[:, j // g : j // g + 1]
        )
        assert torch.equal(out[:, j : j + 1], apply_rope(x[:, j : j + 1], one))
    # identical inputs: same group -> same output, different group -> different output
    assert torch.equal(out[:, 0], out[:, 1])
    assert not torch.allclose(out[:, 0], out[:, 2])
    with pytest.raises(ValueError, match="num_kv_heads"):
        apply_rope(x[:, :3], tables)


def test_batched_positions_rotate_each_sample() -> None:
    cfg = _cfg("axial")
    rope = Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=1)
    pos = torch.stack([token_positions(cfg, n_text=1, grid=(1, 2, 2)) + s for s in (0.0, 3.0)])
    x = _randn(2, HEADS, pos.shape[1], HEAD_DIM, seed=9)
    tables = rope(pos)
    assert tables.cos.shape == (2, 1, pos.shape[1], HEAD_DIM // 2)
    out = apply_rope(x, tables)
    for i in range(2):
        torch.testing.assert_close(out[i : i + 1], apply_rope(x[i : i + 1], rope(pos[i])))


def test_low_precision_input_keeps_dtype_and_accuracy() -> None:
    cfg = _cfg("axial")
    pos = token_positions(cfg, n_text=2, grid=(1, 4, 4))
    x = _randn(1, HEADS, pos.shape[0], HEAD_DIM, seed=10, dtype=torch.float32)
    out = _rotate(cfg, x.bfloat16(), pos)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(
        out.float(), _rotate(cfg, x.bfloat16().float(), pos), rtol=1e-2, atol=1e-2
    )


def test_frequency_buffer_survives_casts_and_meta_init() -> None:
    cfg = _cfg("golden_gate")
    fresh = Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS).freqs
    cast = Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS).to(torch.bfloat16)
    assert cast.freqs.dtype == torch.float32 and torch.equal(cast.freqs, fresh)
    with torch.device("meta"):
        meta = Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS)
    assert meta.freqs.is_meta
    meta.to_empty(device="cpu")
    assert torch.equal(meta.freqs, fresh)
    assert "freqs" not in meta.state_dict()


def test_golden_gate_directions_are_unit_and_spread() -> None:
    u = golden_gate_directions(8 * 4)  # 8 kv heads x 4 frequencies
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(32, dtype=torch.float64))
    cos = (u @ u.T).clamp(-1, 1)
    off = ~torch.eye(32, dtype=torch.bool)
    # No two directions coincide (nor are antipodal): heads and frequencies all differ.
    assert torch.rad2deg(torch.acos(cos[off].abs())).min() > 2.0
    # Low discrepancy: at 256 directions the mean vector is far below the ~0.058 expected of
    # i.i.d. uniform directions (1.596 / sqrt(3 n)), and the second moment is close to I / 3.
    v = golden_gate_directions(256)
    assert v.mean(0).norm() < 0.02
    torch.testing.assert_close(
        v.T @ v / 256, torch.eye(3, dtype=torch.float64) / 3, rtol=0, atol=0.02
    )


def test_golden_gate_zero_frequencies_are_exactly_zero() -> None:
    cfg = _cfg("golden_gate", zero_freq_fraction=0.5)
    freqs = rope_frequencies(cfg, head_dim=HEAD_DIM, num_kv_heads=KV_HEADS)
    omega = freqs.norm(dim=-1)
    assert torch.equal(omega[:, :4], torch.zeros(KV_HEADS, 4, dtype=torch.float64))
    assert (omega[:, 4:] > 0).all()
    torch.testing.assert_close(omega[:, -1], torch.ones(KV_HEADS, dtype=torch.float64))
    torch.testing.assert_close(
        omega[:, 4], torch.full((KV_HEADS,), 1 / cfg.theta, dtype=torch.float64)
    )


def test_normalized_positions_are_resolution_independent() -> None:
    cfg = _cfg("normalized")
    s = cfg.normalized_scale
    p16 = token_positions(cfg, n_text=0, grid=(1, 16, 16)).view(16, 16, 3).double()
    p32 = token_positions(cfg, n_text=0, grid=(1, 32, 32)).view(32, 32, 3).double()
    # Each 16x16 cell is the union of a 2x2 block of 32x32 cells and sits at its centre.
    torch.testing.assert_close(p16, p32.view(16, 2, 16, 2, 3).mean(dim=(1, 3)), rtol=0, atol=1e-6)
    # Outer corners of the corner cells are the same (+-scale) at both resolutions.
    for p, n in ((p16, 16), (p32, 32)):
        half = s / n
        torch.testing.assert_close(p[0, 0, 1:] - half, torch.full((2,), -s, dtype=torch.float64))
        torch.testing.assert_close(p[-1, -1, 1:] + half, torch.full((2,), s, dtype=torch.float64))
        assert torch.equal(p[..., 0], torch.zeros(n, n, dtype=torch.float64))
    # A 8x16 grid keeps its aspect ratio: square cells, height spans [-s/2, s/2].
    wide = token_positions(cfg, n_text=0, grid=(1, 8, 16)).view(8, 16, 3).double()
    step = s * 2 / 16
    torch.testing.assert_close(
        wide[1, 0, 1] - wide[0, 0, 1], torch.tensor(step, dtype=torch.float64)
    )
    torch.testing.assert_close(
        wide[0, 1, 2] - wide[0, 0, 2], torch.tensor(step, dtype=torch.float64)
    )
    torch.testing.assert_close(wide[0, 0, 1] - step / 2, torch.tensor(-s / 2, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# Bad input.


def test_bad_configs_are_rejected_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="must be even"):
        RopeConfig().validate(15)
    with pytest.raises(ConfigError, match="make the axes sum to 16"):
        RopeConfig(axes_dims=(4, 4, 4)).validate(16)
    with pytest.raises(ConfigError, match="make the axes sum to 16"):
        Rope(RopeConfig(axes_dims=(4, 4, 4)), head_dim=16, num_kv_heads=1)
    with pytest.raises(ConfigError, match="must be even"):
        Rope(RopeConfig(kind="golden_gate"), head_dim=15, num_kv_heads=1)
    with pytest.raises(ConfigError, match="zero_freq_fraction"):
        Rope(RopeConfig(kind="golden_gate", zero_freq_fraction=1.5), head_dim=16, num_kv_heads=1)
    with pytest.raises(ConfigError, match="theta"):
        Rope(RopeConfig(theta=0.0), head_dim=16, num_kv_heads=1)
    with pytest.raises(ConfigError, match="num_kv_heads"):
        Rope(RopeConfig(), head_dim=16, num_kv_heads=0)


def test_bad_shapes_are_rejected() -> None:
    cfg = _cfg("axial")
    tables = Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=1)(
        token_positions(cfg, n_text=1, grid=(1, 2, 2))
    )
    with pytest.raises(ValueError, match="full"):
        apply_rope(torch.zeros(1, 2, 4, HEAD_DIM), tables)
    with pytest.raises(ValueError, match="head_dim=8"):
        apply_rope(torch.zeros(1, 2, 5, 8), tables)
    with pytest.raises(ValueError, match="grid"):
        token_positions(cfg, n_text=1, grid=(1, 0, 2))
