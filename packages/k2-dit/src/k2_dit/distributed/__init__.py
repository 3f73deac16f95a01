"""Distributed pretraining: FSDP2 wrapping, deterministic resume, spike guard, `train(cfg)`.

Run `train` under `torchrun --nproc_per_node=N` (nccl on CUDA, gloo on CPU) or as a single
process; `python -m k2_dit.distributed --help` is a small launcher for synthetic runs. Data
comes from any `PretrainDataset` (`InMemoryDataset` for encoded tensors, `SyntheticData` by
default); float8 and PMA snapshots are `TrainConfig` options.
"""

from k2_dit.distributed._checkpoint import (
    checkpoint_path,
    export_checkpoint,
    latest_checkpoint,
    load_training_state,
    save_training_state,
)
from k2_dit.distributed._data import InMemoryDataset, PretrainDataset
from k2_dit.distributed._guard import GuardConfig, SpikeGuard, TrainingDiverged
from k2_dit.distributed._pma import (
    average_pma_snapshots,
    export_pma_snapshot,
    pma_snapshot_path,
    pma_snapshot_steps,
    pma_window,
)
from k2_dit.distributed._setup import (
    DistInfo,
    derive_seed,
    init_distributed,
    shutdown,
    step_generator,
)
from k2_dit.distributed._shard import adamw_only_linears, shard_model
from k2_dit.distributed._synthetic import SyntheticConfig, SyntheticData
from k2_dit.distributed._trainer import Float8Choice, LossHook, TrainConfig, TrainResult, train
from k2_dit.train import build_optimizers  # re-exported: the trainer's optimizers

__all__ = [
    "DistInfo",
    "Float8Choice",
    "GuardConfig",
    "InMemoryDataset",
    "LossHook",
    "PretrainDataset",
    "SpikeGuard",
    "SyntheticConfig",
    "SyntheticData",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "adamw_only_linears",
    "average_pma_snapshots",
    "build_optimizers",
    "checkpoint_path",
    "derive_seed",
    "export_checkpoint",
    "export_pma_snapshot",
    "init_distributed",
    "latest_checkpoint",
    "load_training_state",
    "pma_snapshot_path",
    "pma_snapshot_steps",
    "pma_window",
    "save_training_state",
    "shard_model",
    "shutdown",
    "step_generator",
    "train",
]
