"""Flow-GRPO for rectified-flow models: SDE rollouts with log-probs, the clipped loss, a prompt pool.

Convention (as `k2_dit.flow`): t = 1 is noise, t = 0 is data, x_t = (1 - t)·x0 + t·ε,
v = ε - x0; sampling steps go from t to t_next < t.
"""

from k2_rl.grpo._advantages import group_advantages
from k2_rl.grpo._loss import GrpoLossOutput, KlForm, grpo_loss, velocity_kl
from k2_rl.grpo._prompt_pool import PromptPool, PromptPoolConfig, PromptStatus
from k2_rl.grpo._rollout import (
    Trajectory,
    TransitionLogProb,
    VelocityFn,
    check_on_policy_ratio,
    rollout_timesteps,
    sample_with_logprobs,
    transition_log_prob,
)
from k2_rl.grpo._sde import LogProbForm, SdeKind, sde_coefficients, sde_mean_std, sde_step
from k2_rl.grpo._window import random_sde_window, sliding_sde_window

__all__ = [
    "GrpoLossOutput",
    "KlForm",
    "LogProbForm",
    "PromptPool",
    "PromptPoolConfig",
    "PromptStatus",
    "SdeKind",
    "Trajectory",
    "TransitionLogProb",
    "VelocityFn",
    "check_on_policy_ratio",
    "group_advantages",
    "grpo_loss",
    "random_sde_window",
    "rollout_timesteps",
    "sample_with_logprobs",
    "sde_coefficients",
    "sde_mean_std",
    "sde_step",
    "sliding_sde_window",
    "transition_log_prob",
    "velocity_kl",
]
