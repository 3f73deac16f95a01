"""Post-training recipe: SFT + merging, on-policy preference pairs, STPO vs Flow-DPO, CFG-free GRPO.

Entry points: `run_posttrain(cfg, run, model=..., encoder=..., pretrain_cfg=...)` after
pretraining, `load_pretrained(run_dir)` to start from a pretraining run directory, and
`posttrain_report_sections(result)` for report.html; `run_posttrain_command` backs
`k2 posttrain`. See docs/recipe-posttrain.md.
"""

from k2_recipes.posttrain.command import (
    POSTTRAIN_COMMAND_PRESETS,
    PosttrainCommand,
    load_pretrain_config,
    run_posttrain_command,
)
from k2_recipes.posttrain.pipeline import PosttrainResult, load_pretrained, run_posttrain
from k2_recipes.posttrain.presets import (
    DOMAINS,
    POSTTRAIN_PRESETS,
    GRPOConfig,
    PosttrainConfig,
    PreferenceConfig,
    SFTConfig,
)
from k2_recipes.posttrain.report import posttrain_report_sections

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
