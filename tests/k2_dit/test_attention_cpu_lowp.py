"""`k2_dit.blocks.sdpa`: low-precision CPU inputs run the attention in float32."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from k2_dit.blocks import sdpa


def _qkv(dtype):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(2, 4, 9, 8, generator=gen).to(dtype) for _ in range(3)]


def test_bfloat16_on_cpu_equals_float32_attention_rounded_once():
    q, k, v = _qkv(torch.bfloat16)
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., 6:] = False
    got = sdpa(q, k, v, attn_mask=mask)
    assert got.dtype == torch.bfloat16
    want = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    # One rounding of the float32 result to bfloat16 (relative step 2^-8).
    torch.testing.assert_close(got.double(), want, rtol=2**-8, atol=1e-3)


def test_under_autocast_the_attention_stays_float32_and_gradients_flow():
    q, k, v = (x.requires_grad_() for x in _qkv(torch.float32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sdpa(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in (q, k, v))


def test_float32_and_float64_inputs_take_the_plain_call():
    for dtype in (torch.float32, torch.float64):
        q, k, v = _qkv(dtype)
        torch.testing.assert_close(sdpa(q, k, v), F.scaled_dot_product_attention(q, k, v))
