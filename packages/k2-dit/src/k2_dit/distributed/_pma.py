"""PMA for the FSDP2 trainer: full safetensors snapshots in the stable phase, then their mean."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from k2_dit.config import DiTConfig
from k2_dit.distributed._checkpoint import _barrier, _is_main, export_checkpoint
from k2_dit.model import DiT
from k2_dit.train import average_checkpoints, pma_checkpoints, save_checkpoint
from k2_dit.train._checkpoint import CONFIG_NAME

PMA_DIR = "pma"
"""Folder under the run's `checkpoint_dir` holding the snapshots and the average."""
AVERAGE_NAME = "average"


def pma_snapshot_path(directory: str | os.PathLike[str], step: int) -> Path:
    """`<checkpoint_dir>/pma/step-XXXXXX`: the snapshot taken after `step` optimizer steps."""
    return Path(directory) / PMA_DIR / f"step-{step:06d}"


def pma_window(*, warmup: int, stable: int) -> tuple[int, int]:
    """(first, last) step whose snapshot counts as stable-phase under a WSD schedule.

    The snapshot after step n holds the update made at 0-based step n - 1 with LR factor
    lambda(n - 1); the stable phase has lambda = 1 for 0-based steps [warmup, warmup + stable),
    so n runs over [warmup + 1, warmup + stable]: every update since warmup used the peak LR
    and none a decayed one.

    Args:
        warmup: warmup steps of the schedule.
        stable: stable steps of the schedule (`k2_dit.train.wsd_phase_steps`).

    Returns:
        The inclusive range of snapshot steps.
    """
    return warmup + 1, warmup + stable


def pma_snapshot_steps(*, warmup: int, stable: int, every: int) -> list[int]:
    """Steps n in `pma_window` with n % every == 0: where the trainer takes PMA snapshots."""
    if every < 1:
        raise ValueError(f"every={every} must be >= 1")
    lo, hi = pma_window(warmup=warmup, stable=stable)
    return [n for n in range(lo, hi + 1) if n % every == 0]


def _snapshots(directory: Path) -> dict[int, Path]:
    """Complete snapshots (their `config.json` is written last) under `directory/pma`."""
    root = directory / PMA_DIR
    found = {}
    for p in root.glob("step-*") if root.is_dir() else ():
        tail = p.name.split("-", 1)[1]
        if tail.isdigit() and (p / CONFIG_NAME).is_file():
            found[int(tail)] = p
    return found


def export_pma_snapshot(
    directory: str | os.PathLike[str],
    model: nn.Module,
    config: DiTConfig,
    *,
    step: int,
    keep: int,
    every: int,
) -> Path | None:
    """Gather the full weights into a PMA snapshot; drop snapshots PMA can no longer use.

    Collective (every rank calls it; rank 0 writes). After writing step n, rank 0 deletes the
    snapshots older than n - (keep - 1)·every: the final average takes the newest `keep`
    stable-phase snapshots, all at or after that step, so at most `keep` full models sit on
    disk. A resumed run re-exports the steps it replays, bit for bit.

    Args:
        directory: the run's checkpoint_dir.
        model: the (possibly sharded) DiT.
        config: its config.
        step: optimizer steps taken.
        keep: snapshots the average takes.
        every: steps between snapshots.

    Returns:
        The snapshot folder on rank 0, None elsewhere.
    """
    directory = Path(directory)
    path = export_checkpoint(pma_snapshot_path(directory, step), model, config, step=step)
    if _is_main():
        oldest = step - (keep - 1) * every
        for s, p in _snapshots(directory).items():
            if s < oldest:
                shutil.rmtree(p)
    _barrier()
    return path


def average_pma_snapshots(
    directory: str | os.PathLike[str],
    config: DiTConfig,
    *,
    keep: int,
    every: int,
    window: tuple[int, int],
    weighting: Literal["uniform", "ema"] = "uniform",
    ema_decay: float = 0.9,
    step: int,
) -> Path | None:
    """Average the newest `keep` snapshots of `window` into `<checkpoint_dir>/pma/average`.

    Rank 0 selects them with `k2_dit.train.pma_checkpoints` (they must be `every` steps
    apart, all present) and streams their mean with `k2_dit.train.average_checkpoints`
    (peak memory: one model plus one tensor), uniform, or with `ema` weights
    w_i ∝ ema_decay^(keep - 1 - i) so the newest counts most. Collective (barrier at the end).

    Args:
        directory: the run's checkpoint_dir.
        config: the model config (the average is a `save_checkpoint` folder).
        keep: number of snapshots averaged.
        every: steps between them.
        window: (first, last) stable-phase snapshot step (`pma_window`).
        weighting: `uniform` (SMA) or `ema`.
        ema_decay: d of the `ema` weighting.
        step: step recorded in the average's metadata (the run's last step).

    Returns:
        The folder on rank 0, None elsewhere.

    References:
        Li et al. 2025, "Model Merging in Pre-training of Large Language Models" (arXiv
        2505.12082), §3-4; Krea 2 report, Pretraining ("apply PMA").
    """
    directory = Path(directory)
    out = None
    if _is_main():
        chosen = pma_checkpoints(
            _snapshots(directory),
            last_n=keep,
            interval=every,
            start_step=window[0],
            end_step=window[1] + 1,
        )
        decay = ema_decay if weighting == "ema" else None
        merged = average_checkpoints(chosen, ema_decay=decay)
        with torch.device("meta"):
            shell = DiT(config)
        shell.load_state_dict(merged, strict=True, assign=True)
        steps = [int(p.name.split("-", 1)[1]) for p in chosen]
        extra = {"pma": {"steps": steps, "weighting": weighting, "ema_decay": decay}}
        out = save_checkpoint(
            directory / PMA_DIR / AVERAGE_NAME, shell, config, step=step, extra=extra
        )
    _barrier()
    return out
