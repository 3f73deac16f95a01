"""iREPA: align an early DiT block's image tokens with a frozen encoder's patch tokens.

Per training step while `RepaSchedule.active(step)`:

    with capture_block_output(model, block_index) as cap:
        v = model(x_t, t, text, mask)
    tokens, tgrid = teacher(images, grid=cap.grid)           # or load_teacher_features(...)
    proj = projector(cap.tokens, grid=cap.grid)
    loss = flow_loss.mean() + schedule.weight(step) * repa_loss(
        proj, tokens, grid=cap.grid, teacher_grid=tgrid).mean()

The projector's parameters go to the optimizer next to the DiT's and are dropped (never
saved into the DiT checkpoint) when the alignment ends.
"""

from k2_dit.repa._cache import cache_teacher_features, load_teacher_features
from k2_dit.repa._capture import BlockCapture, capture_block_output
from k2_dit.repa._loss import (
    negative_cosine_similarity,
    repa_loss,
    resample_tokens,
    spatial_zscore,
)
from k2_dit.repa._projector import (
    ConvProjector,
    MLPProjector,
    ProjectorConfig,
    ProjectorKind,
    make_projector,
)
from k2_dit.repa._schedule import RepaSchedule
from k2_dit.repa._teacher import (
    PatchTeacher,
    TeacherFamily,
    load_teacher,
    load_timm_teacher,
)

__all__ = [
    "BlockCapture",
    "ConvProjector",
    "MLPProjector",
    "PatchTeacher",
    "ProjectorConfig",
    "ProjectorKind",
    "RepaSchedule",
    "TeacherFamily",
    "cache_teacher_features",
    "capture_block_output",
    "load_teacher",
    "load_teacher_features",
    "load_timm_teacher",
    "make_projector",
    "negative_cosine_similarity",
    "repa_loss",
    "resample_tokens",
    "spatial_zscore",
]
