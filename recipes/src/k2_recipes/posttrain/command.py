"""`k2 posttrain`: post-train the checkpoint of an earlier `k2 pretrain` / `k2 demo` run directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from k2_dit.train import config_from_dict
from k2_recipes.posttrain.pipeline import PosttrainResult, load_pretrained, run_posttrain
from k2_recipes.posttrain.presets import POSTTRAIN_PRESETS, PosttrainConfig
from k2_recipes.posttrain.report import posttrain_report_sections
from k2_recipes.presets import PretrainConfig
from k2_recipes.rundir import RunDir

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}.grid{display:flex;gap:2em;flex-wrap:wrap}.muted{color:#777}"""


@dataclass(frozen=True, kw_only=True)
class PosttrainCommand:
    """`k2 posttrain`: SFT + merge -> preference pairs -> DPO/STPO -> CFG-free GRPO."""

    posttrain: PosttrainConfig
    pretrain_run: str = "runs/pretrain-tiny"
    """Run directory of the pretraining (checkpoints/pretrain-<res>px, text_encoder/, config.json)."""
    run_dir: str | None = None
    """Where post-training writes; None: the pretraining run directory itself."""


def load_pretrain_config(run_dir: str | Path) -> PretrainConfig:
    """The PretrainConfig recorded in a `k2 pretrain` or `k2 demo` run directory's config.json."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; point pretrain_run at a k2 pretrain/demo run")
    config = json.loads(path.read_text(encoding="utf-8"))["config"]
    return config_from_dict(PretrainConfig, config.get("pretrain", config))


def run_posttrain_command(cfg: PosttrainCommand, *, preset: str) -> PosttrainResult:
    """Load the pretrained DiT and encoder, post-train, write posttrain.html and the summary."""
    pretrain_cfg = load_pretrain_config(cfg.pretrain_run)
    model, encoder = load_pretrained(cfg.pretrain_run, device=pretrain_cfg.device)
    pretrain_cfg = replace(pretrain_cfg, model=model.config)
    run = RunDir(cfg.run_dir or cfg.pretrain_run)
    run.write_config("posttrain_config", cfg, preset=preset, command="posttrain")
    try:
        result = run_posttrain(
            cfg.posttrain, run, model=model, encoder=encoder, pretrain_cfg=pretrain_cfg
        )
        body = posttrain_report_sections(result, images_dir=run.path / "images")
        out = run.path / "posttrain.html"
        out.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>k2 posttrain ({preset})"
            f"</title><style>{_CSS}</style></head><body><h1>k2 posttrain ({preset})</h1>"
            f"{body}</body></html>",
            encoding="utf-8",
        )
    finally:
        run.close()
    for row in result.stage_rows():
        print(
            f"  {row['checkpoint']:>16}: verifier score {row['score (no_cfg)']:.3f} CFG-free, "
            f"{row['score (cfg)']:.3f} with CFG"
        )
    print(f"  report: {out}")
    return result


POSTTRAIN_COMMAND_PRESETS: dict[str, PosttrainCommand] = {
    name: PosttrainCommand(posttrain=cfg, pretrain_run=f"runs/pretrain-{name}")
    for name, cfg in POSTTRAIN_PRESETS.items()
}
"""Presets of `k2 posttrain` (same names as `k2 pretrain`'s, reading its default run directory)."""
