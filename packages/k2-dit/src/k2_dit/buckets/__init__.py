"""Progressive resolution: aspect buckets, bucketed batches, per-bucket RoPE, training shifts."""

from k2_dit.buckets._sampler import BucketBatchSampler
from k2_dit.buckets._stages import (
    DEFAULT_STAGES,
    INFERENCE_SHIFT,
    ResolutionStage,
    bucket_positions,
    stage_at,
    training_shift_schedule,
)
from k2_dit.buckets._table import BucketTable, aspect_buckets

__all__ = [
    "DEFAULT_STAGES",
    "INFERENCE_SHIFT",
    "BucketBatchSampler",
    "BucketTable",
    "ResolutionStage",
    "aspect_buckets",
    "bucket_positions",
    "stage_at",
    "training_shift_schedule",
]
