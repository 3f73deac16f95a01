"""iREPA: z-scoring, cosine loss, resampling, projectors, block capture, schedule."""

from __future__ import annotations

import json
import math
import re
import shutil

import jaxtyping
import pytest
import torch
from torch.autograd import gradcheck

from k2_dit.config import AttentionConfig, DiTConfig, TextConfig
from k2_dit.model import DiT, unpatchify
from k2_dit.repa import (
    ConvProjector,
    MLPProjector,
    ProjectorConfig,
    RepaSchedule,
    cache_teacher_features,
    capture_block_output,
    load_teacher,
    load_teacher_features,
    load_timm_teacher,
    make_projector,
    negative_cosine_similarity,
    repa_loss,
    resample_tokens,
    spatial_zscore,
)

D = torch.float64


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


# ------------------------------------------------------- float64 reference transcriptions


def ref_zscore(x: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    b, n, e = x.shape
    out = torch.empty_like(x)
    for i in range(b):
        for c in range(e):
            col = [float(x[i, k, c]) for k in range(n)]
            mean = sum(col) / n
            std = math.sqrt(sum((v - mean) ** 2 for v in col) / (n - 1))
            for k in range(n):
                out[i, k, c] = (col[k] - alpha * mean) / (std + eps)
    return out


def ref_neg_cos(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    b, n, _ = p.shape
    out = torch.empty(b, dtype=D)
    for i in range(b):
        total = 0.0
        for k in range(n):
            u, v = p[i, k].tolist(), t[i, k].tolist()
            dot = sum(a * c for a, c in zip(u, v, strict=True))
            nu = max(math.sqrt(sum(a * a for a in u)), 1e-12)
            nv = max(math.sqrt(sum(a * a for a in v)), 1e-12)
            total += dot / (nu * nv)
        out[i] = -total / n
    return out


def ref_bilinear(x: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    # Half-pixel-centre bilinear (align_corners=False), source index clamped at 0.
    b, _, e = x.shape
    (gh, gw), (oh, ow) = grid, size
    img = x.reshape(b, gh, gw, e)

    def taps(o: int, n_in: int, n_out: int) -> tuple[int, int, float]:
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = math.floor(src)
        i1 = i0 + 1 if i0 < n_in - 1 else i0
        return i0, i1, src - i0

    out = torch.empty(b, oh, ow, e, dtype=D)
    for r in range(oh):
        r0, r1, lr = taps(r, gh, oh)
        for c in range(ow):
            c0, c1, lc = taps(c, gw, ow)
            out[:, r, c] = (
                (1 - lr) * (1 - lc) * img[:, r0, c0]
                + (1 - lr) * lc * img[:, r0, c1]
                + lr * (1 - lc) * img[:, r1, c0]
                + lr * lc * img[:, r1, c1]
            )
    return out.reshape(b, oh * ow, e)


def ref_conv(x: torch.Tensor, grid: tuple[int, int], w: torch.Tensor, bias: torch.Tensor):
    # Zero-padded "same" convolution on the row-major token grid, by explicit sums.
    b, _, _ = x.shape
    gh, gw = grid
    o, _, k, _ = w.shape
    half = k // 2
    img = x.reshape(b, gh, gw, -1)
    out = torch.zeros(b, gh, gw, o, dtype=D)
    for r in range(gh):
        for c in range(gw):
            acc = bias.expand(b, o).clone()
            for dr in range(k):
                for dc in range(k):
                    rr, cc = r + dr - half, c + dc - half
                    if 0 <= rr < gh and 0 <= cc < gw:
                        acc = acc + img[:, rr, cc] @ w[:, :, dr, dc].T
            out[:, r, c] = acc
    return out.reshape(b, gh * gw, o)


# ------------------------------------------------------------------------------ the maths


@pytest.mark.parametrize("alpha", [0.6, 1.0, 0.0])
def test_spatial_zscore_matches_reference(alpha: float) -> None:
    x = rand(2, 7, 3) * 3 + 1.5
    torch.testing.assert_close(
        spatial_zscore(x, alpha=alpha, eps=1e-6), ref_zscore(x, alpha, 1e-6), rtol=1e-12, atol=1e-12
    )


def test_spatial_zscore_alpha_one_gives_zero_mean_unit_std_tokens() -> None:
    x = rand(3, 12, 5) * 4 + 7
    z = spatial_zscore(x, alpha=1.0, eps=0.0)
    torch.testing.assert_close(z.mean(dim=1), torch.zeros(3, 5, dtype=D), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(dim=1), torch.ones(3, 5, dtype=D), atol=1e-12, rtol=0)
    # α < 1 keeps (1 - α) of the mean in units of std.
    z6 = spatial_zscore(x, alpha=0.6, eps=0.0)
    torch.testing.assert_close(z6.mean(dim=1), 0.4 * x.mean(dim=1) / x.std(dim=1))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        spatial_zscore(x[:, :1], alpha=1.0)


def test_negative_cosine_matches_reference_and_bounds() -> None:
    p, t = rand(3, 6, 4, seed=1), rand(3, 6, 4, seed=2)
    torch.testing.assert_close(negative_cosine_similarity(p, t), ref_neg_cos(p, t))
    scale = rand(3, 6, 1, seed=3).abs() + 0.1
    loss = negative_cosine_similarity(p, t)
    # Per-token positive rescaling changes nothing; identical tokens give -1, opposite +1.
    torch.testing.assert_close(negative_cosine_similarity(p * scale, t), loss)
    torch.testing.assert_close(negative_cosine_similarity(p, p), -torch.ones(3, dtype=D))
    torch.testing.assert_close(negative_cosine_similarity(p, -p), torch.ones(3, dtype=D))


@pytest.mark.parametrize(("grid", "size"), [((3, 5), (6, 4)), ((4, 4), (2, 3)), ((2, 6), (5, 5))])
def test_resample_tokens_matches_bilinear_reference(grid, size) -> None:
    x = rand(2, grid[0] * grid[1], 3)
    out = resample_tokens(x, grid=grid, size=size)
    torch.testing.assert_close(out, ref_bilinear(x, grid, size))
    assert resample_tokens(x, grid=grid, size=grid) is x
    const = torch.full((1, grid[0] * grid[1], 2), 2.5, dtype=D)
    torch.testing.assert_close(
        resample_tokens(const, grid=grid, size=size), const[:, :1].expand(1, size[0] * size[1], 2)
    )
    with pytest.raises(ValueError, match="grid"):
        resample_tokens(x, grid=(grid[0] + 1, grid[1]), size=size)


def test_repa_loss_matches_reference_pipeline_on_mismatched_grids() -> None:
    proj, teacher = rand(2, 4 * 6, 5, seed=4), rand(2, 3 * 3, 5, seed=5)
    got = repa_loss(proj, teacher, grid=(4, 6), teacher_grid=(3, 3), zscore_alpha=0.6)
    target = ref_zscore(ref_bilinear(teacher, (3, 3), (4, 6)), 0.6, 1e-6)
    torch.testing.assert_close(got, ref_neg_cos(proj, target))
    plain = repa_loss(proj, teacher, grid=(4, 6), teacher_grid=(3, 3), zscore_alpha=None)
    torch.testing.assert_close(plain, ref_neg_cos(proj, ref_bilinear(teacher, (3, 3), (4, 6))))


def test_repa_loss_is_minus_one_when_projection_reproduces_the_target() -> None:
    tokens = rand(2, 3 * 5, 6)
    proj = ConvProjector(6, teacher_dim=6, kernel_size=3).double()
    with torch.no_grad():  # identity: centre tap = I, other taps and bias 0
        proj.conv.weight.zero_()
        proj.conv.weight[:, :, 1, 1] = torch.eye(6, dtype=D)
        proj.conv.bias.zero_()
    out = proj(tokens, grid=(3, 5))
    torch.testing.assert_close(out, tokens)
    loss = repa_loss(out, tokens, grid=(3, 5), teacher_grid=(3, 5), zscore_alpha=None)
    torch.testing.assert_close(loss, -torch.ones(2, dtype=D))
    normed = spatial_zscore(tokens, alpha=0.6)
    loss = repa_loss(normed, tokens, grid=(3, 5), teacher_grid=(3, 5), zscore_alpha=0.6)
    torch.testing.assert_close(loss, -torch.ones(2, dtype=D))


def test_repa_loss_treats_teacher_as_constant_and_checks_shapes() -> None:
    proj = rand(2, 6, 4).requires_grad_()
    teacher = rand(2, 4, 4, seed=1).requires_grad_()
    repa_loss(proj, teacher, grid=(2, 3), teacher_grid=(2, 2)).sum().backward()
    assert teacher.grad is None and proj.grad is not None and proj.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="projected has 6 tokens but its grid 3x3"):
        repa_loss(proj, teacher, grid=(3, 3), teacher_grid=(2, 2))
    with pytest.raises(ValueError, match="teacher has 4 tokens but its grid 1x3"):
        repa_loss(proj, teacher, grid=(2, 3), teacher_grid=(1, 3))


def test_gradcheck_loss_wrt_projected_tokens() -> None:
    proj = rand(2, 2 * 3, 3).requires_grad_()
    teacher = rand(2, 3 * 2, 3, seed=1)
    assert gradcheck(
        lambda p: repa_loss(p, teacher, grid=(2, 3), teacher_grid=(3, 2), zscore_alpha=0.6),
        (proj,),
    )


def test_gradcheck_conv_projector_input_through_loss() -> None:
    torch.manual_seed(0)
    proj = ConvProjector(3, teacher_dim=4, kernel_size=3).double()
    x = rand(2, 2 * 3, 3).requires_grad_()
    teacher = rand(2, 6, 4, seed=1)
    assert gradcheck(
        lambda t: repa_loss(proj(t, grid=(2, 3)), teacher, grid=(2, 3), teacher_grid=(2, 3)), (x,)
    )


# ------------------------------------------------------------------------------ projectors


@pytest.mark.parametrize(("grid", "k"), [((3, 5), 3), ((4, 2), 3), ((2, 3), 1), ((5, 5), 5)])
def test_conv_projector_matches_reference_on_any_grid(grid, k) -> None:
    torch.manual_seed(1)
    proj = ConvProjector(4, teacher_dim=3, kernel_size=k).double()
    x = rand(2, grid[0] * grid[1], 4)
    w, bias = proj.conv.weight.detach(), proj.conv.bias.detach()
    torch.testing.assert_close(proj(x, grid=grid), ref_conv(x, grid, w, bias))


def test_projector_errors_name_the_problem() -> None:
    proj = ConvProjector(4, teacher_dim=3)
    with pytest.raises(ValueError, match="12 tokens for a 3x3 grid"):
        proj(torch.randn(1, 12, 4), grid=(3, 3))
    with pytest.raises(ValueError, match="dim=4"):
        proj(torch.randn(1, 12, 5), grid=(3, 4))
    with pytest.raises(ValueError, match="odd"):
        ConvProjector(4, teacher_dim=3, kernel_size=2)
    # jaxtyping's test-time check rejects the Literal first; the config's own check is the
    # one users without it see.
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="kind"):
        ProjectorConfig(kind="linear")


def test_mlp_projector_matches_formula_and_config_builds_both() -> None:
    torch.manual_seed(2)
    mlp = MLPProjector(4, teacher_dim=3, hidden_dim=5).double()
    x = rand(2, 6, 4)
    (w1, b1), (w2, b2), (w3, b3) = [
        (m.weight, m.bias) for m in mlp.mlp if isinstance(m, torch.nn.Linear)
    ]

    def silu(v: torch.Tensor) -> torch.Tensor:
        return v / (1 + torch.exp(-v))

    expected = silu(silu(x @ w1.T + b1) @ w2.T + b2) @ w3.T + b3
    torch.testing.assert_close(mlp(x, grid=(2, 3)), expected)
    assert isinstance(make_projector(ProjectorConfig(teacher_dim=8), dim=4), ConvProjector)
    built = make_projector(ProjectorConfig(kind="mlp", teacher_dim=8, hidden_dim=16), dim=4)
    assert isinstance(built, MLPProjector) and built(torch.randn(1, 5, 4)).shape == (1, 5, 8)


# ------------------------------------------------------------------------- block capture

TEXT = TextConfig(encoder_dim=16, num_layers=2, aggregation_heads=2, refiner_layers=0, max_tokens=8)


def tiny_dit(streams: str, *, timestep: str = "shared_bias", seed: int = 0) -> DiT:
    cfg = DiTConfig(
        in_channels=4,
        patch_size=2,
        dim=32,
        depth=3,
        streams=streams,
        timestep=timestep,
        timestep_tokens=2,
        timestep_freq_dim=16,
        attention=AttentionConfig(num_heads=4, num_kv_heads=2),
        text=TEXT,
    )
    torch.manual_seed(seed)
    model = DiT(cfg)
    with torch.no_grad():  # zero-initialised gates/outputs would make everything trivial
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def dit_inputs(b: int = 2, h: int = 8, w: int = 12):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(b, 4, h, w, generator=g)
    return (
        x,
        torch.rand(b, generator=g),
        torch.randn(b, 3, 2, 16, generator=g),
        torch.ones(b, 3, dtype=torch.bool),
    )


@pytest.mark.parametrize("streams", ["single", "dual", "hybrid"])
def test_capture_of_last_block_reproduces_the_output(streams: str) -> None:
    # With in-context timesteps there is no final modulation, so the output is
    # unpatchify(final_proj(final_norm(image tokens of the last block))).
    model = tiny_dit(streams, timestep="in_context")
    x, t, text, mask = dit_inputs()
    with capture_block_output(model, -1) as cap:
        out = model(x, t, text, mask)
    assert cap.grid == (4, 6) and cap.block_index == 2
    rebuilt = unpatchify(model.final_proj(model.final_norm(cap.tokens)), grid=(4, 6), patch_size=2)
    torch.testing.assert_close(rebuilt, out)


@pytest.mark.parametrize(("streams", "index"), [("single", 0), ("hybrid", 0), ("hybrid", 1)])
def test_capture_trains_blocks_up_to_the_index_only(streams: str, index: int) -> None:
    model = tiny_dit(streams)
    x, t, text, mask = dit_inputs()
    with capture_block_output(model, index) as cap:
        model(x, t, text, mask)
    assert cap.tokens.shape == (2, 24, 32)
    cap.tokens.square().mean().backward()
    for i, block in enumerate(model.blocks):
        grads = [p.grad for p in block.parameters()]
        if i <= index:
            assert any(g is not None and g.abs().sum() > 0 for g in grads), i
        else:
            assert all(g is None for g in grads), i
    assert model.final_proj.weight.grad is None


def test_capture_hooks_are_removed_and_errors_are_clear() -> None:
    model = tiny_dit("single")
    x, t, text, mask = dit_inputs(b=1, h=6, w=4)
    with capture_block_output(model, 1) as cap:
        with pytest.raises(RuntimeError, match="has not run yet"):
            _ = cap.tokens
        model(x, t, text, mask)
    assert cap.grid == (3, 2) and cap.tokens.shape == (1, 6, 32)
    assert not model._forward_pre_hooks and not model.blocks[1]._forward_hooks
    with pytest.raises(IndexError, match="depth 3"), capture_block_output(model, 3):
        pass
    with pytest.raises(TypeError, match="blocks"), capture_block_output(torch.nn.Linear(2, 2), 0):
        pass


def test_end_to_end_alignment_step_reaches_projector_and_early_blocks() -> None:
    model = tiny_dit("single")
    proj = make_projector(ProjectorConfig(teacher_dim=8), dim=32)
    x, t, text, mask = dit_inputs()
    teacher = torch.randn(2, 3 * 3, 8)  # a coarser teacher grid than the DiT's 4x6
    with capture_block_output(model, 0) as cap:
        v = model(x, t, text, mask)
    loss = repa_loss(proj(cap.tokens, grid=cap.grid), teacher, grid=cap.grid, teacher_grid=(3, 3))
    assert loss.shape == (2,) and bool(((loss >= -1) & (loss <= 1)).all())
    (v.square().mean() + loss.mean()).backward()
    assert proj.conv.weight.grad.abs().sum() > 0
    assert model.blocks[0].attn.q_proj.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ schedule


def test_schedule_switches_off_exactly_at_until_step() -> None:
    s = RepaSchedule(coeff=0.5, until_step=10)
    assert [s.weight(i) for i in (0, 9, 10, 11)] == [0.5, 0.5, 0.0, 0.0]
    assert s.active(9) and not s.active(10)
    assert RepaSchedule(coeff=1.0).active(10**9)
    assert not RepaSchedule(coeff=0.0).active(0)
    assert not RepaSchedule(until_step=0).active(0)
    e = RepaSchedule.for_epochs(epochs=1, steps_per_epoch=100)
    assert e.until_step == 100 and e.active(99) and not e.active(100)
    assert RepaSchedule.for_epochs(epochs=0.25, steps_per_epoch=10).until_step == 3


def test_schedule_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="coeff"):
        RepaSchedule(coeff=-1.0)
    with pytest.raises(ValueError, match="until_step"):
        RepaSchedule(until_step=-3)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        RepaSchedule.for_epochs(epochs=1, steps_per_epoch=0)
    with pytest.raises(ValueError, match="step=-1"):
        RepaSchedule().active(-1)


