"""Gated MHA / GQA / MLA attention against a float64 per-head transcription of the equations."""

from __future__ import annotations

import pytest
import torch

from k2_dit.blocks import Attention, attend
from k2_dit.config import AttentionConfig, ConfigError, DiTConfig, RopeConfig
from k2_dit.rope import Rope, token_positions

DIM, HEADS, HEAD_DIM = 24, 4, 6


def _load_reference():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("dit_blocks_reference.py")
    spec = importlib.util.spec_from_file_location("k2_dit_tests_dit_blocks_reference_a", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _load_reference()
attention_ref = REF.attention_ref


# ----------------------------------------------------------------------------- helpers


def _attention(norm: str = "rmsnorm", seed: int = 0, **kw) -> Attention:
    torch.manual_seed(seed)
    attn = Attention(DIM, AttentionConfig(num_heads=HEADS, **kw), norm=norm, eps=1e-6).double()
    with torch.no_grad():  # norms start at unit gain; randomise them so 1 + w is exercised
        for name, p in attn.named_parameters():
            if "norm" in name:
                p.normal_(std=0.5)
    return attn


def _tables(kind: str, kv_heads: int, n_text: int = 2):
    cfg = RopeConfig(kind=kind)
    pos = token_positions(cfg, n_text=n_text, grid=(1, 2, 3))
    return Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=kv_heads)(pos)


def _inputs(seed: int = 1):
    torch.manual_seed(seed)
    x = torch.randn(2, 8, DIM, dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, :2] = False  # first sample: both text tokens padded
    mask[1, 1] = False
    return x, mask


# ----------------------------------------------------------------------------- tests

CASES = {
    "gqa-elementwise-axial": dict(kind="gqa", num_kv_heads=2, gate="elementwise"),
    "gqa-headwise-axial": dict(kind="gqa", num_kv_heads=2, gate="headwise"),
    "gqa-elementwise-goldengate": dict(kind="gqa", num_kv_heads=2, gate="elementwise"),
    "mha-nogate-noqknorm": dict(kind="mha", gate="none", qk_norm=False),
    "mha-elementwise": dict(kind="mha", gate="elementwise"),
    "mla-kv-only-headwise": dict(kind="mla", gate="headwise", kv_lora_rank=5),
    "mla-q-and-kv-elementwise": dict(kind="mla", gate="elementwise", kv_lora_rank=5, q_lora_rank=7),
}


@pytest.mark.parametrize("case", list(CASES))
def test_attention_matches_per_head_reference(case: str) -> None:
    attn = _attention(**CASES[case])
    rope_kind = "golden_gate" if "goldengate" in case else "axial"
    tables = None if "noqknorm" in case else _tables(rope_kind, attn.kv_heads)
    x, mask = _inputs()
    got = attn(x, rope_tables=tables, mask=mask)
    torch.testing.assert_close(got, attention_ref(x, attn, tables, mask), rtol=1e-10, atol=1e-10)


def test_attention_layernorm_qk_norm_matches_reference() -> None:
    attn = _attention(norm="layernorm", kind="gqa", num_kv_heads=1, gate="elementwise")
    tables = _tables("partial", 1)
    x, mask = _inputs(3)
    ref = attention_ref(x, attn, tables, mask, norm="layernorm")
    torch.testing.assert_close(attn(x, rope_tables=tables, mask=mask), ref, rtol=1e-10, atol=1e-10)


def test_gqa_with_one_query_per_kv_head_equals_mha() -> None:
    mha = _attention(kind="mha", gate="elementwise")
    gqa = Attention(
        DIM,
        AttentionConfig(kind="gqa", num_heads=HEADS, num_kv_heads=HEADS),
        norm="rmsnorm",
        eps=1e-6,
    ).double()
    gqa.load_state_dict(mha.state_dict())
    x, mask = _inputs()
    tables = _tables("axial", HEADS)
    torch.testing.assert_close(
        gqa(x, rope_tables=tables, mask=mask), mha(x, rope_tables=tables, mask=mask), rtol=0, atol=0
    )


