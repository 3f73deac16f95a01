"""The DiT end to end: switches, streams, padding, resolution, init, boundary layers."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
import torch

from k2_dit.blocks import DualStreamBlock, SingleStreamBlock
from k2_dit.config import AttentionConfig, DiTConfig, RopeConfig, TextConfig
from k2_dit.model import DiT, LearnedPosEmbed, patchify, sincos_2d, unpatchify
from k2_dit.rope import token_positions

TEXT = TextConfig(
    encoder_dim=16, num_layers=3, aggregation_heads=4, refiner_layers=1, max_tokens=16
)


def tiny(**overrides) -> DiTConfig:
    base = dict(
        in_channels=4,
        patch_size=2,
        dim=48,
        depth=3,
        attention=AttentionConfig(num_heads=4, num_kv_heads=2),
        text=TEXT,
        timestep_tokens=2,
        timestep_freq_dim=16,
        pos_embed_grid=4,
    )
    base.update(overrides)
    return DiTConfig(**base)


def randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.15) -> None:
    # Zero-initialised gates and output layers would make outputs (and most gradients) zero.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def inputs(cfg: DiTConfig, *, b: int = 2, size: int = 8, n_text: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, cfg.in_channels, size, size, generator=g)
    t = torch.rand(b, generator=g)
    text = torch.randn(b, n_text, cfg.text.num_layers, cfg.text.encoder_dim, generator=g)
    mask = torch.ones(b, n_text, dtype=torch.bool)
    mask[0, 3:] = False  # padded prompt
    if b > 1:
        mask[1] = False  # unconditional row (classifier-free guidance)
    return x, t, text, mask


# ------------------------------------------------------------------ covering array of switches

SWITCHES = {
    "norm": ["rmsnorm", "layernorm"],
    "mlp": ["swiglu", "gelu"],
    "kind": ["mha", "gqa", "mla"],
    "gate": ["none", "elementwise", "headwise"],
    "qk_norm": [True, False],
    "q_lora_rank": [0, 8],
    "streams": ["single", "dual", "hybrid"],
    "timestep": ["shared_bias", "adaln_mlp", "in_context", "none"],
    "rope": ["axial", "partial", "golden_gate", "mrope", "normalized"],
    "pos_embed": ["none", "learned_sincos"],
    "patch_size": [1, 2],
    "aggregation": ["attention", "last"],
}


def pairwise_cases(seed: int = 0) -> list[dict]:
    """Greedy covering array: every pair of values of every two switches appears at least once."""
    names = list(SWITCHES)
    uncovered = {
        ((a, va), (b, vb))
        for a, b in itertools.combinations(names, 2)
        for va in SWITCHES[a]
        for vb in SWITCHES[b]
    }
    rng = random.Random(seed)
    cases = []
    while uncovered:
        best, best_gain = None, -1
        for _ in range(60):
            cand = {n: rng.choice(SWITCHES[n]) for n in names}
            gain = sum(
                ((a, cand[a]), (b, cand[b])) in uncovered
                for a, b in itertools.combinations(names, 2)
            )
            if gain > best_gain:
                best, best_gain = cand, gain
        if best_gain == 0:  # random candidates missed: build one around an uncovered pair
            (a, va), (b, vb) = next(iter(uncovered))
            best = {**{n: rng.choice(SWITCHES[n]) for n in names}, a: va, b: vb}
        uncovered -= {((a, best[a]), (b, best[b])) for a, b in itertools.combinations(names, 2)}
        cases.append(best)
    return cases


CASES = pairwise_cases()


def config_for(case: dict) -> DiTConfig:
    return tiny(
        norm=case["norm"],
        mlp=case["mlp"],
        attention=AttentionConfig(
            kind=case["kind"],
            num_heads=4,
            num_kv_heads=2,
            gate=case["gate"],
            qk_norm=case["qk_norm"],
            q_lora_rank=case["q_lora_rank"],
        ),
        streams=case["streams"],
        timestep=case["timestep"],
        rope=RopeConfig(kind=case["rope"]),
        pos_embed=case["pos_embed"],
        patch_size=case["patch_size"],
        text=dataclasses.replace(TEXT, aggregation=case["aggregation"]),
    )


def test_covering_array_covers_every_value_and_pair() -> None:
    for name, values in SWITCHES.items():
        assert {c[name] for c in CASES} == set(values)
    assert len(CASES) < 30


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_forward_backward_reaches_every_parameter(case: dict) -> None:
    cfg = config_for(case)
    model = DiT(cfg)
    randomise(model)
    x, t, text, mask = inputs(cfg)
    out = model(x, t, text, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    # No parameter is dead by design (a pure dual network's last block has no text queries,
    # output projection or MLP), so every gradient must be non-zero after randomisation.
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ------------------------------------------------------------------ properties


@pytest.mark.parametrize(
    "overrides",
    [
        dict(streams="single"),
        dict(streams="dual", timestep="adaln_mlp"),
        dict(streams="hybrid", timestep="in_context"),
        dict(streams="single", timestep="none", rope=RopeConfig(kind="mrope")),
    ],
    ids=["single", "dual", "hybrid-in-context", "single-mrope"],
)
def test_padded_text_does_not_affect_the_output(overrides: dict) -> None:
    cfg = tiny(**overrides)
    model = DiT(cfg)
    randomise(model, seed=2)
    x, t, text, mask = inputs(cfg)
    out = model(x, t, text, mask)
    text2 = text.clone()
    text2[~mask] = 100 * torch.randn_like(text2[~mask])
    out2 = model(x, t, text2, mask)
    torch.testing.assert_close(out2, out, rtol=1e-5, atol=1e-5)
    # The real tokens do matter (the invariance is not vacuous).
    text3 = text.clone()
    text3[0, 0] += 1.0
    assert not torch.allclose(model(x, t, text3, mask)[0], out[0], atol=1e-4)


def test_padding_is_masked_out_like_a_shorter_prompt() -> None:
    # Axial RoPE puts every text token at position 0, so dropping padded tokens must give
    # exactly the output of the padded batch when the padding is masked everywhere.
    for streams in ("single", "dual"):
        cfg = tiny(streams=streams, timestep="in_context")
        model = DiT(cfg)
        randomise(model, seed=6)
        x, t, text, mask = inputs(cfg, b=1)
        short = model(x, t, text[:, :3], mask[:, :3])
        torch.testing.assert_close(model(x, t, text, mask), short, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(x, t, text, torch.ones_like(mask)), short, atol=1e-4)


def test_sequence_layout_puts_timestep_tokens_first_at_position_zero() -> None:
    cfg = tiny(timestep="in_context", timestep_tokens=2, rope=RopeConfig(kind="mrope"))
    model = DiT(cfg)
    seen = []
    model.rope.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x, t, text, mask = inputs(cfg, size=6)
    model(x, t, text, mask)
    (positions,) = seen
    grid = (1, 6 // cfg.patch_size, 6 // cfg.patch_size)
    assert torch.equal(positions[:2], torch.zeros(2, 3))
    assert torch.equal(positions[2:], token_positions(cfg.rope, n_text=text.shape[1], grid=grid))


def test_unconditional_row_equals_a_batch_of_one() -> None:
    cfg = tiny(streams="hybrid")
    model = DiT(cfg)
    randomise(model, seed=3)
    x, t, text, mask = inputs(cfg)
    out = model(x, t, text, mask)
    alone = model(x[1:], t[1:], torch.zeros_like(text[1:]), mask[1:])
    torch.testing.assert_close(out[1:], alone, rtol=1e-5, atol=1e-5)


def test_hybrid_first_third_computes_what_dual_computes() -> None:
    dual_cfg = tiny(streams="dual", depth=6)
    hybrid_cfg = dataclasses.replace(dual_cfg, streams="hybrid")
    assert hybrid_cfg.num_dual_blocks == 2
    dual, hybrid = DiT(dual_cfg), DiT(hybrid_cfg)
    randomise(dual, seed=4)
    shared = {k: v for k, v in dual.state_dict().items() if k in hybrid.state_dict()}
    shared = {k: v for k, v in shared.items() if v.shape == hybrid.state_dict()[k].shape}
    missing = hybrid.load_state_dict(shared, strict=False).missing_keys
    assert all(k.startswith(("blocks.2.", "blocks.3.", "blocks.4.", "blocks.5.")) for k in missing)
    assert isinstance(hybrid.blocks[1], DualStreamBlock)
    assert isinstance(hybrid.blocks[2], SingleStreamBlock)

    captured: dict[str, tuple] = {}

    def hook(name):
        def fn(_module, _args, output):
            captured[name] = output

        return fn

    dual.blocks[1].register_forward_hook(hook("dual"))
    hybrid.blocks[1].register_forward_hook(hook("hybrid"))
    x, t, text, mask = inputs(dual_cfg)
    with torch.no_grad():
        dual(x, t, text, mask)
        hybrid(x, t, text, mask)
    for got, want in zip(captured["hybrid"], captured["dual"], strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("timestep", ["shared_bias", "adaln_mlp"])
def test_every_block_is_the_identity_at_init(timestep: str) -> None:
    model = DiT(tiny(streams="hybrid", timestep=timestep, depth=4))
    seen = []

    def fn(_module, args, output):
        if isinstance(output, tuple):  # dual: (txt, img) in, (txt, img) out
            seen.append(all(torch.equal(a, o) for a, o in zip(args[:2], output, strict=True)))
        else:
            seen.append(torch.equal(args[0], output))

    for block in model.blocks:
        block.register_forward_hook(fn)
    x, t, text, mask = inputs(model.config)
    out = model(x, t, text, mask)
    assert seen == [True] * 4
    assert torch.equal(out, torch.zeros_like(out))  # zero final projection


def test_resolution_change_uses_the_same_weights() -> None:
    cfg = tiny(pos_embed="learned_sincos", pos_embed_grid=8)  # table stored at the 16 px grid
    model = DiT(cfg)
    randomise(model, seed=5)
    for size in (16, 32):
        x, t, text, mask = inputs(cfg, size=size)
        out = model(x, t, text, mask)
        assert out.shape == x.shape and torch.isfinite(out).all()
        out.mean().backward()
    assert model.pos_embed.table.grad is not None
    with pytest.raises(ValueError, match="not divisible by patch_size=2"):
        model(*inputs(cfg, size=15))


def test_patchify_round_trip_and_layout() -> None:
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).view(2, 3, 4, 6)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 6, 12)
    # token (row 1, col 2) holds channel c's 2x2 patch at rows 2-3, cols 4-5, flattened (c, p, q)
    torch.testing.assert_close(tokens[0, 1 * 3 + 2].view(3, 2, 2), x[0, :, 2:4, 4:6])
    torch.testing.assert_close(unpatchify(tokens, grid=(2, 3), patch_size=2), x)


def test_sincos_2d_matches_reference() -> None:
    dim, grid = 8, (2, 3)
    table = sincos_2d(dim, grid)
    for r in range(2):
        for c in range(3):
            want = []
            for pos in (r, c):
                freqs = [1.0 / 10000 ** (k / 2) for k in range(2)]
                want += [torch.tensor(pos * f).sin() for f in freqs] + [
                    torch.tensor(pos * f).cos() for f in freqs
                ]
            torch.testing.assert_close(table[r * 3 + c], torch.stack(want).float())


def _bilinear_ref(img: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Half-pixel-centre bilinear resize with edge clamping (align_corners=False)."""
    c, h, w = img.shape
    out = torch.zeros(c, out_h, out_w, dtype=img.dtype)
    for i in range(out_h):
        for j in range(out_w):
            y = max((i + 0.5) * h / out_h - 0.5, 0.0)
            x = max((j + 0.5) * w / out_w - 0.5, 0.0)
            y0, x0 = min(int(y), h - 1), min(int(x), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            out[:, i, j] = (
                img[:, y0, x0] * (1 - dy) * (1 - dx)
                + img[:, y0, x1] * (1 - dy) * dx
                + img[:, y1, x0] * dy * (1 - dx)
                + img[:, y1, x1] * dy * dx
            )
    return out


def test_learned_pos_embed_resizes_bilinearly_and_is_exact_at_its_grid() -> None:
    pe = LearnedPosEmbed(8, grid=3)
    assert torch.equal(pe((3, 3)), pe.table)
    got = pe((5, 4)).detach()
    square = pe.table.detach().view(3, 3, 8).permute(2, 0, 1).double()
    ref = _bilinear_ref(square, 5, 4).permute(1, 2, 0).reshape(20, 8)
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-6)