# ------------------------------------------------------------------------------- teachers

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
SMALL = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def _hf_teachers():
    import transformers as tf

    return {  # name: (model, number of prefix tokens, input mean/std)
        "dinov2": (
            tf.Dinov2Model(tf.Dinov2Config(**SMALL, patch_size=4, image_size=16)),
            1,
            IMAGENET,
        ),
        "dinov2_reg": (
            tf.Dinov2WithRegistersModel(
                tf.Dinov2WithRegistersConfig(
                    **SMALL, patch_size=4, image_size=16, num_register_tokens=2
                )
            ),
            3,
            IMAGENET,
        ),
        "dinov3": (
            tf.DINOv3ViTModel(
                tf.DINOv3ViTConfig(**SMALL, patch_size=4, image_size=16, num_register_tokens=4)
            ),
            5,
            IMAGENET,
        ),
        "siglip": (
            tf.SiglipVisionModel(tf.SiglipVisionConfig(**SMALL, patch_size=4, image_size=16)),
            0,
            HALF,
        ),
    }


@pytest.fixture(scope="module")
def saved_teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    torch.manual_seed(0)
    for name, (model, prefix, norm) in _hf_teachers().items():
        model.save_pretrained(root / name)
        out[name] = (root / name, model.eval(), prefix, norm)
    return out


