"""Distributed pretraining: FSDP2 wrapping, deterministic resume, spike guard, `train(cfg)`.

Run `train` under `torchrun --nproc_per_node=N` (nccl on CUDA, gloo on CPU) or as a single
process; `python -m k2_dit.distributed --help` is a small launcher for synthetic runs.
"""

from k2_dit.distributed._checkpoint import (
    checkpoint_path,
    export_checkpoint,
    latest_checkpoint,
    load_training_state,
    save_training_state,
)
from k2_dit.distributed._guard import GuardConfig, SpikeGuard, TrainingDiverged
from k2_dit.distributed._setup import (
    DistInfo,
    derive_seed,
    init_distributed,
    shutdown,
    step_generator,
)
from k2_dit.distributed._shard import adamw_only_linears, build_optimizers, shard_model
from k2_dit.distributed._synthetic import SyntheticConfig, SyntheticData
from k2_dit.distributed._trainer import LossHook, TrainConfig, TrainResult, train

__all__ = [
    "DistInfo",
    "GuardConfig",
    "LossHook",
    "SpikeGuard",
    "SyntheticConfig",
    "SyntheticData",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "adamw_only_linears",
    "build_optimizers",
    "checkpoint_path",
    "derive_seed",
    "export_checkpoint",
    "init_distributed",
    "latest_checkpoint",
    "load_training_state",
    "save_training_state",
    "shard_model",
    "shutdown",
    "step_generator",
    "train",
]
