"""SFT on curated domain subsets of the synthetic world, merged into one generalist checkpoint.

The report fine-tunes domain-specific SFT checkpoints on small curated sets and merges them
into a generalist one. Here a domain is a restriction of the pretraining world (single
objects, pairs of objects, one rendering style); its ground-truth renders are the curated
images, and the merge is k2_dit's weighted state-dict average, optionally extrapolated as
task arithmetic.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from k2_data.synthetic import sample_scenes
from k2_dit.train import average_state_dicts, save_checkpoint, task_arithmetic
from k2_recipes.posttrain.presets import SFTConfig
from k2_recipes.presets import PretrainConfig, StageConfig, WorldSettings
from k2_recipes.pretrain import train_stage
from k2_recipes.rundir import RunDir
from k2_recipes.world import TrainingSet, encode_prompts, render_images, scene_prompts, world_config

SFT_OFFSET = 2_000_000
"""First train-split scene index of the curated sets (far past pretraining's scenes)."""


@dataclass
class SFTResult:
    model: nn.Module
    """The merged generalist model."""
    domain_models: dict[str, nn.Module]
    checkpoints: dict[str, Path]
    """Checkpoint directory of every domain run and of the merge ("sft")."""


def domain_world(world: WorldSettings, domain: str) -> WorldSettings:
    """The pretraining world narrowed to one curated domain.

    Args:
        world: the pretraining world settings.
        domain: "one_object" (a single object), "two_objects" (exactly two objects) or
            "style=NAME" (one rendering style).

    Returns:
        The narrowed settings.
    """
    if domain == "one_object":
        return replace(world, min_objects=1, max_objects=1)
    if domain == "two_objects":
        if world.max_objects < 2:
            raise ValueError("domain 'two_objects' needs world.max_objects >= 2")
        return replace(world, min_objects=2, max_objects=2)
    if domain.startswith("style="):
        return replace(world, styles=(domain.split("=", 1)[1],))
    raise ValueError(f"unknown SFT domain {domain!r}; use one_object, two_objects or style=NAME")


def curated_set(
    pretrain: PretrainConfig, domain: str, n: int, encoder, *, resolution: int
) -> TrainingSet:
    """Render n scenes of a domain and encode their three captions with the frozen encoder."""
    world = domain_world(pretrain.world, domain)
    scenes = sample_scenes(n, seed=world.seed, config=world_config(world), start=SFT_OFFSET)
    prompts = [scene_prompts(s) for s in scenes]
    flat = [p for triple in prompts for p in triple]
    hidden, mask = encode_prompts(
        encoder, flat, max_length=pretrain.text_encoder.max_tokens, show=False
    )
    images = {resolution: render_images(scenes, resolution, show=False)}
    hidden = hidden.view(n, 3, *hidden.shape[1:])
    return TrainingSet(images=images, hidden=hidden, mask=mask.view(n, 3, -1), prompts=prompts)


def merge_domains(
    base: dict[str, Tensor],
    finetuned: list[dict[str, Tensor]],
    *,
    weights: list[float] | None,
    scale: float,
) -> dict[str, Tensor]:
    """θ = θ_base + λ·Σ_i w_i(θ_i - θ_base), w normalised; λ = 1 is the weighted average.

    λ = 1 goes through `k2_dit.train.average_state_dicts` (a model soup), any other λ through
    `k2_dit.train.task_arithmetic` with per-checkpoint scales λ·w_i.

    References:
        Wortsman et al. 2022, "Model soups", Eq. 1; Ilharco et al. 2023, "Editing Models
        with Task Arithmetic" (arXiv 2212.04089), Eq. 1 and §3; Krea 2 report, SFT (merging
        domain SFT checkpoints into a generalist one).
    """
    if scale == 1.0:
        return average_state_dicts(finetuned, weights)
    w = [1.0] * len(finetuned) if weights is None else [float(x) for x in weights]
    total = sum(w)
    if not total > 0:
        raise ValueError(f"merge weights {w} must have a positive sum")
    return task_arithmetic(base, finetuned, scales=[scale * x / total for x in w])


def run_sft(
    model: nn.Module,
    encoder,
    cfg: SFTConfig,
    pretrain: PretrainConfig,
    run: RunDir,
    *,
    seed: int,
    progress: bool,
) -> SFTResult:
    """One SFT run per domain from `model`'s weights, then the merge (saved under checkpoints/)."""
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    resolution = pretrain.eval.resolution
    stage = StageConfig(
        resolution=resolution,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        decay_fraction=cfg.decay_fraction,
        shift=cfg.shift,
    )
    train_cfg = replace(pretrain, cfg_dropout=cfg.cfg_dropout, progress=progress)
    domain_models, checkpoints = {}, {}
    for i, domain in enumerate(cfg.domains):
        data = curated_set(pretrain, domain, cfg.scenes_per_domain, encoder, resolution=resolution)
        run.log(stage="sft-data", domain=domain, scenes=len(data))
        policy = copy.deepcopy(model)
        gen = torch.Generator().manual_seed(seed + 100 + i)
        name = f"sft-{domain}"
        train_stage(policy, data, stage, train_cfg, run, name=name, gen=gen, first_step=0)
        policy.eval()
        checkpoints[name] = save_checkpoint(
            run.path / "checkpoints" / name, policy, pretrain.model, step=cfg.steps
        )
        domain_models[domain] = policy

    weights = None if cfg.merge_weights is None else list(cfg.merge_weights)
    merged_sd = merge_domains(
        base,
        [m.state_dict() for m in domain_models.values()],
        weights=weights,
        scale=cfg.task_scale,
    )
    merged = copy.deepcopy(model)
    merged.load_state_dict(merged_sd)
    merged.eval()
    checkpoints["sft"] = save_checkpoint(
        run.path / "checkpoints" / "sft",
        merged,
        pretrain.model,
        extra={"merged": list(cfg.domains), "weights": weights, "task_scale": cfg.task_scale},
    )
    run.log(stage="sft-merge", domains=list(cfg.domains), task_scale=cfg.task_scale)
    return SFTResult(model=merged, domain_models=domain_models, checkpoints=checkpoints)
