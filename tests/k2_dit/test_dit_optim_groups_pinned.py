"""Pins the optimizer grouping of the default DiT (issue 5 §2): Muon vs AdamW, and decay.

Issue rule: first/last linear (patch embedding, final projection), the text and timestep input
projections, embeddings, norms, biases and modulation tables on AdamW; every other 2-D weight
on Muon (`torch.optim.Muon`, Nesterov, `adjust_lr_fn="match_rms_adamw"`); weight decay on the
zero-centred norm gains; WSD through `transformers.get_wsd_schedule`. The modulation tables are
the report's "per-block tunable bias", so, like every bias, they are not decayed.
"""

from __future__ import annotations

import math

import pytest
import torch

from k2_dit.blocks import RMSNorm
from k2_dit.conditioning import Modulation
from k2_dit.config import DiTConfig, TextConfig
from k2_dit.distributed import adamw_only_linears
from k2_dit.model import DiT
from k2_dit.train import adamw_param_groups, muon_adamw_optimizers, muon_param_groups, wsd_schedule

DEPTH = DiTConfig().depth  # 16 single-stream blocks in the default config
ISSUE_ADAMW_LINEARS = (
    "patch_embed",
    "final_proj",
    "text_adapter.aggregate.proj_in",
    "conditioning.embedder.mlp.0",
)
_BLOCK_MUON = [f"attn.{p}_proj.weight" for p in "qkvo"] + [f"mlp.w{i}.weight" for i in (1, 2, 3)]
_REFINER_MUON = [f"attn.{p}_proj.weight" for p in "qkvo"] + [f"mlp.w{i}.weight" for i in (1, 2, 3)]
MUON = {f"blocks.{i}.{n}" for i in range(DEPTH) for n in _BLOCK_MUON} | {
    "text_adapter.aggregate.qkv.weight",
    "text_adapter.aggregate.attn_out.weight",
    "text_adapter.aggregate.pool_kv.weight",
    "text_adapter.aggregate.proj_out.weight",
    "conditioning.embedder.mlp.2.weight",
    "conditioning.shared.proj.weight",
    *(f"text_adapter.refiner.layers.{i}.{n}" for i in (0, 1) for n in _REFINER_MUON),
}
ADAMW_DECAY = {
    "patch_embed.weight",
    "final_proj.weight",
    "text_adapter.aggregate.proj_in.weight",
    "conditioning.embedder.mlp.0.weight",
    # zero-centred RMSNorm gains (decay pulls 1 + w towards 1)
    "text_adapter.aggregate.norm_attn.weight",
    "text_adapter.aggregate.norm_pool.weight",
    "text_adapter.refiner.norm.weight",
    *(f"text_adapter.refiner.layers.{i}.{n}.weight" for i in (0, 1) for n in ("norm1", "norm2")),
    *(f"text_adapter.refiner.layers.{i}.attn.{n}.weight" for i in (0, 1) for n in ("q_norm", "k_norm")),
    *(f"blocks.{i}.attn.{n}.weight" for i in range(DEPTH) for n in ("q_norm", "k_norm")),
}  # fmt: skip
ADAMW_NO_DECAY = {
    "patch_embed.bias",
    "final_proj.bias",
    "text_adapter.aggregate.pool_query",
    "text_adapter.aggregate.layer_embed.weight",
    "conditioning.embedder.mlp.0.bias",
    "conditioning.embedder.mlp.2.bias",
    "conditioning.shared.proj.bias",
    *(f"text_adapter.aggregate.{n}.bias" for n in ("proj_in", "qkv", "attn_out", "pool_kv", "proj_out")),
    # per-block modulation tables: the report's per-block tunable bias (2-D, but a bias)
    *(f"blocks.{i}.modulation.table" for i in range(DEPTH)),
    "final_modulation.table",
}  # fmt: skip


@pytest.fixture(scope="module")
def default_model() -> DiT:
    with torch.device("meta"):
        return DiT(DiTConfig())


def _names(groups, wd=None) -> set[str]:
    return {n for g in groups if wd is None or g["weight_decay"] == wd for n, _ in g["params"]}


@pytest.mark.parametrize("exclude", [None, ISSUE_ADAMW_LINEARS], ids=["declared", "explicit"])
def test_default_model_grouping_is_pinned(default_model: DiT, exclude) -> None:
    # exclude=None: the builder asks the model (DiT.adamw_linear_names) which linears stay off Muon.
    split = muon_param_groups(default_model, exclude=exclude, weight_decay=0.1)
    assert set(split.muon_names) == MUON
    assert _names(split.adamw, 0.1) == ADAMW_DECAY
    assert _names(split.adamw, 0.0) == ADAMW_NO_DECAY
    everything = {n for n, p in default_model.named_parameters() if p.requires_grad}
    assert everything == MUON | ADAMW_DECAY | ADAMW_NO_DECAY
    assert len(MUON) + len(ADAMW_DECAY) + len(ADAMW_NO_DECAY) == len(everything)
    modules = dict(default_model.named_modules())
    for name in ADAMW_DECAY:
        owner = modules[name.rsplit(".", 1)[0]]
        if "norm" in name:
            # Decaying a gain is only safe because it is stored as w in (1 + w), starting at 0.
            assert isinstance(owner, RMSNorm) and owner.zero_centered, name
    for name in ADAMW_NO_DECAY:
        if name.endswith(".table"):
            assert isinstance(modules[name.rsplit(".", 1)[0]], Modulation), name