def test_boundary_layers_and_parameter_counts() -> None:
    model = DiT(tiny())
    first, last = model.boundary_linear_names()
    modules = dict(model.named_modules())
    assert modules[first] is model.first_layer and modules[last] is model.last_layer
    assert model.first_layer.in_features == model.config.patch_dim
    assert model.last_layer.out_features == model.config.patch_dim
    total = sum(p.numel() for p in model.parameters())
    text = sum(p.numel() for p in model.text_adapter.parameters())
    assert model.num_parameters() == total
    assert model.num_parameters(exclude_text=True) == total - text > 0


# ------------------------------------------------------------------ pooled text conditioning


def test_pooled_text_is_the_mlp_of_the_masked_mean_added_to_the_timestep_embedding() -> None:
    cfg = tiny(text=dataclasses.replace(TEXT, pooled=True))
    model = DiT(cfg).double()
    randomise(model, seed=4)
    x, t, text, mask = inputs(cfg)
    x, t, text = x.double(), t.double(), text.double()
    ctx = model.text_adapter(text, mask)
    # Reference: mean over real tokens (0 for the unconditional row), then Linear-SiLU-Linear.
    pool = model.text_adapter.pool
    rows = []
    for i in range(x.shape[0]):
        real = ctx[i][mask[i]]
        mean = real.mean(0) if len(real) else torch.zeros(cfg.dim, dtype=torch.float64)
        hidden = mean @ pool[0].weight.T + pool[0].bias
        hidden = hidden * torch.sigmoid(hidden)
        rows.append(hidden @ pool[2].weight.T + pool[2].bias)
    expected = torch.stack(rows)
    torch.testing.assert_close(model.text_adapter.pooled(ctx, mask), expected)
    seen = []
    model.conditioning.register_forward_hook(lambda _m, _a, out: seen.append(out.embedding))
    model(x, t, text, mask)
    plain = model.conditioning.embedder(t)
    torch.testing.assert_close(seen[0], plain + expected)
    # A prompt change now reaches the modulation of every block.
    text2 = text.clone()
    text2[0, 0] += 1.0
    model(x, t, text2, mask)
    assert not torch.allclose(seen[1][0], seen[0][0])
    torch.testing.assert_close(seen[1][1], seen[0][1])


def test_pooled_text_needs_adaln() -> None:
    with pytest.raises(ValueError, match=r"text\.pooled=True.*shared_bias"):
        tiny(timestep="in_context", text=dataclasses.replace(TEXT, pooled=True))
