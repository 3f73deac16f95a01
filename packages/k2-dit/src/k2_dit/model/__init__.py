"""The Krea 2 DiT: patchify, streams, final layer; FLOPs and parameter accounting."""

from k2_dit.model._dit import DiT
from k2_dit.model._flops import (
    flops_per_sample,
    parameter_table,
    per_token_weights,
    timestep_modulation_share,
)
from k2_dit.model._patch import LearnedPosEmbed, patchify, sincos_2d, unpatchify

__all__ = [
    "DiT",
    "LearnedPosEmbed",
    "flops_per_sample",
    "parameter_table",
    "patchify",
    "per_token_weights",
    "sincos_2d",
    "timestep_modulation_share",
    "unpatchify",
]