@pytest.mark.parametrize("name", ["dinov2", "dinov2_reg", "dinov3", "siglip"])
def test_teacher_round_trip_strips_prefix_tokens(saved_teachers, name: str) -> None:
    path, model, prefix, (mean, std) = saved_teachers[name]
    teacher = load_teacher(path)
    images = torch.rand(2, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    tokens, grid = teacher(images)
    assert grid == (3, 5) and tokens.shape == (2, 15, 16) and not tokens.requires_grad
    pixels = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    kwargs = {"interpolate_pos_encoding": True} if name == "siglip" else {}
    with torch.no_grad():
        hidden = model(pixel_values=pixels, **kwargs).last_hidden_state
    assert hidden.shape[1] == 15 + prefix
    torch.testing.assert_close(tokens, hidden[:, prefix:])
    resized, g = teacher(images, grid=(2, 7))  # onto a given (student) grid
    assert g == (2, 7) and resized.shape == (2, 14, 16)


def test_teacher_siglip2_naflex_matches_processor_patch_layout(tmp_path) -> None:
    import transformers as tf

    torch.manual_seed(0)
    model = tf.Siglip2VisionModel(
        tf.Siglip2VisionConfig(**SMALL, patch_size=4, num_patches=16)
    ).eval()
    model.save_pretrained(tmp_path)
    images = torch.rand(1, 3, 8, 12)
    tokens, grid = load_teacher(tmp_path)(images)
    # The processor's layout: patch (r, c) flattened as (row-in-patch, col-in-patch, channel).
    pix = (images[0] - 0.5) / 0.5
    patches = torch.stack(
        [
            pix[:, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].permute(1, 2, 0).reshape(-1)
            for r in range(2)
            for c in range(3)
        ]
    )[None]
    with torch.no_grad():
        ref = model(
            pixel_values=patches,
            pixel_attention_mask=torch.ones(1, 6, dtype=torch.long),
            spatial_shapes=torch.tensor([[2, 3]]),
        ).last_hidden_state
    assert grid == (2, 3)
    torch.testing.assert_close(tokens, ref)


def test_teacher_errors_and_preprocessor_stats(saved_teachers, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nowhere"))):
        load_teacher(tmp_path / "nowhere")
    path, model, _, _ = saved_teachers["dinov2"]
    teacher = load_teacher(path)
    with pytest.raises(ValueError, match="multiple of the teacher patch"):
        teacher(torch.rand(1, 3, 10, 12))
    parent = torch.nn.ModuleDict({"t": teacher}).train()
    assert parent.training and not teacher.training and not teacher.encoder.training
    assert not any(p.requires_grad for p in teacher.parameters())
    custom = tmp_path / "custom"
    shutil.copytree(path, custom)
    (custom / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0, 0, 0], "image_std": [1, 1, 1]})
    )
    images = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        raw = model(pixel_values=images).last_hidden_state[:, 1:]
    torch.testing.assert_close(load_teacher(custom)(images)[0], raw)
    import transformers as tf

    tf.ViTModel(tf.ViTConfig(**SMALL, patch_size=4, image_size=16)).save_pretrained(
        tmp_path / "vit"
    )
    with pytest.raises(ValueError, match="'vit' model; supported teachers"):
        load_teacher(tmp_path / "vit")


