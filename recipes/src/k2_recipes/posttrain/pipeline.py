"""Post-training after pretraining: SFT + merge -> preference pairs -> DPO and STPO -> CFG-free GRPO.

Every stage is scored on the same held-out prompts with the same noise, CFG-free and with
CFG, by the world's deterministic verifier, so the stage-effect table compares checkpoints
directly. Checkpoints go to run.path/checkpoints/<stage>, metrics to metrics.jsonl.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from k2_data.synthetic import render
from k2_dit.model import DiT
from k2_dit.text import TextEncoder
from k2_dit.train import load_checkpoint
from k2_recipes.evaluate import EvalResult, image_grid
from k2_recipes.posttrain.common import (
    EVAL_MODES,
    PromptBank,
    evaluate,
    heldout_prompts,
    train_scenes,
)
from k2_recipes.posttrain.grpo import train_grpo
from k2_recipes.posttrain.preference import STAGE_NAMES, build_pairs, train_preference
from k2_recipes.posttrain.presets import PosttrainConfig
from k2_recipes.posttrain.sft import run_sft
from k2_recipes.presets import PretrainConfig
from k2_recipes.rundir import RunDir

_PAIR_OFFSET = 3_000_000  # train-split scene indices of the preference prompts
_POOL_OFFSET = 4_000_000  # ... and of the GRPO prompt pool


@dataclass
class PosttrainResult:
    """What post-training measured; `summary()` is JSON, `posttrain_report_sections` renders it."""

    evals: dict[str, dict[str, EvalResult]] = field(default_factory=dict)
    """checkpoint -> {"no_cfg", "cfg"} -> held-out verifier result, in stage order."""
    preference_curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    """stage ("dpo", "stpo") -> per-step batch means of loss, delta_w, delta_l, accuracy, margin."""
    pairs: dict[str, Any] = field(default_factory=dict)
    grpo_curve: list[dict[str, float]] = field(default_factory=list)
    pool_rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, Path] = field(default_factory=dict)
    model: nn.Module | None = None
    """The final (GRPO) model."""

    def score(self, checkpoint: str, mode: str = "no_cfg") -> float:
        return self.evals[checkpoint][mode].score

    def stage_rows(self) -> list[dict[str, Any]]:
        """One row per checkpoint: verifier score and fully-correct rate, without and with CFG."""
        rows = []
        for key, by_mode in self.evals.items():
            row: dict[str, Any] = {"checkpoint": key}
            for mode in EVAL_MODES:
                row[f"score ({mode})"] = by_mode[mode].score
                row[f"fully correct ({mode})"] = by_mode[mode].fully_correct
            rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        final = lambda c: {k: round(v, 6) for k, v in c[-1].items()} if c else {}  # noqa: E731
        return {
            "evals": {k: {m: e.summary() for m, e in v.items()} for k, v in self.evals.items()},
            "pairs": self.pairs,
            "preference_final": {k: final(v) for k, v in self.preference_curves.items()},
            "grpo_first": final(self.grpo_curve[:1]),
            "grpo_final": final(self.grpo_curve),
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "checkpoints": {k: str(v) for k, v in self.checkpoints.items()},
        }


def load_pretrained(run_dir: str | Path, *, device: str = "cpu") -> tuple[DiT, TextEncoder]:
    """The highest-resolution pretraining checkpoint and the frozen text encoder of a run dir."""
    root = Path(run_dir)
    found = sorted(
        (root / "checkpoints").glob("pretrain-*px"),
        key=lambda p: int(p.name.removeprefix("pretrain-").removesuffix("px")),
    )
    if not found or not (root / "text_encoder").is_dir():
        raise FileNotFoundError(
            f"{root} holds no checkpoints/pretrain-<res>px or text_encoder/; run "
            f"`k2 pretrain --run-dir {root}` first"
        )
    model, _, _ = load_checkpoint(found[-1], DiT, map_location=device)
    encoder = TextEncoder.from_pretrained(root / "text_encoder", dtype=torch.float32)
    return model.eval(), encoder


def run_posttrain(
    cfg: PosttrainConfig,
    run: RunDir,
    *,
    model: nn.Module,
    encoder: TextEncoder,
    pretrain_cfg: PretrainConfig,
) -> PosttrainResult:
    """Run every post-training stage from the pretrained DiT (whose weights are left unchanged).

    Args:
        cfg: the post-training config.
        run: the run directory (metrics, checkpoints/<stage>, images, prompt_pool.json).
        model: the pretrained DiT.
        encoder: the frozen text encoder it was trained with.
        pretrain_cfg: its pretraining config (world, text encoder, eval settings, device).

    Returns:
        The per-stage evaluations, DPO/STPO curves, GRPO curve and prompt-pool table.
    """
    t_all, cpu_all = time.time(), time.process_time()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    result = PosttrainResult()
    model = model.eval()
    heldout = heldout_prompts(pretrain_cfg, cfg.eval_prompts)

    def score(key: str, m: nn.Module) -> None:
        t0 = time.time()
        result.evals[key] = evaluate(
            m,
            encoder,
            heldout,
            pretrain_cfg,
            steps=cfg.eval_steps,
            guidance=cfg.eval_guidance,
            seed=cfg.seed + 1,
        )
        for mode, ev in result.evals[key].items():
            run.log(stage="posttrain-eval", checkpoint=key, mode=mode, **ev.summary())
            side = min(pretrain_cfg.eval.grid_size, int(len(heldout) ** 0.5))
            grid = image_grid(ev.images, side=side)
            grid.save(run.path / "images" / f"posttrain-{key}-{mode}.png")
        result.seconds["eval"] = result.seconds.get("eval", 0.0) + time.time() - t0

    score("pretrained", model)

    t0 = time.time()
    sft = run_sft(model, encoder, cfg.sft, pretrain_cfg, run, seed=cfg.seed, progress=cfg.progress)
    result.seconds["sft"] = time.time() - t0
    result.checkpoints.update(sft.checkpoints)
    for domain, m in sft.domain_models.items():
        score(f"sft-{domain}", m)
    score("sft", sft.model)

    t0 = time.time()
    pc = cfg.preference
    max_tokens, device = pretrain_cfg.text_encoder.max_tokens, pretrain_cfg.device
    scenes, pair_prompts = train_scenes(pretrain_cfg, pc.num_prompts, offset=_PAIR_OFFSET)
    bank = PromptBank(encoder, pair_prompts, max_tokens=max_tokens, device=device)
    curated = None
    if pc.curated:
        curated = np.stack([render(s, pretrain_cfg.eval.resolution) for s in scenes])
    pairs = build_pairs(sft.model, bank, pc, pretrain_cfg, curated=curated, seed=cfg.seed + 2)
    result.pairs = pairs.summary()
    run.log(stage="preference-pairs", **result.pairs)
    result.seconds["pairs"] = time.time() - t0
    preference_models = {}
    for loss_type in pc.losses:
        t0 = time.time()
        name = STAGE_NAMES.get(loss_type, loss_type)
        pref = train_preference(
            sft.model, pairs, bank, pc, pretrain_cfg, run,
            loss_type=loss_type, seed=cfg.seed + 3, progress=cfg.progress,
        )  # fmt: skip
        result.seconds[name] = time.time() - t0
        result.preference_curves[name] = pref.curve
        result.checkpoints[name] = run.path / "checkpoints" / name
        preference_models[name] = pref.model
        score(name, pref.model)

    t0 = time.time()
    gc = cfg.grpo
    _, pool_prompts = train_scenes(pretrain_cfg, gc.pool_prompts, offset=_POOL_OFFSET)
    pool_bank = PromptBank(encoder, pool_prompts, max_tokens=max_tokens, device=device)
    grpo = train_grpo(
        preference_models["stpo"], pool_bank, gc, pretrain_cfg, run,
        seed=cfg.seed + 4, progress=cfg.progress,
    )  # fmt: skip
    result.seconds["grpo"] = time.time() - t0
    result.grpo_curve, result.pool_rows = grpo.curve, grpo.pool_rows
    result.checkpoints["grpo"] = run.path / "checkpoints" / "grpo"
    run.write_json("prompt_pool.json", grpo.pool_rows)
    score("grpo", grpo.model)
    result.model = grpo.model
    result.seconds["total"] = time.time() - t_all
    # CPU time of this process: on a shared machine it says more about cost than wall time.
    result.seconds["total_cpu"] = time.process_time() - cpu_all
    run.write_json("posttrain_summary.json", result.summary())
    return result
