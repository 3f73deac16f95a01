"""The simple pretraining loop's optimisers: AdamW, or Muon on hidden matrices plus AdamW."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from k2_dit.model import DiT
from k2_dit.train import BatchedMuon, build_optimizers
from k2_recipes.presets import PRETRAIN_PRESETS, ScaleSettings
from k2_recipes.pretrain import train_stage
from k2_recipes.rundir import RunDir
from k2_recipes.world import TrainingSet


def _cfg(optimizer: str):
    base = PRETRAIN_PRESETS["smoke"]
    return replace(
        base,
        scale=ScaleSettings(optimizer=optimizer),
        high_res=replace(base.high_res, resolution=16, steps=3, batch_size=4, warmup_steps=1),
    )


def _data(cfg, n: int = 8, length: int = 6) -> TrainingSet:
    gen = torch.Generator().manual_seed(0)
    text = cfg.model.text
    hidden = torch.randn(n, 3, length, text.num_layers, text.encoder_dim, generator=gen)
    mask = torch.ones(n, 3, length, dtype=torch.bool)
    images = {16: torch.randint(0, 256, (n, 3, 16, 16), generator=gen, dtype=torch.uint8)}
    return TrainingSet(
        images=images, hidden=hidden.bfloat16(), mask=mask, prompts=[("l", "m", "s")] * n
    )


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    cfg = _cfg("muon")
    model = DiT(cfg.model)
    # The call the recipe's simple loop makes for scale.optimizer="muon".
    muon, adamw = build_optimizers(
        model,
        optimizer=cfg.scale.optimizer,
        lr=cfg.high_res.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        batched=True,
    )
    assert isinstance(muon, BatchedMuon) and isinstance(adamw, torch.optim.AdamW)
    on_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    on_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    every = {id(p) for p in model.parameters()}
    assert on_muon | on_adamw == every and not on_muon & on_adamw
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[i] for i in on_muon}
    # Every block attention/MLP matrix is on Muon; the first and last layers never are.
    assert all(n.startswith(("blocks.", "text_adapter.", "conditioning.")) for n in muon_names)
    assert any(".mlp." in n for n in muon_names)
    assert not any(n.startswith(model.adamw_linear_names()) for n in muon_names)
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_simple_loop_trains_with_either_optimizer(tmp_path, optimizer):
    cfg = _cfg(optimizer)
    model = DiT(cfg.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    run = RunDir(tmp_path)
    step = train_stage(
        model,
        _data(cfg),
        cfg.high_res,
        cfg,
        run,
        name="high_res",
        gen=torch.Generator().manual_seed(0),
        first_step=0,
    )
    run.close()
    assert step == 3
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    # Zero-initialised output layers make some gradients zero at step 1, but by step 3 the
    # blocks' matrices have moved under both optimisers.
    assert any(".mlp." in n for n in moved)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 3] and all(r["loss"] > 0 for r in rows)
