"""float8 training: the module filter, the CPU skip path, and (GPU) a converted forward/backward."""

from __future__ import annotations

import sys

import jaxtyping
import pytest
import torch
from torch import nn

from k2_dit.config import AttentionConfig, DiTConfig, TextConfig
from k2_dit.model import DiT
from k2_dit.train._float8 import (
    FLOAT8_SKIP_FQNS,
    Float8SkippedWarning,
    convert_to_float8,
    float8_module_filter,
)


def tiny_config(dim: int = 64) -> DiTConfig:
    return DiTConfig(
        in_channels=4,
        patch_size=2,
        dim=dim,
        depth=2,
        timestep_freq_dim=16,
        attention=AttentionConfig(num_heads=4, num_kv_heads=2),
        text=TextConfig(
            encoder_dim=32, num_layers=2, aggregation_heads=2, refiner_layers=1, max_tokens=8
        ),
    )


def expected_selection(model: nn.Module, min_features: int) -> set[str]:
    # The rule written out: a Linear, both widths multiples of 16 and >= min_features,
    # and not the first/last layer or a per-sample timestep/modulation layer.
    names = set()
    for fqn, m in model.named_modules():
        if type(m) is not nn.Linear:
            continue
        k, n = m.in_features, m.out_features
        small = k < min_features or n < min_features or k % 16 != 0 or n % 16 != 0
        boundary = fqn in ("patch_embed", "final_proj")
        per_sample = fqn.startswith("conditioning.") or fqn.endswith("modulation.proj")
        if not (small or boundary or per_sample):
            names.add(fqn)
    return names


