"""`k2 pretrain`: progressive-resolution rectified-flow pretraining of the DiT on the synthetic world."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from k2_data.synthetic import Scene
from k2_dit.flow import interpolate, rectified_flow_loss, shifted_logit_normal_timesteps
from k2_dit.model import DiT, flops_per_sample, parameter_table
from k2_dit.train import build_optimizers, save_checkpoint, wsd_schedule
from k2_recipes.evaluate import EvalResult, image_grid, sample_images, score_images
from k2_recipes.presets import PretrainConfig, StageConfig
from k2_recipes.progress import progress
from k2_recipes.report import write_report
from k2_recipes.rundir import RunDir
from k2_recipes.world import (
    VARIANTS,
    TrainingSet,
    build_training_set,
    heldout_scenes,
    scene_prompts,
)


@dataclass
class PretrainResult:
    model: DiT
    encoder: Any
    train_seconds: float
    total_seconds: float
    evals: dict[str, EvalResult] = field(default_factory=dict)
    param_rows: list[dict[str, Any]] = field(default_factory=list)
    flops: dict[str, float] = field(default_factory=dict)
    posttrain: Any = None
    """`k2_recipes.posttrain.PosttrainResult` when the demo ran the post-training stages."""
    curate: Any = None
    """`k2_recipes.curate.CurateResult` when the demo curated the training scenes first."""


def _batch(
    data: TrainingSet,
    resolution: int,
    batch_size: int,
    cfg: PretrainConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = len(data)
    idx = torch.randint(n, (batch_size,), generator=gen)
    mix = torch.tensor(cfg.world.caption_mix, dtype=torch.float32)
    # One caption variant per batch, not per sample: padding is trimmed to the longest prompt
    # in the batch, so a single long caption would otherwise set every sample's length.
    variant = torch.multinomial(mix, 1, generator=gen).expand(batch_size)
    x0 = data.images[resolution][idx].float().div_(127.5).sub_(1.0)
    hidden = data.hidden[idx, variant].float()
    mask = data.mask[idx, variant].clone()
    drop = torch.rand(batch_size, generator=gen) < cfg.cfg_dropout
    mask[drop] = False
    hidden[drop] = 0.0
    if cfg.compile:
        # One text length per caption variant (its longest prompt): fixed shapes, so the
        # compiled model is built once per resolution and variant instead of per batch.
        which = int(variant[0])
        length = int(data.mask[:, which].any(0).nonzero().max().item()) + 1
    else:
        # Trim padding shared by the whole batch: text dominates the tiny model's sequence.
        length = int(mask.any(0).nonzero().max().item()) + 1 if mask.any() else 1
    return x0, hidden[:, :length], mask[:, :length]


def train_stage(
    model: DiT,
    data: TrainingSet,
    stage: StageConfig,
    cfg: PretrainConfig,
    run: RunDir,
    *,
    name: str,
    gen: torch.Generator,
    first_step: int,
    forward: Callable[..., torch.Tensor] | None = None,
) -> int:
    """Train one resolution stage with AdamW (or Muon + AdamW) and a warmup-stable-decay schedule.

    `forward` replaces `model` in the training step (e.g. `torch.compile(model)`); the
    parameters, optimiser and checkpoints are `model`'s.
    """
    forward = forward if forward is not None else model
    device = torch.device(cfg.device)
    # Muon: BatchedMuon (torch.optim.Muon's rule, one Newton-Schulz per matrix shape).
    opts = build_optimizers(
        model,
        optimizer=cfg.scale.optimizer,
        lr=stage.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        batched=True,
    )
    scheds = [
        wsd_schedule(
            opt,
            # Short stages (smoke runs) keep a warmup no longer than half the stage.
            warmup_steps=min(stage.warmup_steps, stage.steps // 2),
            total_steps=stage.steps,
            decay_fraction=stage.decay_fraction,
        )
        for opt in opts
    ]
    model.train()
    step = first_step
    smooth = None
    bar = progress(range(stage.steps), desc=f"{name} {stage.resolution}px", enable=cfg.progress)
    for i in bar:
        x0, hidden, mask = _batch(data, stage.resolution, stage.batch_size, cfg, gen)
        x0, hidden, mask = x0.to(device), hidden.to(device), mask.to(device)
        t = shifted_logit_normal_timesteps(
            stage.batch_size, shift=stage.shift, std=stage.timestep_std, generator=gen
        )
        noise = torch.randn(x0.shape, generator=gen)
        t, noise = t.to(device), noise.to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
            pred = forward(interpolate(x0, noise, t), t, hidden, mask)
        loss = rectified_flow_loss(pred.float(), x0, noise).mean()
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt, sched in zip(opts, scheds, strict=True):
            opt.step()
            sched.step()
        step += 1
        if i % 10 == 0 or i == stage.steps - 1:
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{name}: loss became {value} at step {step}; lower the LR "
                    f"(--pretrain.{name}.lr) or the gradient clip"
                )
            smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
            run.log(
                stage=name,
                step=step,
                resolution=stage.resolution,
                loss=value,
                loss_smooth=smooth,
                grad_norm=float(grad_norm),
                lr=scheds[0].get_last_lr()[0],
            )
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{smooth:.4f}")
    return step


def evaluate_model(
    model: DiT, encoder, cfg: PretrainConfig, prompts: list[str], *, seed: int
) -> EvalResult:
    images = sample_images(
        model,
        encoder,
        prompts,
        cfg.eval,
        max_tokens=cfg.text_encoder.max_tokens,
        in_channels=cfg.model.in_channels,
        seed=seed,
        device=cfg.device,
    )
    return score_images(images, prompts)


def _train_simple(
    model: DiT, data: TrainingSet, cfg: PretrainConfig, run: RunDir, gen: torch.Generator
) -> None:
    """The single-process loop: each stage with its own AdamW + WSD, a checkpoint after each."""
    step = 0
    forward = torch.compile(model) if cfg.compile else None
    for name, stage in (("low_res", cfg.low_res), ("high_res", cfg.high_res)):
        if stage.steps == 0:
            continue
        step = train_stage(
            model, data, stage, cfg, run, name=name, gen=gen, first_step=step, forward=forward
        )
        save_checkpoint(
            run.path / "checkpoints" / f"pretrain-{stage.resolution}px",
            model,
            cfg.model,
            step=step,
        )


def run_pretrain(
    cfg: PretrainConfig, run: RunDir, *, scenes: Sequence[Scene] | None = None
) -> PretrainResult:
    """Render the world, encode captions once, train each stage, evaluate on held-out prompts.

    `scenes` (the curated set from `k2_recipes.curate.run_curate`) replaces the
    `cfg.world.train_scenes` scenes drawn from the world.
    """
    t_start = time.time()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data, encoder = build_training_set(cfg, show=cfg.progress, scenes=scenes)
    run.log(stage="data", scenes=len(data), text_tokens=int(data.mask.shape[-1]))
    # Later stages (and anyone sampling from the checkpoints) need the exact frozen encoder.
    encoder.save_pretrained(run.path / "text_encoder")

    model = DiT(cfg.model).to(cfg.device)
    which = VARIANTS.index(cfg.eval.caption)
    prompts = [scene_prompts(s)[which] for s in heldout_scenes(cfg, cfg.eval.num_prompts)]
    evals = {"untrained": evaluate_model(model, encoder, cfg, prompts, seed=cfg.seed + 1)}
    run.log(stage="eval", checkpoint="untrained", **evals["untrained"].summary())

    t_train = time.time()
    if cfg.scale.trainer == "fsdp2":
        from k2_recipes.scale import train_fsdp2

        scaled = train_fsdp2(cfg, data, run)
        if scaled.model is None:  # another torchrun rank: rank 0 evaluates and reports
            raise SystemExit(0)
        model = scaled.model
    else:
        _train_simple(model, data, cfg, run, gen)
    train_seconds = time.time() - t_train

    evals["pretrained"] = evaluate_model(model, encoder, cfg, prompts, seed=cfg.seed + 1)
    run.log(stage="eval", checkpoint="pretrained", **evals["pretrained"].summary())
    for key, result in evals.items():
        image_grid(result.images, side=cfg.eval.grid_size).save(run.path / "images" / f"{key}.png")

    n_img = (cfg.eval.resolution // cfg.model.patch_size) ** 2
    n_txt = int(data.mask.sum(-1).float().mean().item())
    flops = {
        "image_tokens": n_img,
        "text_tokens": n_txt,
        "train_flops_per_sample": flops_per_sample(
            cfg.model, image_tokens=n_img, text_tokens=n_txt, training=True
        ),
        "forward_flops_per_sample": flops_per_sample(
            cfg.model, image_tokens=n_img, text_tokens=n_txt, training=False
        ),
    }
    return PretrainResult(
        model=model,
        encoder=encoder,
        train_seconds=train_seconds,
        total_seconds=time.time() - t_start,
        evals=evals,
        param_rows=parameter_table(cfg.model),
        flops=flops,
    )


def finish(result: PretrainResult, run: RunDir, cfg: PretrainConfig, *, title: str) -> Path:
    summary = {
        "train_seconds": round(result.train_seconds, 1),
        "total_seconds": round(result.total_seconds, 1),
        "evals": {k: v.summary() for k, v in result.evals.items()},
        "flops": result.flops,
        "caption_variants": VARIANTS,
    }
    if result.posttrain is not None:
        summary["posttrain"] = result.posttrain.summary()
    if result.curate is not None:
        summary["curate"] = result.curate.summary()
    run.write_json("summary.json", summary)
    report = write_report(run, cfg, result, title=title)
    print(f"\n{title}: run directory {run.path}")
    if result.curate is not None:
        from k2_recipes.curate import print_curate_summary

        print_curate_summary(result.curate)
    print(f"  pretraining {result.train_seconds:.0f} s (whole stage {result.total_seconds:.0f} s)")
    for key, ev in result.evals.items():
        print(
            f"  {key:>10}: verifier score {ev.score:.3f}, fully correct {ev.fully_correct:.1%} "
            f"on {ev.num_prompts} held-out prompts"
        )
    if result.posttrain is not None:
        for row in result.posttrain.stage_rows():
            print(
                "  "
                + ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                )
            )
    print(f"  report: {report}")
    return report


def run_pretrain_command(cfg: PretrainConfig, *, preset: str) -> PretrainResult:
    run = RunDir(cfg.run_dir or f"runs/pretrain-{preset}")
    run.write_config("config", cfg, preset=preset, command="pretrain")
    try:
        result = run_pretrain(cfg, run)
        finish(result, run, cfg, title=f"k2 pretrain ({preset})")
    finally:
        run.close()
    return result
