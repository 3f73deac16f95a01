"""`train(cfg)`: FSDP2 rectified-flow pretraining over resolution stages, resumable."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor

from k2_dit.buckets import BucketBatchSampler, ResolutionStage, stage_at
from k2_dit.config import ConfigError, DiTConfig
from k2_dit.distributed._checkpoint import (
    export_checkpoint,
    latest_checkpoint,
    load_training_state,
    save_training_state,
)
from k2_dit.distributed._guard import GuardConfig, SpikeGuard
from k2_dit.distributed._setup import DistInfo, derive_seed, init_distributed, step_generator
from k2_dit.distributed._shard import adamw_only_linears, build_optimizers, shard_model
from k2_dit.distributed._synthetic import SyntheticConfig, SyntheticData
from k2_dit.flow import interpolate, rectified_flow_loss, shifted_logit_normal_timesteps
from k2_dit.model import DiT
from k2_dit.train import wsd_schedule

log = logging.getLogger("k2_dit.distributed")
LossHook = Callable[[int, Tensor], Tensor]
"""`hook(step, loss) -> loss`, applied to each rank's loss before backward (fault injection)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything `train` needs; stages run back to back under one WSD schedule."""

    model: DiTConfig
    stages: tuple[ResolutionStage, ...]
    """Resolution stages, each with `steps > 0`."""
    global_batch_size: int = 8
    lr: float = 1e-4
    warmup_steps: int = 0
    decay_fraction: float = 0.2
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    optimizer: Literal["adamw", "muon"] = "adamw"
    grad_clip: float = 1.0
    seed: int = 0
    timestep_mean: float = 0.0
    timestep_std: float = 1.0
    cfg_dropout: float = 0.1
    """Probability of dropping a caption (all-False text mask) for classifier-free guidance."""
    mixed_precision: Literal["bf16", "none"] = "bf16"
    activation_checkpointing: bool = False
    compile: bool = False
    device: Literal["auto", "cuda", "cpu"] = "auto"
    guard: GuardConfig = field(default_factory=GuardConfig)
    data: SyntheticConfig = field(default_factory=SyntheticConfig)
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    """Save every this many steps (0: only at the end or at `stop_after`)."""
    resume: bool = True
    """Continue from the latest complete checkpoint in `checkpoint_dir` when there is one."""
    stop_after: int | None = None
    """Checkpoint and return once this many steps are done (a planned interruption)."""
    export_final: bool = True
    """Write a safetensors `final` checkpoint when the last stage ends."""
    metrics_path: str | None = None
    """JSONL file rank 0 appends one record per step to."""

    def __post_init__(self) -> None:
        if not self.stages or any(s.steps < 1 for s in self.stages):
            raise ConfigError("TrainConfig.stages must be non-empty, each with steps >= 1")
        if self.global_batch_size < 1 or self.lr <= 0 or self.grad_clip <= 0:
            raise ConfigError("global_batch_size, lr and grad_clip must be positive")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ConfigError(f"cfg_dropout={self.cfg_dropout} must lie in [0, 1)")
        if self.checkpoint_every < 0:
            raise ConfigError("checkpoint_every must be >= 0")
        if self.stop_after is not None and self.checkpoint_dir is None:
            raise ConfigError("stop_after needs checkpoint_dir: the stop is where a resume starts")

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


@dataclass(kw_only=True)
class TrainResult:
    """Per-step records of this invocation (identical on every rank) and where it ended."""

    records: list[dict[str, Any]]
    model: DiT
    """The trained model (sharded under FSDP2; wrappers applied)."""
    start_step: int
    end_step: int
    checkpoint: Path | None
    info: DistInfo


def _global_mean(x: Tensor, info: DistInfo) -> Tensor:
    if info.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x = x / info.world_size
    return x


def _clip(model: DiT, max_norm: float) -> Tensor:
    # torchtitan's recipe: norm over DTensor grads, made a plain tensor, then one clip.
    params = [p for p in model.parameters() if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total, foreach=True)
    return total


def _draw(cfg: TrainConfig, stage: ResolutionStage, step: int, positions: list[int], like: Tensor):
    """Timesteps, noise and caption drops; sample j of the global batch uses key (seed, step, j),
    so the draws do not depend on how the global batch is split over ranks."""
    ts, noises, drops = [], [], []
    for j in positions:
        gen = step_generator(cfg.seed, 2, step, j)
        ts.append(
            shifted_logit_normal_timesteps(
                1,
                shift=stage.train_shift,
                mean=cfg.timestep_mean,
                std=cfg.timestep_std,
                generator=gen,
            )
        )
        noises.append(torch.randn(like.shape[1:], generator=gen))
        drops.append(torch.rand(1, generator=gen) < cfg.cfg_dropout)
    return torch.cat(ts), torch.stack(noises), torch.cat(drops)


