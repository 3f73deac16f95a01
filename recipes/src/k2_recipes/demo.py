"""`k2 demo`: every stage available so far, in one run directory, on the embedded synthetic world.

The pipeline: curate the world (render to JPEG shards with injected faults, CPU filters, dedup,
clusters) -> pretrain on the kept scenes in two resolution stages -> sample held-out prompts
-> SFT on two domains and merge -> preference pairs scored by the rubric reward -> STPO (and
plain Flow-DPO for comparison) -> CFG-free GRPO -> report. Later stages (distillation) append to
the same run directory and report.
"""

from __future__ import annotations

from dataclasses import replace

from k2_recipes.presets import DemoConfig
from k2_recipes.pretrain import PretrainResult, finish, run_pretrain
from k2_recipes.rundir import RunDir


def run_demo(cfg: DemoConfig, *, preset: str) -> PretrainResult:
    run = RunDir(cfg.run_dir or cfg.pretrain.run_dir or f"runs/demo-{preset}")
    pretrain = replace(cfg.pretrain, run_dir=str(run.path))
    # Curate the pretraining world itself, so the kept scenes are the ones it would draw.
    curate = replace(cfg.curate, world=pretrain.world, run_dir=str(run.path))
    resolved = replace(cfg, pretrain=pretrain, curate=curate)
    run.write_config("config", resolved, preset=preset, command="demo")
    try:
        curated = None
        if cfg.run_curate:
            from k2_recipes.curate import run_curate

            curated = run_curate(curate, run)
        result = run_pretrain(pretrain, run, scenes=None if curated is None else curated.scenes)
        result.curate = curated
        if cfg.run_posttrain:
            from k2_recipes.posttrain import run_posttrain

            result.posttrain = run_posttrain(
                cfg.posttrain,
                run,
                model=result.model,
                encoder=result.encoder,
                pretrain_cfg=pretrain,
            )
        finish(result, run, pretrain, title=f"k2 demo ({preset})")
    finally:
        run.close()
    return result
