"""Timestep conditioning: sinusoidal features, AdaLN modulation (per-block MLP or shared +
per-block bias), in-context timestep tokens."""

from k2_dit.conditioning._conditioning import TimestepConditioning
from k2_dit.conditioning._modulation import (
    ROWS,
    Modulation,
    SharedModulation,
    TimestepSignal,
    modulate,
)
from k2_dit.conditioning._timestep import TIME_SCALE, TimestepEmbedder, timestep_embedding
from k2_dit.conditioning._tokens import TimestepTokens

__all__ = [
    "ROWS",
    "TIME_SCALE",
    "Modulation",
    "SharedModulation",
    "TimestepConditioning",
    "TimestepEmbedder",
    "TimestepSignal",
    "TimestepTokens",
    "modulate",
    "timestep_embedding",
]