def test_trainer_exclusions_are_the_issue_list(default_model: DiT) -> None:
    assert adamw_only_linears(default_model) == ISSUE_ADAMW_LINEARS
    text = TextConfig(aggregation="last", encoder_dim=16, num_layers=2, refiner_layers=0)
    with torch.device("meta"):
        other = DiT(DiTConfig(dim=32, depth=1, timestep="in_context", text=text))
    expected = (
        "patch_embed",
        "final_proj",
        "text_adapter.aggregate.proj",
        "conditioning.tokens.mlp.0",
    )
    assert other.adamw_linear_names() == expected
    assert adamw_only_linears(other) == expected
    # The declared names drive the default split for this configuration too.
    split = muon_param_groups(other)
    assert {f"{n}.weight" for n in expected}.isdisjoint(split.muon_names)
    assert {f"{n}.weight" for n in expected} <= set(split.adamw_names)


def test_model_declares_all_adamw_linears(default_model: DiT) -> None:
    assert default_model.adamw_linear_names() == ISSUE_ADAMW_LINEARS
    modules = dict(default_model.named_modules())
    assert all(isinstance(modules[n], torch.nn.Linear) for n in ISSUE_ADAMW_LINEARS)


def test_boundary_names_alone_leave_input_projections_on_muon(default_model: DiT) -> None:
    # Why the model declares more than its first/last layers: with only those excluded, the
    # text and timestep input projections land on Muon.
    split = muon_param_groups(default_model, exclude=default_model.boundary_linear_names())
    leaked = set(split.muon_names) - MUON
    assert leaked == {"text_adapter.aggregate.proj_in.weight", "conditioning.embedder.mlp.0.weight"}


def _ref_newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    # Muon's quintic iteration X <- aX + (bA + cA^2)X, A = X X^T, on the wide orientation.
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / max(float(g.norm()), 1e-7)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_muon_is_nesterov_with_rms_matched_lr_against_a_float64_transcription() -> None:
    torch.manual_seed(0)
    w = torch.nn.Linear(6, 4, bias=False).double()
    model = torch.nn.Sequential(torch.nn.Linear(3, 6).double(), w, torch.nn.Linear(4, 2).double())
    split = muon_param_groups(model, exclude=("0", "2"), weight_decay=0.1)
    assert split.muon_names == ["1.weight"]
    muon, adamw = muon_adamw_optimizers(split, lr=0.05)
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert muon.defaults["nesterov"] is True
    assert muon.defaults["adjust_lr_fn"] == "match_rms_adamw"
    lr, wd, mu = 0.05, 0.1, muon.defaults["momentum"]
    scale = 0.2 * math.sqrt(max(w.weight.shape))  # Moonlight: match AdamW's update RMS
    buf = torch.zeros_like(w.weight)
    for _ in range(2):
        theta = w.weight.detach().clone()
        grad = torch.randn_like(theta)
        w.weight.grad = grad.clone()
        muon.step()
        plain = mu * buf + (1 - mu) * grad
        nesterov = (1 - mu) * grad + mu * plain
        buf = plain
        expected = theta * (1 - lr * wd) - lr * scale * _ref_newton_schulz(nesterov)
        # torch runs Newton-Schulz in bfloat16: a few percent of an update of size lr·scale.
        tol = 0.05 * lr * scale
        torch.testing.assert_close(w.weight.detach(), expected, rtol=0, atol=tol)
        # The tolerance still tells the variants apart: heavy-ball momentum (second step) and
        # the "original" LR rule (scale 1 for a wide matrix) miss it by far.
        unscaled = theta * (1 - lr * wd) - lr * _ref_newton_schulz(nesterov)
        assert (unscaled - expected).abs().max() > 3 * tol
    heavy_ball = theta * (1 - lr * wd) - lr * scale * _ref_newton_schulz(plain)
    assert (heavy_ball - expected).abs().max() > 3 * tol


def test_adamw_groups_decay_norm_gains_by_default(default_model: DiT) -> None:
    groups = adamw_param_groups(default_model, weight_decay=0.1)
    assert _names(groups, 0.1) == ADAMW_DECAY | MUON
    assert _names(groups, 0.0) == ADAMW_NO_DECAY


def test_wsd_schedule_delegates_to_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Resolve the module now: another test may have re-imported transformers since collection.
    import transformers

    calls = []
    real = transformers.get_wsd_schedule

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers, "get_wsd_schedule", spy)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    wsd_schedule(opt, warmup_steps=2, total_steps=10, decay_fraction=0.3)
    assert calls == [
        dict(
            num_warmup_steps=2,
            num_decay_steps=3,
            num_training_steps=10,
            warmup_type="linear",
            decay_type="linear",
            min_lr_ratio=0.0,
        )
    ]
