"""Resumable training checkpoints (torch.distributed.checkpoint) and safetensors export."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.optim.lr_scheduler import LRScheduler

from k2_dit.config import DiTConfig
from k2_dit.model import DiT
from k2_dit.train import save_checkpoint

STATE_NAME = "trainer_state.json"


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _single() -> bool:
    return not (dist.is_available() and dist.is_initialized())


def _is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def checkpoint_path(directory: str | os.PathLike[str], step: int) -> Path:
    """The folder of the checkpoint taken after `step` optimizer steps."""
    return Path(directory) / f"step-{step:08d}"


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint with the highest step under `directory`, or None.

    A checkpoint is complete once its `trainer_state.json` exists: it is written last, after
    every rank finished its shard.
    """
    root = Path(directory)
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if (p / STATE_NAME).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_training_state(
    directory: str | os.PathLike[str],
    *,
    step: int,
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[LRScheduler],
    trainer_state: dict[str, Any],
) -> Path:
    """Write model + optimizer shards with DCP, then the JSON trainer state (collective call).

    DCP stores each rank's shards in parallel and records the global layout, so a checkpoint
    taken on N ranks loads on M ranks (or a single process). Parameter names are the plain
    model names (`get_state_dict` strips FSDP, activation-checkpoint and compile wrappers).

    Args:
        directory: root folder of the run's checkpoints.
        step: optimizer steps taken so far.
        model: the (possibly wrapped) model.
        optimizers: its optimizers.
        schedulers: their LR schedulers (state goes into the JSON file).
        trainer_state: JSON-ready extras (guard state, metrics) written by rank 0.

    Returns:
        The checkpoint folder.
    """
    path = checkpoint_path(directory, step)
    path.mkdir(parents=True, exist_ok=True)
    model_sd, optim_sd = get_state_dict(model, list(optimizers))
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path), no_dist=_single())
    _barrier()
    if _is_main():
        payload = {
            "step": step,
            "schedulers": [s.state_dict() for s in schedulers],
            "trainer": trainer_state,
        }
        tmp = path / (STATE_NAME + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path / STATE_NAME)
    _barrier()
    return path


def load_training_state(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[LRScheduler],
) -> dict[str, Any]:
    """Load a `save_training_state` folder into the model, optimizers and schedulers.

    Args:
        path: the checkpoint folder (e.g. from `latest_checkpoint`).
        model: the model, wrapped exactly as for training.
        optimizers: optimizers built the same way as when saving.
        schedulers: their schedulers.

    Returns:
        {"step": int, "trainer": the saved trainer_state}.
    """
    path = Path(path)
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise FileNotFoundError(
            f"{state_file} is missing: {path} is not a complete checkpoint (the save was "
            "interrupted); resume from `latest_checkpoint(...)` instead"
        )
    payload = json.loads(state_file.read_text(encoding="utf-8"))
    if len(payload["schedulers"]) != len(schedulers):
        raise ValueError(
            f"{path} holds {len(payload['schedulers'])} scheduler states but {len(schedulers)} "
            "schedulers were given: build the same optimizers as the saved run"
        )
    model_sd, optim_sd = get_state_dict(model, list(optimizers))
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path), no_dist=_single())
    set_state_dict(
        model, list(optimizers), model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    for sched, sd in zip(schedulers, payload["schedulers"], strict=True):
        sched.load_state_dict(sd)
    return {"step": int(payload["step"]), "trainer": payload["trainer"]}


def export_checkpoint(
    directory: str | os.PathLike[str], model: nn.Module, config: DiTConfig, *, step: int
) -> Path | None:
    """Gather the full weights to rank 0 and write a `k2_dit.train.save_checkpoint` folder.

    Collective: every rank must call it. The result (`model.safetensors` + `config.json`)
    loads with `k2_dit.train.load_checkpoint(directory, DiT)` for sampling or merging (PMA).

    Args:
        directory: destination folder.
        model: the (possibly sharded) DiT.
        config: the config it was built from.
        step: recorded in the checkpoint's metadata.

    Returns:
        The folder on rank 0, None on other ranks.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(model, options=options)
    path = None
    if _is_main():
        with torch.device("meta"):
            shell = DiT(config)
        # Gathered tensors can be views into padded all-gather buffers, which safetensors
        # refuses to save (it would write the whole buffer); clone each into its own storage.
        owned = {k: v.detach().clone() for k, v in full.items()}
        shell.load_state_dict(owned, strict=True, assign=True)
        path = save_checkpoint(directory, shell, config, step=step)
    _barrier()
    return path
