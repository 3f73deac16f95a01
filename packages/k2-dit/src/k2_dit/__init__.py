"""k2_dit: the Krea 2 diffusion transformer, its flow-matching objective and sampler.

The public API lives in the subpackages (`k2_dit.blocks`, `k2_dit.rope`, `k2_dit.conditioning`,
`k2_dit.model`, `k2_dit.text`, `k2_dit.latents`, `k2_dit.flow`, `k2_dit.train`); the most used
names are re-exported here.
"""

from importlib.metadata import version as _version

from k2_dit.config import (
    AttentionConfig,
    ConfigError,
    DiTConfig,
    RopeConfig,
    TextConfig,
)
from k2_dit.flow import (
    euler_sample,
    interpolate,
    rectified_flow_loss,
    shift_timesteps,
    shifted_logit_normal_timesteps,
)
from k2_dit.model import DiT, flops_per_sample, parameter_table
from k2_dit.train import load_checkpoint, save_checkpoint

__version__ = _version("k2-dit")
__all__ = [
    "AttentionConfig",
    "ConfigError",
    "DiT",
    "DiTConfig",
    "RopeConfig",
    "TextConfig",
    "__version__",
    "euler_sample",
    "flops_per_sample",
    "interpolate",
    "load_checkpoint",
    "parameter_table",
    "rectified_flow_loss",
    "save_checkpoint",
    "shift_timesteps",
    "shifted_logit_normal_timesteps",
]