def test_timm_teacher_round_trip(tmp_path) -> None:
    import timm
    from safetensors.torch import save_file

    kw = dict(img_size=28, depth=1, embed_dim=16, num_heads=2)
    model = timm.create_model(
        "vit_small_patch14_reg4_dinov2",
        pretrained=False,
        num_classes=0,
        dynamic_img_size=True,
        **kw,
    ).eval()
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    teacher = load_timm_teacher("vit_small_patch14_reg4_dinov2", tmp_path / "w.safetensors", **kw)
    images = torch.rand(2, 3, 28, 42)
    tokens, grid = teacher(images)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET)
    with torch.no_grad():
        ref = model.forward_features((images - mean) / std)[:, 5:]  # CLS + 4 registers
    assert grid == (2, 3) and teacher.num_prefix_tokens == 5
    torch.testing.assert_close(tokens, ref)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        load_timm_teacher("vit_small_patch14_reg4_dinov2", tmp_path / "missing.safetensors")


def test_teacher_feature_cache_round_trip(saved_teachers, tmp_path) -> None:
    teacher = load_teacher(saved_teachers["dinov3"][0])
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    batches = [(["a", "b"], images[:2]), (["c", "d"], images[2:])]
    path = tmp_path / "shard.safetensors"
    assert cache_teacher_features(teacher, batches, path, grid=(2, 3), dtype=torch.float32) == 4
    tokens, grid = load_teacher_features(path, ["d", "a"])
    direct, _ = teacher(images[[3, 0]], grid=(2, 3))
    assert grid == (2, 3)
    torch.testing.assert_close(tokens, direct)
    with pytest.raises(KeyError, match="'zz'"):
        load_teacher_features(path, ["zz"])
    with pytest.raises(ValueError, match="twice"):
        cache_teacher_features(teacher, [(["a", "a"], images[:2])], tmp_path / "dup.safetensors")
