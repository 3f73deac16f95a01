"""`k2 pretrain` through k2-dit's FSDP2 trainer: the world as an InMemoryDataset, PMA evaluated."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from k2_recipes.presets import PRETRAIN_PRESETS, ScaleSettings
from k2_recipes.pretrain import run_pretrain
from k2_recipes.rundir import RunDir
from k2_recipes.scale import train_config


def _cfg(**scale):
    smoke = PRETRAIN_PRESETS["smoke"]
    return replace(
        smoke,
        world=replace(smoke.world, train_scenes=64),
        low_res=replace(smoke.low_res, steps=4, warmup_steps=1, batch_size=8),
        high_res=replace(smoke.high_res, steps=6, warmup_steps=1, batch_size=8),
        eval=replace(smoke.eval, num_prompts=8, steps=2, batch_size=8, grid_size=2),
        scale=ScaleSettings(trainer="fsdp2", **scale),
        progress=False,
        threads=1,
    )


def test_small_preset_uses_fsdp2_muon_float8_and_pma():
    small = PRETRAIN_PRESETS["small"]
    assert small.scale.trainer == "fsdp2" and small.scale.optimizer == "muon"
    assert small.scale.float8 == ("tensorwise", "rowwise") and small.scale.pma_every > 0
    tcfg = train_config(small, Path("/tmp/unused"))
    assert [s.resolution for s in tcfg.stages] == [32, 64]
    assert tcfg.float8 == ("tensorwise", "rowwise") and tcfg.optimizer == "muon"


def test_fsdp2_trainer_runs_the_recipe_and_evaluates_the_pma_average(tmp_path):
    cfg = _cfg(pma_every=1, pma_keep=2)
    run = RunDir(tmp_path / "run")
    result = run_pretrain(cfg, run)
    run.close()
    out = tmp_path / "run" / "checkpoints" / "fsdp2"
    snaps = sorted((out / "pma").glob("step-*"))
    assert len(snaps) == 2  # the last pma_keep stable-phase snapshots
    # The evaluated model is the mean of the kept snapshots (float64 reference).
    tensors = [load_file(s / "model.safetensors") for s in snaps]
    got = result.model.state_dict()
    for name in tensors[0]:
        want = sum(t[name].double() for t in tensors) / len(tensors)
        torch.testing.assert_close(got[name].double(), want, rtol=1e-6, atol=1e-7)
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    log = [json.loads(line) for line in text.splitlines() if line]
    steps = [r for r in log if str(r.get("stage", "")).startswith("fsdp2-")]
    assert {r["resolution"] for r in steps} == {16, 32}
    assert any(r.get("stage") == "fsdp2" and r.get("pma") for r in log)
    assert "pretrained" in result.evals


def test_simple_trainer_rejects_fsdp2_only_settings():
    with pytest.raises(ValueError, match="need scale\\.trainer"):
        ScaleSettings(pma_every=2)
    assert ScaleSettings(optimizer="muon").trainer == "simple"  # Muon runs in either loop
    with pytest.raises(ValueError, match="one per stage"):
        train_config(_cfg(float8=("tensorwise",)), Path("/tmp/unused"))
