"""AdamW decay groups and the Muon/AdamW split on a small DiT-shaped model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from k2_dit.conditioning import Modulation
from k2_dit.train import adamw_param_groups, muon_adamw_optimizers, muon_param_groups


class ZeroCenteredRMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * (1 + self.weight)


class _Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = ZeroCenteredRMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.mod_bias = nn.Parameter(torch.zeros(6, dim))  # per-block modulation table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(x) + self.mod_bias[0]).chunk(3, -1)
        return x + self.proj(q * torch.sigmoid(k) * v)


class _TinyDiT(nn.Module):
    def __init__(self, dim: int = 8, patch: int = 4) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(patch, dim)
        self.time_table = nn.Embedding(5, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, 6, dim) * 0.02)
        self.blocks = nn.ModuleList([_Block(dim), _Block(dim)])
        self.final_norm = nn.LayerNorm(dim)
        self.final = nn.Linear(dim, patch)
        self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(x) + self.pos_embed + self.time_table(t)[:, None]
        for blk in self.blocks:
            h = blk(h)
        return self.final(self.final_norm(h))


def _names(groups, wd=None):
    return {n for g in groups if wd is None or g["weight_decay"] == wd for n, _ in g["params"]}


ALL = {name for name, p in _TinyDiT().named_parameters() if p.requires_grad}


def test_adamw_groups_follow_the_decay_rules():
    groups = adamw_param_groups(_TinyDiT(), weight_decay=0.1)
    decayed = {
        "patch_embed.weight", "pos_embed", "final.weight", "final_norm.weight",
        "blocks.0.norm.weight", "blocks.0.qkv.weight", "blocks.0.proj.weight",
        "blocks.1.norm.weight", "blocks.1.qkv.weight", "blocks.1.proj.weight",
    }  # fmt: skip
    # Anything named *bias is not decayed, including 2-D modulation bias tables.
    assert _names(groups, 0.1) == decayed
    assert _names(groups, 0.0) == ALL - decayed
    assert {"time_table.weight", "final_norm.bias", "blocks.0.mod_bias"} <= _names(groups, 0.0)
    assert "frozen" not in _names(groups)

    no_norm = adamw_param_groups(_TinyDiT(), weight_decay=0.1, decay_norm_gains=False)
    norms = {"final_norm.weight", "blocks.0.norm.weight", "blocks.1.norm.weight"}
    assert _names(no_norm, 0.1) == decayed - norms
    custom = adamw_param_groups(
        _TinyDiT(), weight_decay=0.1, no_decay=lambda n, p: n == "pos_embed"
    )
    assert _names(custom, 0.1) == decayed - {"pos_embed"}


def test_muon_split_excludes_first_and_last_linear():
    split = muon_param_groups(_TinyDiT(), exclude=("patch_embed", "final"), weight_decay=0.05)
    hidden = {f"blocks.{i}.{m}.weight" for i in (0, 1) for m in ("qkv", "proj")}
    assert set(split.muon_names) == hidden
    assert set(split.adamw_names) == ALL - hidden
    assert not set(split.muon_names) & set(split.adamw_names)
    assert all(p.ndim == 2 for g in split.muon for _, p in g["params"])
    assert _names(split.adamw, 0.05) >= {"patch_embed.weight", "final.weight", "pos_embed"}
    assert "final.bias" in _names(split.adamw, 0.0)
    by_predicate = muon_param_groups(
        _TinyDiT(), exclude=lambda n, p: n.startswith(("patch_embed", "final"))
    )
    assert set(by_predicate.muon_names) == hidden


def test_muon_split_rejects_unknown_names():
    with pytest.raises(ValueError, match="'patch_embedder' matches no trainable parameter"):
        muon_param_groups(_TinyDiT(), exclude=("patch_embedder", "final"))
    with pytest.raises(TypeError, match="sequence of names"):
        muon_param_groups(_TinyDiT(), exclude="final")
    with pytest.raises(ValueError, match="2-D"):
        muon_param_groups(_TinyDiT(), exclude=(), hidden_matrix=lambda n, p: n == "pos_embed")


def test_one_step_of_muon_and_adamw_updates_their_parameters():
    torch.manual_seed(0)
    model = _TinyDiT()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    split = muon_param_groups(model, exclude=("patch_embed", "final"), weight_decay=0.01)
    muon, adamw = muon_adamw_optimizers(split, lr=0.02)
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert set(muon.param_groups[0]["param_names"]) == set(split.muon_names)
    x, t = torch.randn(2, 6, 4), torch.tensor([0, 3])
    loss = model(x, t).square().mean()
    loss.backward()
    muon.step()
    adamw.step()
    after = dict(model.named_parameters())
    changed = {n for n in ALL if not torch.equal(before[n], after[n].detach())}
    assert changed == ALL
    assert torch.equal(before["frozen"], after["frozen"])
    # Muon's orthogonalised update has no relation to the raw gradient's scale: the change of
    # a hidden matrix is spread over all its singular directions, unlike AdamW's sign-like step.
    delta = after["blocks.0.qkv.weight"].detach() - before["blocks.0.qkv.weight"]
    s = torch.linalg.svdvals(delta)
    assert float(s.min() / s.max()) > 0.3


class _DeclaringDiT(_TinyDiT):
    def adamw_linear_names(self) -> tuple[str, ...]:
        return ("patch_embed", "final")


def test_muon_split_defaults_to_the_model_declaration():
    hidden = {f"blocks.{i}.{m}.weight" for i in (0, 1) for m in ("qkv", "proj")}
    assert set(muon_param_groups(_DeclaringDiT()).muon_names) == hidden
    with pytest.raises(TypeError, match=r"no adamw_linear_names\(\) method.*pass exclude="):
        muon_param_groups(_TinyDiT())


class _ModulatedBlock(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.inner = nn.Linear(dim, dim)
        self.modulation = Modulation(dim, kind="shared_bias")
        self.ada = Modulation(dim, kind="adaln_mlp")


def test_modulation_tables_are_biases_without_decay():
    # The report's per-block tunable bias (Modulation.table, rows x dim) is 2-D but a bias:
    # AdamW without decay, in both builders. The adaLN-MLP variant's matrix stays a matrix.
    model = _ModulatedBlock()
    assert model.modulation.table.ndim == 2
    groups = adamw_param_groups(model, weight_decay=0.1)
    assert _names(groups, 0.1) == {"inner.weight", "ada.proj.weight"}
    assert _names(groups, 0.0) == {"inner.bias", "modulation.table", "ada.proj.bias"}
    split = muon_param_groups(model, exclude=("inner",), weight_decay=0.1)
    assert split.muon_names == ["ada.proj.weight"]
    assert _names(split.adamw, 0.0) == {"inner.bias", "modulation.table", "ada.proj.bias"}
    assert _names(split.adamw, 0.1) == {"inner.weight"}
