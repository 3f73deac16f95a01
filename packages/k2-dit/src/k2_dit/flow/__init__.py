"""Rectified-flow objective, timestep sampling with resolution shift, and the Euler sampler.

Convention: t = 1 is noise, t = 0 is data; x_t = (1 - t)·x0 + t·ε; the model predicts
v = ε - x0; sampling integrates dx/dt = v from t = 1 to t = 0. Training times and the
sampling grid are shifted by the same `shift_timesteps`.
"""

from k2_dit.flow._objective import interpolate, rectified_flow_loss, velocity_target
from k2_dit.flow._sampler import (
    StepCallback,
    VelocityFn,
    euler_sample,
    sample_trajectory,
    sampling_timesteps,
)
from k2_dit.flow._shift import ShiftKind, ShiftSchedule, flux_shift, sd3_shift
from k2_dit.flow._timesteps import (
    logit_normal_timesteps,
    shift_timesteps,
    shifted_logit_normal_timesteps,
)

__all__ = [
    "ShiftKind",
    "ShiftSchedule",
    "StepCallback",
    "VelocityFn",
    "euler_sample",
    "flux_shift",
    "interpolate",
    "logit_normal_timesteps",
    "rectified_flow_loss",
    "sample_trajectory",
    "sampling_timesteps",
    "sd3_shift",
    "shift_timesteps",
    "shifted_logit_normal_timesteps",
    "velocity_target",
]
