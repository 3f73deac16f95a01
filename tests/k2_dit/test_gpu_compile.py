"""GPU: the default DiT at a small-but-real size in bf16, torch.compile vs eager.

Deselected by the default `-m "not gpu and not slow"`; run on a CUDA machine with `-m gpu`.
"""

from __future__ import annotations

import contextlib

import jaxtyping
import pytest
import torch

from k2_dit.blocks import attend
from k2_dit.config import AttentionConfig, DiTConfig, TextConfig
from k2_dit.model import DiT

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda() -> torch.device:
    if not torch.cuda.is_available():
        pytest.fail("this test is marked gpu and needs a CUDA device: run it on the GPU machine")
    return torch.device("cuda")


@contextlib.contextmanager
def _no_runtime_shape_checks():
    # The test-time jaxtyping/beartype checks cannot run under dynamo tracing (beartype reports
    # a "desynchronization" on fake tensors); library code carries no runtime checks, so
    # compiling without them is what users get. Eager calls in this file stay checked.
    old = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", old)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _config() -> DiTConfig:
    # The defaults (single stream, GQA + elementwise gate, RMSNorm(1+w) + QK-norm, SwiGLU,
    # shared_bias, axial RoPE, 128-channel latent) at width 512, depth 6.
    return DiTConfig(
        dim=512,
        depth=6,
        attention=AttentionConfig(num_heads=8, num_kv_heads=2),
        text=TextConfig(encoder_dim=256, num_layers=5, refiner_layers=1, max_tokens=64),
    )


def _inputs(cfg: DiTConfig, device: torch.device, *, b: int = 4, size: int = 32, n_text: int = 64):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(
        b, cfg.in_channels, size, size, device=device, generator=g, dtype=torch.bfloat16
    )
    t = torch.rand(b, device=device, generator=g)
    text = torch.randn(
        b, n_text, cfg.text.num_layers, cfg.text.encoder_dim, device=device, generator=g
    )
    mask = torch.ones(b, n_text, dtype=torch.bool, device=device)
    mask[0, 20:] = False
    mask[1] = False  # unconditional row
    return x, t.to(torch.bfloat16), text.to(torch.bfloat16), mask


def test_compiled_default_model_matches_eager_in_bf16(cuda: torch.device) -> None:
    torch.manual_seed(0)
    cfg = _config()
    model = DiT(cfg).to(cuda, torch.bfloat16)
    with torch.no_grad():  # zero-initialised gates / final layer would make the output 0
        for p in model.parameters():
            p.normal_(std=0.02)
    args = _inputs(cfg, cuda)
    eager = model(*args)
    eager.float().square().mean().backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    compiled = torch.compile(model)
    with _no_runtime_shape_checks():
        out = compiled(*args)
        out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert eager.float().abs().mean() > 0
    # bf16 has an 8-bit mantissa (rel. eps 2^-8 ≈ 4e-3); compile fuses and reorders the
    # elementwise work (norms, RoPE, gates), so outputs differ by a few bf16 ulps over six
    # blocks. 2% relative (Frobenius) error bounds that with a margin; a wrong graph is O(1).
    assert _rel_err(out, eager) < 2e-2
    for name, p in model.named_parameters():
        assert _rel_err(p.grad, eager_grads[name]) < 5e-2, name


def test_masked_gqa_attend_on_cuda_matches_float64(cuda: torch.device) -> None:
    torch.manual_seed(1)
    q = torch.randn(2, 8, 300, 64, dtype=torch.float64)
    k = torch.randn(2, 2, 300, 64, dtype=torch.float64)
    v = torch.randn(2, 2, 300, 64, dtype=torch.float64)
    mask = torch.ones(2, 300, dtype=torch.bool)
    mask[0, :50] = False
    ref = attend(q, k, v, mask=mask)  # CPU float64 (enable_gqa path)
    got = attend(*(a.to(cuda, torch.bfloat16) for a in (q, k, v)), mask=mask.to(cuda))
    assert _rel_err(got.cpu(), ref) < 1e-2
