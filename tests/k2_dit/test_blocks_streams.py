"""Single- and dual-stream blocks against float64 transcriptions; adaLN-Zero identity at init."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from k2_dit.blocks import DualStreamBlock, SingleStreamBlock
from k2_dit.conditioning import TimestepConditioning, TimestepSignal
from k2_dit.config import AttentionConfig, RopeConfig
from k2_dit.rope import Rope, token_positions


def _load_reference():
    path = Path(__file__).with_name("dit_blocks_reference.py")
    spec = importlib.util.spec_from_file_location("k2_dit_tests_dit_blocks_reference_b", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _load_reference()
D, HEADS, HEAD_DIM, EPS = 16, 4, 4, 1e-6
N_TXT, GRID = 3, (1, 2, 2)


def _randomise(module: torch.nn.Module, seed: int, std: float = 0.4) -> None:
    # Zero-initialised gates/biases would hide most of the block from the comparison.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def _signal(kind: str, seed: int = 7) -> TimestepSignal:
    cond = TimestepConditioning(D, kind=kind, freq_dim=8).double()
    _randomise(cond, seed)
    return cond(torch.tensor([0.2, 0.8], dtype=torch.float64))


def _tables():
    cfg = RopeConfig(kind="axial", axes_dims=(0, 2, 2))
    pos = token_positions(cfg, n_text=N_TXT, grid=GRID)
    return Rope(cfg, head_dim=HEAD_DIM, num_kv_heads=2)(pos)


def _rows_ref(stream_prefix: str, sd: dict, signal: TimestepSignal, kind: str, rows: int):
    """Per-sample modulation rows: Linear(SiLU(c)) or shared[:rows] + bias table; None without AdaLN."""
    if kind == "adaln_mlp":
        out = REF.silu(signal.embedding) @ sd[f"{stream_prefix}modulation.proj.weight"].T
        out = out + sd[f"{stream_prefix}modulation.proj.bias"]
        return out.view(-1, rows, D)
    if kind == "shared_bias":
        return signal.shared[:, :rows] + sd[f"{stream_prefix}modulation.table"][None]
    return None


def _branch_in(X, sd, prefix, rows, which, norm):
    # (1 + scale) ⊙ norm(X) + shift with AdaLN, or the affine norm without.
    if rows is None:
        return REF.norm_ref(X, sd, f"{prefix}{which}", norm, EPS)
    shift, scale = (rows[0], rows[1]) if which == "norm1" else (rows[3], rows[4])
    return REF.norm_ref(X, None, "", norm, EPS) * (1 + scale) + shift


def _finish_stream(X, o_heads, gates, sd, prefix, rows, norm, mlp):
    a = REF.output_ref(o_heads, gates, sd, f"{prefix}attn")
    X = X + (a if rows is None else rows[2] * a)
    m = REF.mlp_ref(_branch_in(X, sd, prefix, rows, "norm2", norm), sd, f"{prefix}mlp", mlp)
    return X + (m if rows is None else rows[5] * m)


def single_block_ref(x, block, signal, tables, mask, *, kind, norm, mlp):
    sd = {k: v.detach() for k, v in block.state_dict().items()}
    rows = _rows_ref("", sd, signal, kind, 6)
    out = torch.zeros_like(x)
    for bi in range(x.shape[0]):
        r = None if rows is None else rows[bi]
        h = _branch_in(x[bi], sd, "", r, "norm1", norm)
        qs, ks, vs, gates = REF.project_ref(h, block.attn, "attn", sd, norm, EPS)
        qs, ks = REF.rotate_heads_ref(qs, tables, bi, 0), REF.rotate_heads_ref(ks, tables, bi, 0)
        o = REF.softmax_attention_ref(qs, ks, vs, mask[bi])
        out[bi] = _finish_stream(x[bi], o, gates, sd, "", r, norm, mlp)
    return out


def dual_block_ref(txt, img, block, signal, tables, txt_mask, *, kind, norm, mlp):
    sd = {k: v.detach() for k, v in block.state_dict().items()}
    ctx_out = block.context_output
    rows_t = _rows_ref("txt.", sd, signal, kind, 6 if ctx_out else 2)
    rows_i = _rows_ref("img.", sd, signal, kind, 6)
    out_t, out_i = txt.clone(), torch.zeros_like(img)
    lt = txt.shape[1]
    for bi in range(txt.shape[0]):
        rt = None if rows_t is None else rows_t[bi]
        ri = None if rows_i is None else rows_i[bi]
        ht = _branch_in(txt[bi], sd, "txt.", rt, "norm1", norm)
        hi = _branch_in(img[bi], sd, "img.", ri, "norm1", norm)
        qt, kt, vt, gt = REF.project_ref(ht, block.txt.attn, "txt.attn", sd, norm, EPS)
        qi, ki, vi, gi = REF.project_ref(hi, block.img.attn, "img.attn", sd, norm, EPS)
        ks = [torch.cat([a, b]) for a, b in zip(kt, ki, strict=True)]
        vs = [torch.cat([a, b]) for a, b in zip(vt, vi, strict=True)]
        ks = REF.rotate_heads_ref(ks, tables, bi, 0)
        if ctx_out:
            qs = REF.rotate_heads_ref(
                [torch.cat([a, b]) for a, b in zip(qt, qi, strict=True)], tables, bi, 0
            )
        else:
            qs = REF.rotate_heads_ref(qi, tables, bi, lt)  # image queries sit after the text
        valid = torch.cat([txt_mask[bi], torch.ones(img.shape[1], dtype=torch.bool)])
        o = REF.softmax_attention_ref(qs, ks, vs, valid)
        if ctx_out:
            out_t[bi] = _finish_stream(txt[bi], [h[:lt] for h in o], gt, sd, "txt.", rt, norm, mlp)
            out_i[bi] = _finish_stream(img[bi], [h[lt:] for h in o], gi, sd, "img.", ri, norm, mlp)
        else:
            out_i[bi] = _finish_stream(img[bi], o, gi, sd, "img.", ri, norm, mlp)
    return out_t, out_i


def _block_kwargs(kind: str, norm: str, mlp: str, attn: AttentionConfig | None = None) -> dict:
    attn = attn or AttentionConfig(num_heads=HEADS, num_kv_heads=2, gate="elementwise")
    return dict(attention=attn, mlp=mlp, mlp_hidden=24, norm=norm, eps=EPS, timestep=kind)


def _inputs(seed: int = 3):
    torch.manual_seed(seed)
    n_img = GRID[1] * GRID[2]
    txt = torch.randn(2, N_TXT, D, dtype=torch.float64)
    img = torch.randn(2, n_img, D, dtype=torch.float64)
    txt_mask = torch.tensor([[True, True, False], [False, False, False]])
    return txt, img, txt_mask


SINGLE_CASES = [
    (
        "shared_bias",
        "rmsnorm",
        "swiglu",
        AttentionConfig(num_heads=HEADS, num_kv_heads=2, gate="elementwise"),
    ),
    (
        "adaln_mlp",
        "layernorm",
        "gelu",
        AttentionConfig(num_heads=HEADS, kind="mha", gate="headwise"),
    ),
    (
        "none",
        "rmsnorm",
        "gelu",
        AttentionConfig(num_heads=HEADS, kind="mla", kv_lora_rank=6, q_lora_rank=5),
    ),
    (
        "in_context",
        "layernorm",
        "swiglu",
        AttentionConfig(num_heads=HEADS, num_kv_heads=1, gate="none", qk_norm=False),
    ),
]


@pytest.mark.parametrize(("kind", "norm", "mlp", "attn"), SINGLE_CASES)
def test_single_stream_block_matches_reference(kind, norm, mlp, attn) -> None:
    block = SingleStreamBlock(D, **_block_kwargs(kind, norm, mlp, attn)).double()
    _randomise(block, 1)
    signal = _signal(kind) if kind in ("shared_bias", "adaln_mlp") else TimestepSignal()
    txt, img, txt_mask = _inputs()
    x = torch.cat([txt, img], dim=1)
    mask = torch.cat([txt_mask, torch.ones(2, img.shape[1], dtype=torch.bool)], dim=1)
    tables = _tables()
    got = block(x, signal, rope_tables=tables, mask=mask)
    ref = single_block_ref(x, block, signal, tables, mask, kind=kind, norm=norm, mlp=mlp)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("kind", "norm", "mlp", "context_output"),
    [
        ("shared_bias", "rmsnorm", "swiglu", True),
        ("adaln_mlp", "layernorm", "gelu", True),
        ("none", "rmsnorm", "swiglu", True),
        ("shared_bias", "rmsnorm", "swiglu", False),
        ("in_context", "layernorm", "gelu", False),
    ],
)
def test_dual_stream_block_matches_reference(kind, norm, mlp, context_output) -> None:
    block = DualStreamBlock(
        D, context_output=context_output, **_block_kwargs(kind, norm, mlp)
    ).double()
    _randomise(block, 2)
    signal = _signal(kind) if kind in ("shared_bias", "adaln_mlp") else TimestepSignal()
    txt, img, txt_mask = _inputs()
    tables = _tables()
    got_t, got_i = block(txt, img, signal, rope_tables=tables, txt_mask=txt_mask)
    ref_t, ref_i = dual_block_ref(
        txt, img, block, signal, tables, txt_mask, kind=kind, norm=norm, mlp=mlp
    )
    torch.testing.assert_close(got_i, ref_i, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_t, ref_t, rtol=1e-10, atol=1e-10)
    if not context_output:
        assert torch.equal(got_t, txt)


def test_dual_block_streams_have_separate_weights() -> None:
    block = DualStreamBlock(D, **_block_kwargs("shared_bias", "rmsnorm", "swiglu")).double()
    _randomise(block, 3)
    txt, img, txt_mask = _inputs()
    signal = _signal("shared_bias")
    _, before = block(txt, img, signal, rope_tables=_tables(), txt_mask=txt_mask)
    with torch.no_grad():
        block.txt.mlp.w2.weight.add_(1.0)  # text-only weight: image output must not move
    _, after = block(txt, img, signal, rope_tables=_tables(), txt_mask=txt_mask)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    with torch.no_grad():
        block.txt.attn.k_proj.weight.add_(1.0)  # text keys: joint attention, image output moves
    _, moved = block(txt, img, signal, rope_tables=_tables(), txt_mask=txt_mask)
    assert not torch.allclose(moved, before)


def test_kv_only_text_stream_holds_only_what_the_image_reads() -> None:
    block = DualStreamBlock(
        D, context_output=False, **_block_kwargs("shared_bias", "rmsnorm", "swiglu")
    )
    names = {n for n, _ in block.txt.named_parameters()}
    assert names == {
        "attn.k_proj.weight",
        "attn.v_proj.weight",
        "attn.k_norm.weight",
        "modulation.table",
    }
    assert block.txt.modulation.table.shape == (2, D)


@pytest.mark.parametrize("kind", ["shared_bias", "adaln_mlp"])
def test_adaln_zero_blocks_leave_the_residual_stream_unchanged_at_init(kind: str) -> None:
    torch.manual_seed(0)
    kwargs = _block_kwargs(kind, "rmsnorm", "swiglu")
    single, dual = SingleStreamBlock(D, **kwargs), DualStreamBlock(D, **kwargs)
    cond = TimestepConditioning(D, kind=kind, freq_dim=8)
    with torch.no_grad():  # a non-trivial embedder: identity must come from the gates alone
        for p in cond.embedder.parameters():
            p.normal_()
    signal = cond(torch.rand(2))
    txt, img, txt_mask = (t.float() if t.is_floating_point() else t for t in _inputs())
    x = torch.cat([txt, img], dim=1)
    assert torch.equal(single(x, signal, rope_tables=_tables(), mask=None), x)
    out_t, out_i = dual(txt, img, signal, rope_tables=_tables(), txt_mask=txt_mask)
    assert torch.equal(out_t, txt) and torch.equal(out_i, img)
    # ...while the branches themselves are non-zero (the identity is not vacuous).
    assert single.attn(x, rope_tables=_tables(), mask=None).abs().sum() > 0


def test_single_block_gradcheck() -> None:
    block = SingleStreamBlock(
        8,
        **{
            **_block_kwargs("shared_bias", "rmsnorm", "swiglu"),
            "mlp_hidden": 6,
            "attention": AttentionConfig(num_heads=2, num_kv_heads=1),
        },
    ).double()
    _randomise(block, 4)
    cond = TimestepConditioning(8, kind="shared_bias", freq_dim=4).double()
    _randomise(cond, 5)
    signal = cond(torch.tensor([0.4], dtype=torch.float64))
    x = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False, True, True]])
    names = [n for n, _ in block.named_parameters()]
    params = [p for _, p in block.named_parameters()]

    def f(a, *ws):
        return torch.func.functional_call(
            block,
            dict(zip(names, ws, strict=True)),
            (a, signal),
            {"rope_tables": None, "mask": mask},
        )

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)
