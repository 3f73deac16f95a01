"""Training utilities: checkpoints, config I/O, WSD schedule, PMA (streamed over checkpoint
files), model merging and task arithmetic, optimizer groups, batched Muon, float8 conversion."""

from k2_dit.train._checkpoint import load_checkpoint, save_checkpoint
from k2_dit.train._config_io import config_from_dict, config_to_dict
from k2_dit.train._float8 import (
    FLOAT8_SKIP_FQNS,
    Float8ModuleFilter,
    Float8Recipe,
    Float8Report,
    Float8SkippedWarning,
    convert_to_float8,
    float8_module_filter,
)
from k2_dit.train._merge import (
    PMA,
    MergeMethod,
    average_state_dicts,
    merge_weights,
    task_arithmetic,
)
from k2_dit.train._muon import NS_COEFFICIENTS, BatchedMuon, newton_schulz
from k2_dit.train._param_groups import (
    MuonParamGroups,
    ParamPredicate,
    adamw_param_groups,
    build_optimizers,
    muon_adamw_optimizers,
    muon_param_groups,
)
from k2_dit.train._schedule import DecayType, wsd_phase_steps, wsd_schedule
from k2_dit.train._stream_average import average_checkpoints, pma_checkpoints

__all__ = [
    "FLOAT8_SKIP_FQNS",
    "NS_COEFFICIENTS",
    "PMA",
    "BatchedMuon",
    "DecayType",
    "Float8ModuleFilter",
    "Float8Recipe",
    "Float8Report",
    "Float8SkippedWarning",
    "MergeMethod",
    "MuonParamGroups",
    "ParamPredicate",
    "adamw_param_groups",
    "average_checkpoints",
    "average_state_dicts",
    "build_optimizers",
    "config_from_dict",
    "config_to_dict",
    "convert_to_float8",
    "float8_module_filter",
    "load_checkpoint",
    "merge_weights",
    "muon_adamw_optimizers",
    "muon_param_groups",
    "newton_schulz",
    "pma_checkpoints",
    "save_checkpoint",
    "task_arithmetic",
    "wsd_phase_steps",
    "wsd_schedule",
]
