"""Pretraining through k2-dit's FSDP2 trainer (`ScaleSettings.trainer = "fsdp2"`).

The world's rendered images and encoded caption variants become a
`k2_dit.distributed.InMemoryDataset`; the recipe's two resolution stages become
`ResolutionStage`s (pixel space: one pixel per latent cell) trained back to back under one
warmup-stable-decay schedule, with Muon or AdamW, float8 per stage, `torch.compile`,
activation checkpointing and PMA snapshots as `ScaleSettings` says. The model evaluated
afterwards is the PMA average when PMA is on (the report's replacement for an EMA copy),
else the final export. Runs in one process, or under `torchrun --nproc_per_node=N`, where
every rank renders the same data and rank 0 evaluates and writes the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from k2_dit.buckets import ResolutionStage
from k2_dit.distributed import InMemoryDataset, TrainConfig, TrainResult, shutdown, train
from k2_dit.model import DiT
from k2_dit.train import load_checkpoint
from k2_recipes.presets import PretrainConfig
from k2_recipes.rundir import RunDir
from k2_recipes.world import TrainingSet


@dataclass
class ScaledRun:
    """What the FSDP2 path hands back to `run_pretrain`."""

    model: DiT | None
    """The evaluated weights (PMA average or final export) on rank 0; None on other ranks."""
    checkpoint: Path | None
    result: TrainResult


def _stages(cfg: PretrainConfig) -> list[ResolutionStage]:
    """The recipe's stages with steps, in pixel space (one pixel per latent cell)."""
    return [
        ResolutionStage(
            resolution=stage.resolution,
            train_shift=stage.shift,
            steps=stage.steps,
            latent_factor=1,
            patch_size=cfg.model.patch_size,
        )
        for stage in (cfg.low_res, cfg.high_res)
        if stage.steps
    ]


def train_config(cfg: PretrainConfig, out: Path) -> TrainConfig:
    """The `TrainConfig` equivalent of the recipe's stages and `ScaleSettings`.

    The trainer runs one schedule and one global batch across stages (the report's WSD over
    the whole run): LR, batch, warmup and timestep spread come from the last stage, the
    warmup from the first.
    """
    s = cfg.scale
    stages = _stages(cfg)
    if not stages:
        raise ValueError("the fsdp2 trainer needs at least one stage with steps > 0")
    first = cfg.low_res if cfg.low_res.steps else cfg.high_res
    last = cfg.high_res if cfg.high_res.steps else cfg.low_res
    float8 = None
    if s.float8:
        if len(s.float8) != len(stages):
            raise ValueError(
                f"scale.float8 has {len(s.float8)} recipes for {len(stages)} stages: give one "
                "per stage with steps > 0 (e.g. --pretrain.scale.float8 tensorwise rowwise)"
            )
        float8 = tuple(None if r == "none" else r for r in s.float8)
    return TrainConfig(
        model=cfg.model,
        stages=tuple(stages),
        global_batch_size=last.batch_size,
        lr=last.lr,
        warmup_steps=first.warmup_steps,
        decay_fraction=last.decay_fraction,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        optimizer=s.optimizer,
        grad_clip=cfg.grad_clip,
        seed=cfg.seed,
        timestep_std=last.timestep_std,
        cfg_dropout=cfg.cfg_dropout,
        mixed_precision="bf16" if cfg.device.startswith("cuda") else "none",
        activation_checkpointing=s.activation_checkpointing,
        compile=cfg.compile,
        device="cuda" if cfg.device.startswith("cuda") else "cpu",
        checkpoint_dir=str(out),
        float8=float8,
        float8_min_features=s.float8_min_features,
        pma_every=s.pma_every,
        pma_keep=s.pma_keep,
        metrics_path=str(out / "metrics.jsonl"),
    )


def train_fsdp2(cfg: PretrainConfig, data: TrainingSet, run: RunDir) -> ScaledRun:
    """Train on the world with the FSDP2 trainer; return the model to evaluate (rank 0)."""
    out = run.path / "checkpoints" / "fsdp2"
    out.mkdir(parents=True, exist_ok=True)
    tcfg = train_config(cfg, out)
    dataset = InMemoryDataset(
        cfg.model,
        tcfg.stages,
        images={i: data.images[s.resolution] for i, s in enumerate(tcfg.stages)},
        text=data.hidden,
        mask=data.mask,
        caption_weights=cfg.world.caption_mix,
        seed=cfg.seed,
    )
    result = train(tcfg, dataset=dataset)
    # Every rank leaves the process group now: rank 0 evaluates from the exported files.
    shutdown(result.info)
    if not result.info.is_main:
        return ScaledRun(model=None, checkpoint=None, result=result)
    for rec in result.records[:: max(1, len(result.records) // 200)]:
        run.log(
            stage=f"fsdp2-{rec['stage']}px",
            step=rec["step"],
            resolution=rec["stage"],
            loss=rec["loss"],
            grad_norm=rec["grad_norm"],
            lr=rec["lr"],
        )
    chosen = result.pma_checkpoint or result.checkpoint
    if chosen is None:
        raise RuntimeError(f"the FSDP2 run in {out} wrote no final checkpoint to evaluate")
    model, _, _ = load_checkpoint(chosen, DiT, map_location=cfg.device)
    run.log(stage="fsdp2", evaluated=str(chosen), pma=result.pma_checkpoint is not None)
    return ScaledRun(model=model.to(torch.float32), checkpoint=chosen, result=result)
