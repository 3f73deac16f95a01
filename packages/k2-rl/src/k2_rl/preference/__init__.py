"""Preference optimisation for flow models: Flow-DPO, DPOP, RPO, SDPO, STPO and pair building.

Losses take four per-sample flow-matching errors (policy and reference, on winner and
loser, at the same t and noise) and return a `PreferenceOutput` with a per-sample loss
and detached diagnostics. Pairs are built from per-candidate rewards of several judges
whose temperatures and thresholds are calibrated on human-labelled pairs.
"""

from k2_rl.preference._beta import BetaSchedule, flow_elbo_weight, timestep_beta
from k2_rl.preference._calibrate import (
    JudgeCalibration,
    calibrate_judges,
    fit_bt_temperature,
    fit_margin_threshold,
    read_preference_jsonl,
)
from k2_rl.preference._dpo import dpop_loss, flow_dpo_loss, rpo_loss
from k2_rl.preference._fm_errors import flow_matching_errors
from k2_rl.preference._loss import LOSSES, LossType, preference_loss
from k2_rl.preference._output import PreferenceOutput
from k2_rl.preference._pairs import (
    PAIR_KINDS,
    SOURCES,
    PreferencePairs,
    build_preference_pairs,
)
from k2_rl.preference._sdpo import scale_gradient, sdpo_loser_scale, sdpo_loss
from k2_rl.preference._stpo import stpo_a_loss, stpo_c_loss

__all__ = [
    "LOSSES",
    "PAIR_KINDS",
    "SOURCES",
    "BetaSchedule",
    "JudgeCalibration",
    "LossType",
    "PreferenceOutput",
    "PreferencePairs",
    "build_preference_pairs",
    "calibrate_judges",
    "dpop_loss",
    "fit_bt_temperature",
    "fit_margin_threshold",
    "flow_dpo_loss",
    "flow_elbo_weight",
    "flow_matching_errors",
    "preference_loss",
    "read_preference_jsonl",
    "rpo_loss",
    "scale_gradient",
    "sdpo_loser_scale",
    "sdpo_loss",
    "stpo_a_loss",
    "stpo_c_loss",
    "timestep_beta",
]
