"""`train(cfg)`: FSDP2 rectified-flow pretraining over resolution stages, resumable."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor
from torch.optim.lr_scheduler import LRScheduler

from k2_dit.buckets import BucketBatchSampler, ResolutionStage, stage_at
from k2_dit.config import ConfigError, DiTConfig
from k2_dit.distributed._checkpoint import (
    STATE_NAME,
    export_checkpoint,
    latest_checkpoint,
    load_training_state,
    save_training_state,
)
from k2_dit.distributed._data import PretrainDataset
from k2_dit.distributed._guard import GuardConfig, SpikeGuard
from k2_dit.distributed._pma import (
    average_pma_snapshots,
    export_pma_snapshot,
    pma_snapshot_steps,
    pma_window,
)
from k2_dit.distributed._setup import DistInfo, derive_seed, init_distributed, step_generator
from k2_dit.distributed._shard import adamw_only_linears, shard_model
from k2_dit.distributed._synthetic import SyntheticConfig, SyntheticData
from k2_dit.flow import interpolate, rectified_flow_loss, shifted_logit_normal_timesteps
from k2_dit.model import DiT
from k2_dit.train import (
    Float8Report,
    Float8SkippedWarning,
    build_optimizers,
    convert_to_float8,
    wsd_phase_steps,
    wsd_schedule,
)

log = logging.getLogger("k2_dit.distributed")
LossHook = Callable[[int, Tensor], Tensor]
"""`hook(step, loss) -> loss`, applied to each rank's loss before backward (fault injection)."""
Float8Choice = Literal["tensorwise", "rowwise"] | None
"""A torchao float8 recipe for `TrainConfig.float8`, or None for bf16/fp32 linears."""


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
    float8: Float8Choice | tuple[Float8Choice, ...] = None
    """torchao float8 training (`k2_dit.train.convert_to_float8`), applied before sharding and
    compile: one recipe for the run, or one per stage (the report: tensorwise at 256 px,
    rowwise at 512 px, None from 1024 px). A stage whose recipe differs from the previous one
    rebuilds model and optimizers and carries their state over. Without an sm_89+ GPU or
    torchao the run goes on in high precision and warns `Float8SkippedWarning` once."""
    float8_min_features: int = 1024
    """Smallest linear width converted to float8 (`float8_module_filter`)."""
    pma_every: int = 0
    """Export a full safetensors PMA snapshot every this many steps of the WSD stable phase
    (0: off); needs `checkpoint_dir`."""
    pma_keep: int = 4
    """Snapshots averaged into `checkpoint_dir/pma/average` when the run ends."""
    pma_weighting: Literal["uniform", "ema"] = "uniform"
    """`uniform` mean of the snapshots, or `ema` weights ∝ pma_ema_decay^(age in snapshots)."""
    pma_ema_decay: float = 0.9

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
        try:
            warmup, stable, _ = self.wsd_phases
        except ValueError as err:
            raise ConfigError(f"TrainConfig schedule: {err}") from err
        recipes = self.float8 if isinstance(self.float8, tuple) else (self.float8,)
        if any(r not in (None, "tensorwise", "rowwise") for r in recipes):
            raise ConfigError(
                f"float8={self.float8!r}: use 'tensorwise', 'rowwise' or None, or a tuple of "
                "them with one entry per stage"
            )
        if isinstance(self.float8, tuple) and len(self.float8) != len(self.stages):
            raise ConfigError(
                f"float8 has {len(self.float8)} per-stage recipes for {len(self.stages)} stages: "
                "give one entry (or None) per stage, or a single recipe for the whole run"
            )
        if self.pma_weighting not in ("uniform", "ema"):
            raise ConfigError(f"pma_weighting={self.pma_weighting!r} must be 'uniform' or 'ema'")
        if not 0.0 < self.pma_ema_decay <= 1.0:
            raise ConfigError(f"pma_ema_decay={self.pma_ema_decay} must lie in (0, 1]")
        if self.pma_every < 0 or self.pma_keep < 1:
            raise ConfigError("pma_every must be >= 0 (0: off) and pma_keep >= 1")
        if self.pma_every:
            if self.checkpoint_dir is None:
                raise ConfigError("pma_every needs checkpoint_dir: PMA snapshots are files there")
            steps = pma_snapshot_steps(warmup=warmup, stable=stable, every=self.pma_every)
            if len(steps) < self.pma_keep:
                lo, hi = pma_window(warmup=warmup, stable=stable)
                raise ConfigError(
                    f"pma_every={self.pma_every} gives {len(steps)} snapshots {steps} in the "
                    f"stable phase (steps {lo}..{hi}) but pma_keep={self.pma_keep}: lower "
                    "pma_every or pma_keep, or lengthen the stable phase (decay_fraction, "
                    "warmup_steps)"
                )

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    @property
    def wsd_phases(self) -> tuple[int, int, int]:
        """(warmup, stable, decay) steps of the run's schedule (warmup capped at half the run)."""
        return wsd_phase_steps(
            warmup_steps=min(self.warmup_steps, self.total_steps // 2),
            total_steps=self.total_steps,
            decay_fraction=self.decay_fraction,
        )

    def float8_at(self, stage: int) -> Float8Choice:
        """The float8 recipe of stage `stage`."""
        return self.float8[stage] if isinstance(self.float8, tuple) else self.float8


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
    pma_checkpoint: Path | None = None
    """`checkpoint_dir/pma/average` (rank 0) when PMA is on and the run reached its end."""
    float8_reports: dict[int, Float8Report] = field(default_factory=dict)
    """`convert_to_float8` report per stage where this invocation (re)built the model."""


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


@dataclass
class _Built:
    """Model, optimizers and schedulers of one float8 recipe (rebuilt when the recipe changes)."""

    model: DiT
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[LRScheduler]
    recipe: Float8Choice
    report: Float8Report | None


def _convert(model: DiT, cfg: TrainConfig, recipe: str, info: DistInfo, warned: set[str]):
    """`convert_to_float8`, its skip warning raised once per run and reason, on rank 0 only."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Float8SkippedWarning)
        model, report = convert_to_float8(
            model,
            recipe=recipe,  # type: ignore[arg-type]
            min_features=cfg.float8_min_features,
        )
    for w in caught:  # anything else (torchao deprecations, ...) goes out unchanged
        if not issubclass(w.category, Float8SkippedWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if report.reason is not None and info.is_main and report.reason not in warned:
        warned.add(report.reason)
        warnings.warn(
            f"float8 {recipe} requested but skipped, training in high precision: "
            f"{report.reason} ({len(report.modules)} linear layers would have been converted)",
            Float8SkippedWarning,
            stacklevel=3,
        )
    return model, report


def _build(cfg: TrainConfig, info: DistInfo, recipe: Float8Choice, warned: set[str]) -> _Built:
    """Model (float8 conversion, then AC/compile/FSDP2), optimizers and WSD schedulers."""
    torch.manual_seed(cfg.seed)
    model = DiT(cfg.model).to(info.device)
    exclude = adamw_only_linears(model)
    report = None
    if recipe is not None:
        # Before sharding and compile: torchao swaps nn.Linear modules (same parameter names,
        # so checkpoints load either way), and compile must see the float8 casts to fuse them.
        model, report = _convert(model, cfg, recipe, info, warned)
        if info.is_main:
            log.info(
                "float8 %s: %s %d linear layers, %d kept in high precision",
                recipe,
                "converted" if report.converted else "would convert",
                len(report.modules),
                len(report.kept),
            )
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
    warmup, _, _ = cfg.wsd_phases
    schedulers: list[LRScheduler] = [
        wsd_schedule(
            o, warmup_steps=warmup, total_steps=cfg.total_steps, decay_fraction=cfg.decay_fraction
        )
        for o in optimizers
    ]
    return _Built(
        model=model, optimizers=optimizers, schedulers=schedulers, recipe=recipe, report=report
    )


def _rebuild(cfg: TrainConfig, info: DistInfo, old: _Built, recipe: Float8Choice, warned):
    """Switch float8 recipe mid-run: build anew and carry model, optimizer and LR state over.

    The state dicts hold plain (FQN-keyed) names, which float8 conversion keeps, and the
    sharded tensors are copied shard by shard, so nothing is gathered; the old model lives
    until the copy is done (peak: two models and their optimizer states).
    """
    model_sd, optim_sd = get_state_dict(old.model, old.optimizers)
    sched_sd = [s.state_dict() for s in old.schedulers]
    new = _build(cfg, info, recipe, warned)
    set_state_dict(new.model, new.optimizers, model_state_dict=model_sd, optim_state_dict=optim_sd)
    for sched, sd in zip(new.schedulers, sched_sd, strict=True):
        sched.load_state_dict(sd)
    return new


def _check_dataset(data: object, cfg: TrainConfig) -> None:
    if not isinstance(data, PretrainDataset):
        raise TypeError(
            f"dataset {type(data).__name__} does not implement PretrainDataset: it needs "
            "`tables` and `bucket_of` (one per stage) and `batch(indices, *, stage, bucket, step)`"
        )
    name = type(data).__name__
    if len(data.tables) != len(cfg.stages) or len(data.bucket_of) != len(cfg.stages):
        raise ValueError(
            f"{name} has {len(data.tables)} bucket tables and {len(data.bucket_of)} bucket_of "
            f"entries but the run has {len(cfg.stages)} stages: build it from cfg.stages"
        )
    sizes = {len(b) for b in data.bucket_of}
    if len(sizes) != 1:
        raise ValueError(f"{name}.bucket_of lists {sorted(sizes)} samples across stages: use one N")
    for i, (table, stage) in enumerate(zip(data.tables, cfg.stages, strict=True)):
        if table.multiple != stage.multiple:
            raise ValueError(
                f"{name}.tables[{i}] has {table.multiple} px per token but stage {i} has "
                f"{stage.multiple} (latent_factor·patch_size): build the tables with stage.table()"
            )


def _check_batch(batch, data, cfg: TrainConfig, si: int, bucket: int, n: int):
    x0, text, mask = batch
    lh, lw = cfg.stages[si].latent_size(data.tables[si], bucket)
    t = cfg.model.text
    want = (n, cfg.model.in_channels, lh, lw)
    if tuple(x0.shape) != want:
        raise ValueError(
            f"{type(data).__name__}.batch returned x0 {tuple(x0.shape)} for stage {si} bucket "
            f"{bucket}; expected {want} (the bucket's latent size)"
        )
    if (
        text.ndim != 4
        or text.shape[0] != n
        or tuple(text.shape[2:]) != (t.num_layers, t.encoder_dim)
    ):
        raise ValueError(
            f"{type(data).__name__}.batch returned text {tuple(text.shape)}; expected "
            f"[{n}, L, {t.num_layers}, {t.encoder_dim}]"
        )
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(text.shape[:2]):
        raise ValueError(
            f"{type(data).__name__}.batch returned mask {tuple(mask.shape)} {mask.dtype}; "
            f"expected bool {tuple(text.shape[:2])}"
        )
    return x0, text, mask


def _resume_step(root: Path | None, cfg: TrainConfig) -> tuple[Path | None, int]:
    if root is None or not cfg.resume or (last := latest_checkpoint(root)) is None:
        return None, 0
    return last, int(json.loads((last / STATE_NAME).read_text(encoding="utf-8"))["step"])


def train(
    cfg: TrainConfig,
    *,
    dataset: PretrainDataset | None = None,
    loss_hook: LossHook | None = None,
) -> TrainResult:
    """Pretrain the DiT on bucketed data (synthetic by default); run it under torchrun for FSDP2.

    Per step: pick the stage and its global batch (`BucketBatchSampler.batch_at`, one bucket
    per batch), read this rank's share from the dataset, draw timesteps (shifted logit-normal
    at the stage's training shift), noise and caption drops from generators keyed by (seed,
    step, sample), compute the rectified-flow loss, backward, clip, and let the `SpikeGuard`
    skip the update when the loss or gradient norm is non-finite or spikes. The WSD schedule
    advances every step, skipped or not. All randomness derives from (seed, step, rank/sample),
    and checkpoints hold model, optimizer, scheduler and guard state, so a resumed run
    reproduces the uninterrupted one.

    With `cfg.float8`, linears are converted before sharding (per stage: a recipe change at a
    stage boundary rebuilds the model and carries its state over). With `cfg.pma_every`, rank
    0 writes a full safetensors snapshot every `pma_every` steps of the WSD stable phase to
    `checkpoint_dir/pma/step-XXXXXX`, and when the last stage ends the newest `pma_keep` are
    averaged (streamed) into `checkpoint_dir/pma/average`: PMA in place of an EMA.

    Args:
        cfg: the run.
        dataset: a `PretrainDataset` built for `cfg.stages` (e.g. `InMemoryDataset`); None
            uses `SyntheticData(cfg.model, cfg.stages, cfg.data, seed=cfg.seed)`.
        loss_hook: optional `hook(step, loss) -> loss` (tests inject NaNs and spikes with it).

    Returns:
        A `TrainResult`; records hold step (1-based), loss, grad_norm, lr, skipped, stage,
        bucket, image_tokens, float8 (the recipe in effect, None when not converted), pma
        (a snapshot was taken after this step) and seconds.

    References:
        Esser et al. 2024 (SD3), §3.1 and §5.3.2; Li et al. 2025 (PMA, arXiv 2505.12082);
        Krea 2 report, Pretraining.
    """
    device = None if cfg.device == "auto" else cfg.device
    info = init_distributed(device=device)
    data = (
        dataset
        if dataset is not None
        else SyntheticData(cfg.model, cfg.stages, cfg.data, seed=cfg.seed)
    )
    _check_dataset(data, cfg)
    ckpt_root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    last, start = _resume_step(ckpt_root, cfg)
    end = cfg.total_steps if cfg.stop_after is None else min(cfg.stop_after, cfg.total_steps)
    warned: set[str] = set()
    first_stage = stage_at(cfg.stages, min(start, cfg.total_steps - 1))[0]
    built = _build(cfg, info, cfg.float8_at(first_stage), warned)
    reports = {first_stage: built.report} if built.report is not None else {}
    guard = SpikeGuard(cfg.guard)
    if last is not None:
        state = load_training_state(
            last, model=built.model, optimizers=built.optimizers, schedulers=built.schedulers
        )
        guard.load_state_dict(state["trainer"]["guard"])
        if info.is_main:
            log.info("resumed from %s at step %d", last, start)

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
    warmup, stable, _ = cfg.wsd_phases
    pma_steps = (
        set(pma_snapshot_steps(warmup=warmup, stable=stable, every=cfg.pma_every))
        if cfg.pma_every
        else set()
    )
    bf16 = cfg.mixed_precision == "bf16"
    compute = torch.bfloat16 if bf16 and info.distributed else torch.float32
    autocast = bf16 and not info.distributed  # single process: no FSDP policy, use autocast
    records: list[dict[str, Any]] = []
    built.model.train()
    for step in range(start, end):
        tic = time.perf_counter()
        si, offset = stage_at(cfg.stages, step)
        stage = cfg.stages[si]
        if cfg.float8_at(si) != built.recipe:
            built = _rebuild(cfg, info, built, cfg.float8_at(si), warned)
            built.model.train()
            if built.report is not None:
                reports[si] = built.report
        model, optimizers, schedulers = built.model, built.optimizers, built.schedulers
        bucket, indices = samplers[si].batch_at(offset)
        torch.manual_seed(derive_seed(cfg.seed, 3, step, info.rank))  # any implicit RNG use
        x0, text, mask = _check_batch(
            data.batch(indices, stage=si, bucket=bucket, step=step),
            data,
            cfg,
            si,
            bucket,
            len(indices),
        )
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
        done = step + 1
        rec = {
            "step": done,
            "loss": loss_value,
            "grad_norm": norm_value,
            "lr": lr,
            "skipped": skipped,
            "stage": stage.resolution,
            "bucket": list(data.tables[si].buckets[bucket]),
            "image_tokens": data.tables[si].num_tokens(bucket),
            "float8": built.recipe if built.report is not None and built.report.converted else None,
            "pma": done in pma_steps,
            "seconds": time.perf_counter() - tic,
        }
        records.append(rec)
        if info.is_main and cfg.metrics_path:
            with open(cfg.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        if ckpt_root is not None and done in pma_steps:
            # Before the resumable checkpoint of the same step: a crash between the two resumes
            # from an earlier step and writes this snapshot again.
            export_pma_snapshot(
                ckpt_root, model, cfg.model, step=done, keep=cfg.pma_keep, every=cfg.pma_every
            )
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
    final = pma = None
    finished = ckpt_root is not None and end == cfg.total_steps and start < end
    if finished and cfg.export_final:
        final = export_checkpoint(ckpt_root / "final", built.model, cfg.model, step=end)
    if finished and cfg.pma_every:
        pma = average_pma_snapshots(
            ckpt_root,
            cfg.model,
            keep=cfg.pma_keep,
            every=cfg.pma_every,
            window=pma_window(warmup=warmup, stable=stable),
            weighting=cfg.pma_weighting,
            ema_decay=cfg.pma_ema_decay,
            step=end,
        )
    return TrainResult(
        records=records,
        model=built.model,
        start_step=start,
        end_step=end,
        checkpoint=final,
        info=info,
        pma_checkpoint=pma,
        float8_reports=reports,
    )
