"""Post-training recipe: SFT + merging, on-policy preference pairs, STPO vs Flow-DPO, CFG-free GRPO.

Entry points: `run_posttrain(cfg, run, model=..., encoder=..., pretrain_cfg=...)` after
pretraining, `load_pretrained(run_dir)` to start from a pretraining run directory,
`posttrain_report_sections(result)` for report.html, and `run_posttrain_command` behind
`k2 posttrain`. See docs/recipe-posttrain.md.

The configs import eagerly and the stages lazily, so `k2_recipes.presets` can import the
post-training presets without an import cycle (the stages import `k2_recipes.presets`).
"""

from importlib import import_module
from typing import Any

from k2_recipes.posttrain.presets import (
    DOMAINS,
    POSTTRAIN_PRESETS,
    GRPOConfig,
    PosttrainConfig,
    PreferenceConfig,
    SFTConfig,
)

_LAZY = {
    "PosttrainResult": "pipeline",
    "load_pretrained": "pipeline",
    "run_posttrain": "pipeline",
    "POSTTRAIN_COMMAND_PRESETS": "command",
    "PosttrainCommand": "command",
    "load_pretrain_config": "command",
    "run_posttrain_command": "command",
    "posttrain_report_sections": "report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"k2_recipes.posttrain.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'k2_recipes.posttrain' has no attribute {name!r}")


__all__ = [
    "DOMAINS",
    "POSTTRAIN_COMMAND_PRESETS",
    "POSTTRAIN_PRESETS",
    "GRPOConfig",
    "PosttrainCommand",
    "PosttrainConfig",
    "PosttrainResult",
    "PreferenceConfig",
    "SFTConfig",
    "load_pretrain_config",
    "load_pretrained",
    "posttrain_report_sections",
    "run_posttrain",
    "run_posttrain_command",
]