def test_gate_widens_query_projection_by_the_expected_amount() -> None:
    plain = _attention(kind="gqa", num_kv_heads=2, gate="none")
    elem = _attention(kind="gqa", num_kv_heads=2, gate="elementwise")
    head = _attention(kind="gqa", num_kv_heads=2, gate="headwise")
    assert elem.q_proj.out_features - plain.q_proj.out_features == HEADS * HEAD_DIM
    assert head.q_proj.out_features - plain.q_proj.out_features == HEADS
    assert elem.k_proj.out_features == 2 * HEAD_DIM


def test_attention_gradcheck() -> None:
    torch.manual_seed(4)
    attn = Attention(
        8, AttentionConfig(num_heads=2, num_kv_heads=1), norm="rmsnorm", eps=1e-6
    ).double()
    rope_cfg = RopeConfig(kind="axial", axes_dims=(0, 2, 2))
    tables = Rope(rope_cfg, head_dim=4, num_kv_heads=1)(
        token_positions(rope_cfg, n_text=1, grid=(1, 1, 2))
    )
    x = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False, True, True]])
    names = ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "q_norm.weight"]
    params = dict(attn.named_parameters())

    def f(a, *ws):
        return torch.func.functional_call(
            attn, dict(zip(names, ws, strict=True)), (a,), {"rope_tables": tables, "mask": mask}
        )

    assert torch.autograd.gradcheck(f, (x, *(params[n] for n in names)), fast_mode=True)


def test_attend_ignores_padded_keys_and_survives_fully_padded_rows() -> None:
    torch.manual_seed(5)
    q = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    k = torch.randn(2, 2, 5, 3, dtype=torch.float64)
    v = torch.randn(2, 2, 5, 3, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True, False], [False] * 5])
    out = attend(q, k, v, mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, ~mask[0]] = 1e3 * torch.randn_like(k2[0, :, ~mask[0]])
    v2[0, :, ~mask[0]] = 1e3 * torch.randn_like(v2[0, :, ~mask[0]])
    torch.testing.assert_close(attend(q, k2, v2, mask=mask)[0], out[0], rtol=0, atol=1e-12)
    # A sample with no valid key attends to everything (finite), instead of NaN.
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1], attend(q[1:], k[1:], v[1:], mask=None)[0], rtol=0, atol=0)


def test_attend_supports_fewer_queries_than_keys() -> None:
    torch.manual_seed(6)
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    k = torch.randn(1, 1, 7, 4, dtype=torch.float64)
    v = torch.randn(1, 1, 7, 4, dtype=torch.float64)
    out = attend(q, k, v, mask=None)
    for h in range(2):
        p = torch.softmax(q[0, h] @ k[0, 0].T / 2.0, dim=-1)
        torch.testing.assert_close(out[0, h], p @ v[0, 0], rtol=1e-12, atol=1e-12)


def test_kv_only_attention_has_no_query_gate_or_output() -> None:
    attn = Attention(
        DIM,
        AttentionConfig(num_heads=HEADS, num_kv_heads=2),
        norm="rmsnorm",
        eps=1e-6,
        kv_only=True,
    )
    names = {n for n, _ in attn.named_parameters()}
    assert names == {"k_proj.weight", "v_proj.weight", "k_norm.weight"}
    with pytest.raises(RuntimeError, match="project_kv"):
        attn.project(torch.randn(1, 2, DIM), None)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            dict(dim=30, attention=AttentionConfig(num_heads=4)),
            "not divisible by attention.num_heads",
        ),
        (
            dict(dim=48, attention=AttentionConfig(num_heads=6, num_kv_heads=4)),
            r"choose num_kv_heads among \[1, 2, 3, 6\]",
        ),
        (dict(dim=48, rope=RopeConfig(axes_dims=(2, 4, 4))), "make the axes sum to 6"),
    ],
)
def test_bad_attention_configs_fail_at_construction_naming_the_fix(
    kwargs: dict, match: str
) -> None:
    kwargs.setdefault("attention", AttentionConfig(num_heads=8, num_kv_heads=2))
    with pytest.raises(ConfigError, match=match):
        DiTConfig(**kwargs)