def linears(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def test_filter_unit_cases() -> None:
    assert float8_module_filter(nn.Linear(2048, 4096), "blocks.0.mlp.w1")
    assert not float8_module_filter(nn.Linear(2048, 1000), "blocks.0.mlp.w1")  # 1000 % 16
    assert not float8_module_filter(nn.Linear(2048, 512), "blocks.0.attn.k_proj")  # < 1024
    assert float8_module_filter(nn.Linear(2048, 512), "blocks.0.attn.k_proj", min_features=512)
    assert not float8_module_filter(nn.Linear(4096, 4096), "final_proj")
    assert not float8_module_filter(nn.Linear(4096, 4096), "blocks.3.modulation.proj")
    assert not float8_module_filter(nn.Conv2d(2048, 2048, 1), "blocks.0.conv")
    assert not float8_module_filter(nn.Linear(4096, 4096), "head.fc", skip_fqns=("head",))
    assert "patch_embed" in FLOAT8_SKIP_FQNS and "final_proj" in FLOAT8_SKIP_FQNS


def test_filter_on_the_tiny_dit() -> None:
    model = DiT(tiny_config(dim=64))
    chosen = {n for n, m in linears(model).items() if float8_module_filter(m, n, min_features=32)}
    assert chosen == expected_selection(model, 32)
    # Concretely: the image-path attention and MLP matrices are in, the boundaries are out.
    assert {"blocks.0.attn.q_proj", "blocks.1.attn.o_proj", "blocks.0.mlp.w2"} <= chosen
    assert not chosen & {"patch_embed", "final_proj", "conditioning.shared.proj"}
    assert "blocks.0.attn.k_proj" in chosen  # 64 -> 32 (2 KV heads of 16)
    assert not {n for n, m in linears(model).items() if float8_module_filter(m, n)}  # 1024 default


def test_filter_at_the_default_width() -> None:
    # The default DiT's widths (dim 1024, GQA 8/2 heads of 128, SwiGLU 2752, 128-channel
    # latent), two blocks and a small text side to keep it cheap.
    text = TextConfig(encoder_dim=64, num_layers=2, refiner_layers=1)
    model = DiT(DiTConfig(depth=2, text=text))
    chosen = {n for n, m in linears(model).items() if float8_module_filter(m, n)}
    assert chosen == expected_selection(model, 1024)
    # K/V projections are 1024 -> 256 and stay in bf16; the text refiner's SwiGLU width
    # 2731 is not a multiple of 16.
    assert {"blocks.1.mlp.w2", "blocks.0.attn.q_proj", "blocks.0.attn.o_proj"} <= chosen
    assert "blocks.0.attn.k_proj" not in chosen and "final_proj" not in chosen
    assert not any(n.startswith("text_adapter.refiner") and ".mlp." in n for n in chosen)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_convert_without_cuda_is_a_reported_no_op(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = DiT(tiny_config(dim=64))
    before, types = _state(model), {n: type(m) for n, m in model.named_modules()}
    with pytest.warns(Float8SkippedWarning, match="no CUDA device"):
        out, report = convert_to_float8(model, recipe="rowwise", min_features=32)
    assert out is model and {n: type(m) for n, m in model.named_modules()} == types
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not report.converted and report.recipe == "rowwise" and "CUDA" in report.reason
    assert set(report.modules) == expected_selection(model, 32)
    assert set(report.modules) | {n for n, _ in report.kept} == set(linears(model))
    assert dict(report.kept)["patch_embed"] == "name matches 'patch_embed'"


def test_convert_reports_old_gpu_and_missing_torchao(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    model = DiT(tiny_config(dim=64))
    with pytest.warns(Float8SkippedWarning, match=r"8\.0 < 8\.9"):
        convert_to_float8(model, min_features=32)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setitem(sys.modules, "torchao", None)  # makes `import torchao...` fail
    monkeypatch.setitem(sys.modules, "torchao.float8", None)
    with pytest.warns(Float8SkippedWarning, match="torchao is not installed"):
        _, report = convert_to_float8(model, min_features=32)
    assert not report.converted and report.modules


def test_convert_custom_filter_and_bad_arguments(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = DiT(tiny_config(dim=64))
    with pytest.warns(Float8SkippedWarning):
        _, report = convert_to_float8(
            model, module_filter=lambda m, fqn: fqn.startswith("blocks.") and fqn.endswith("o_proj")
        )
    assert report.modules == ("blocks.0.attn.o_proj", "blocks.1.attn.o_proj")
    assert dict(report.kept)["final_proj"] == "rejected by module_filter"
    with pytest.raises((ValueError, jaxtyping.TypeCheckError), match="recipe"):
        convert_to_float8(model, recipe="blockwise")
    with pytest.raises(ValueError, match="min_features"):
        convert_to_float8(model, min_features=8)


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_gpu_float8_forward_backward_close_to_bf16(recipe: str) -> None:
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        pytest.fail("this test is marked gpu and needs an sm_89+ CUDA device")
    try:
        from torchao.float8.float8_linear import Float8Linear
    except ImportError:
        pytest.fail("float8 training needs torchao on the GPU machine: pip install torchao")
    cfg = DiTConfig(
        in_channels=16,
        patch_size=2,
        dim=512,
        depth=2,
        attention=AttentionConfig(num_heads=8, num_kv_heads=2),
        text=TextConfig(encoder_dim=64, num_layers=2, refiner_layers=0, max_tokens=16),
    )
    torch.manual_seed(0)
    ref = DiT(cfg).cuda().to(torch.bfloat16)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model = DiT(cfg).cuda().to(torch.bfloat16)
    model.load_state_dict(ref.state_dict())
    model, report = convert_to_float8(model, recipe=recipe, min_features=256)
    assert report.converted and report.reason is None
    swapped = {n for n, m in model.named_modules() if isinstance(m, Float8Linear)}
    assert swapped == set(report.modules) and swapped
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(2, 16, 32, 32, device="cuda", generator=g, dtype=torch.bfloat16)
    t = torch.rand(2, device="cuda", generator=g)
    text = torch.randn(2, 16, 2, 64, device="cuda", generator=g, dtype=torch.bfloat16)
    mask = torch.ones(2, 16, dtype=torch.bool, device="cuda")
    out, want = model(x, t, text, mask), ref(x, t, text, mask)
    err = ((out.float() - want.float()).norm() / want.float().norm()).item()
    assert err < 0.1, err
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