def train(cfg: TrainConfig, *, loss_hook: LossHook | None = None) -> TrainResult:
    """Pretrain the DiT on synthetic bucketed data; run it under torchrun for FSDP2.

    Per step: pick the stage and its global batch (`BucketBatchSampler.batch_at`, one bucket
    per batch), draw timesteps (shifted logit-normal at the stage's training shift), noise and
    caption drops from generators keyed by (seed, step, sample), compute the rectified-flow
    loss, backward, clip, and let the `SpikeGuard` skip the update when the loss or gradient
    norm is non-finite or spikes. The WSD schedule advances every step, skipped or not. All
    randomness derives from (seed, step, rank/sample), and checkpoints hold model, optimizer,
    scheduler and guard state, so a resumed run reproduces the uninterrupted one.

    Args:
        cfg: the run.
        loss_hook: optional `hook(step, loss) -> loss` (tests inject NaNs and spikes with it).

    Returns:
        A `TrainResult`; records hold step (1-based), loss, grad_norm, lr, skipped, stage,
        bucket, image_tokens and seconds.

    References:
        Esser et al. 2024 (SD3), §3.1 and §5.3.2; Krea 2 report, Pretraining.
    """
    device = None if cfg.device == "auto" else cfg.device
    info = init_distributed(device=device)
    torch.manual_seed(cfg.seed)
    model = DiT(cfg.model).to(info.device)
    exclude = adamw_only_linears(model)
    bf16 = cfg.mixed_precision == "bf16"
    shard_model(
        model,
        distributed=info.distributed,
        param_dtype=torch.bfloat16 if bf16 else None,
        activation_checkpointing=cfg.activation_checkpointing,
        compile=cfg.compile,
    )
    optimizers = build_optimizers(
        model,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        exclude=exclude,
    )
    warmup = min(cfg.warmup_steps, cfg.total_steps // 2)
    schedulers = [
        wsd_schedule(
            o, warmup_steps=warmup, total_steps=cfg.total_steps, decay_fraction=cfg.decay_fraction
        )
        for o in optimizers
    ]
    guard = SpikeGuard(cfg.guard)
    start = 0
    ckpt_root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if ckpt_root is not None and cfg.resume and (last := latest_checkpoint(ckpt_root)):
        state = load_training_state(last, model=model, optimizers=optimizers, schedulers=schedulers)
        start = state["step"]
        guard.load_state_dict(state["trainer"]["guard"])
        if info.is_main:
            log.info("resumed from %s at step %d", last, start)

    data = SyntheticData(cfg.model, cfg.stages, cfg.data, seed=cfg.seed)
    samplers = [
        BucketBatchSampler(
            b,
            global_batch_size=cfg.global_batch_size,
            rank=info.rank,
            world_size=info.world_size,
            seed=cfg.seed,
        )
        for b in data.bucket_of
    ]
    end = cfg.total_steps if cfg.stop_after is None else min(cfg.stop_after, cfg.total_steps)
    compute = torch.bfloat16 if bf16 and info.distributed else torch.float32
    autocast = bf16 and not info.distributed  # single process: no FSDP policy, use autocast
    records: list[dict[str, Any]] = []
    model.train()
    for step in range(start, end):
        tic = time.perf_counter()
        si, offset = stage_at(cfg.stages, step)
        stage = cfg.stages[si]
        bucket, indices = samplers[si].batch_at(offset)
        torch.manual_seed(derive_seed(cfg.seed, 3, step, info.rank))  # any implicit RNG use
        x0, text, mask = data.batch(indices, stage=si, bucket=bucket)
        first = info.rank * len(indices)
        t, noise, drop = _draw(cfg, stage, step, list(range(first, first + len(indices))), x0)
        mask = mask & ~drop[:, None]
        x0, noise, t = x0.to(info.device), noise.to(info.device), t.to(info.device)
        text, mask = text.to(info.device, compute), mask.to(info.device)
        xt = interpolate(x0, noise, t).to(compute)
        with torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=autocast):
            pred = model(xt, t, text, mask)
        loss = rectified_flow_loss(pred.float(), x0, noise).mean()
        if loss_hook is not None:
            loss = loss_hook(step, loss)
        loss.backward()
        grad_norm = _clip(model, cfg.grad_clip)
        stats = torch.stack([_global_mean(loss.detach().clone(), info), grad_norm.float()])
        loss_value, norm_value = stats.tolist()  # the step's one host sync
        skipped = guard.check(loss_value, norm_value, step=step + 1)
        if skipped is None:
            for opt in optimizers:
                opt.step()
        elif info.is_main:
            log.warning("step %d skipped: %s", step + 1, skipped)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        lr = schedulers[0].get_last_lr()[0]
        for sched in schedulers:
            sched.step()
        rec = {
            "step": step + 1,
            "loss": loss_value,
            "grad_norm": norm_value,
            "lr": lr,
            "skipped": skipped,
            "stage": stage.resolution,
            "bucket": list(data.tables[si].buckets[bucket]),
            "image_tokens": data.tables[si].num_tokens(bucket),
            "seconds": time.perf_counter() - tic,
        }
        records.append(rec)
        if info.is_main and cfg.metrics_path:
            with open(cfg.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        done = step + 1
        periodic = cfg.checkpoint_every and done % cfg.checkpoint_every == 0
        if ckpt_root is not None and (periodic or done == end):
            save_training_state(
                ckpt_root,
                step=done,
                model=model,
                optimizers=optimizers,
                schedulers=schedulers,
                trainer_state={"guard": guard.state_dict()},
            )
    final = None
    if ckpt_root is not None and cfg.export_final and end == cfg.total_steps and start < end:
        final = export_checkpoint(ckpt_root / "final", model, cfg.model, step=end)
    return TrainResult(
        records=records, model=model, start_step=start, end_step=end, checkpoint=final, info=info
    )
