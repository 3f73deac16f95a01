"""`k2 curate`: a small curation of the synthetic world with injected faults, fed to pretraining.

The clean training scenes are rendered to JPEG WebDataset shards (img2dataset layout, scene
JSON sidecar) with faults at random slots: near-duplicates, flat-colour borders, pure noise
and corrupt files (`FAULT_VARIANTS`). The shards go through k2-data's CPU tier on a local
process pool, md5 + phash + colorhash dedup and hierarchical k-means with balanced sampling;
`run_curate` returns the kept scenes (`CurateResult.scenes`), which `k2 pretrain` and
`k2 demo` train on, and scores the catching against the injected ground truth.
See docs/k2-data-pipeline.md ("The `k2 curate` recipe stage").

The configs live in `k2_recipes.presets`; the stages import lazily, so the per-shard workers
(which import `k2_recipes.curate._shards`) never import torch.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "CURATE_PRESETS": "k2_recipes.presets",
    "ClusterSettings": "k2_recipes.presets",
    "CurateConfig": "k2_recipes.presets",
    "FaultCounts": "k2_recipes.presets",
    "WORLD_THRESHOLDS": "k2_recipes.presets",
    "EXPECTED_REASONS": "k2_recipes.curate._faults",
    "FAULT_KINDS": "k2_recipes.curate._faults",
    "FAULT_VARIANTS": "k2_recipes.curate._faults",
    "plan_layout": "k2_recipes.curate._faults",
    "CurateResult": "k2_recipes.curate._stage",
    "kept_scenes": "k2_recipes.curate._stage",
    "load_curated_scenes": "k2_recipes.curate._stage",
    "run_curate": "k2_recipes.curate._stage",
    "curate_report_section": "k2_recipes.curate._report",
    "write_curate_page": "k2_recipes.curate._report",
    "print_curate_summary": "k2_recipes.curate._command",
    "run_curate_command": "k2_recipes.curate._command",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'k2_recipes.curate' has no attribute {name!r}")


__all__ = sorted(_LAZY)
