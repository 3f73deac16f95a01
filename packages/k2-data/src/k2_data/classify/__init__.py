"""Small classifiers on image embeddings, trained from VLM pseudo-labels (Krea 2 report, Data).

The loop: `pseudo_label` asks a VLM (`VLMGenerator`, or any callable) a `LabelTask` on a
sample and parses the replies -> `train_filter` fits a `LinearProbe` on the sample's
embeddings and `calibrate_threshold` picks the threshold reaching a target precision on a
held-out split -> `apply_filter` scores every embedding in batches. `AI_GENERATED` and
`FLAT_BORDER` are named prompt presets (`LABEL_TASKS`). See docs/k2-data-models.md.
"""

from k2_data.classify._calibrate import Calibration, calibrate_threshold, wilson_lower_bound
from k2_data.classify._loop import (
    EmbeddingFilter,
    VLMFn,
    apply_filter,
    pseudo_label,
    stratified_split,
    train_filter,
)
from k2_data.classify._probe import LinearProbe, fit_linear_probe
from k2_data.classify._tasks import AI_GENERATED, FLAT_BORDER, LABEL_TASKS, LabelTask, parse_label
from k2_data.classify._vlm import VLMGenerator, check_checkpoint, decode_new_tokens

__all__ = [
    "AI_GENERATED",
    "FLAT_BORDER",
    "LABEL_TASKS",
    "Calibration",
    "EmbeddingFilter",
    "LabelTask",
    "LinearProbe",
    "VLMFn",
    "VLMGenerator",
    "apply_filter",
    "calibrate_threshold",
    "check_checkpoint",
    "decode_new_tokens",
    "fit_linear_probe",
    "parse_label",
    "pseudo_label",
    "stratified_split",
    "train_filter",
    "wilson_lower_bound",
]
