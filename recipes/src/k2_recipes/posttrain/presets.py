"""Post-training configs (SFT + merging, preference optimisation, CFG-free GRPO) and presets.

`tiny` runs every post-training stage on a 2-core CPU in a few minutes; `smoke` checks the
plumbing in seconds; `small` is sized for one GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DOMAINS = ("one_object", "two_objects")
"""Built-in SFT domains; `style=<name>` (a `k2_data.synthetic.STYLES` entry) is also accepted."""


def _positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{owner}.{name}={value!r} must be > 0")


@dataclass(frozen=True, kw_only=True)
class SFTConfig:
    """Domain SFT runs from the pretrained checkpoint, merged into one generalist checkpoint."""

    domains: tuple[str, ...] = DOMAINS
    """Curated subsets: "one_object", "two_objects" or "style=<name>"; one SFT run each."""
    scenes_per_domain: int = 512
    steps: int = 80
    batch_size: int = 16
    lr: float = 3e-4
    warmup_steps: int = 10
    decay_fraction: float = 0.3
    shift: float = 3.0
    cfg_dropout: float = 0.1
    merge_weights: tuple[float, ...] | None = None
    """Weight of each domain checkpoint in the merge (None: equal)."""
    task_scale: float = 1.0
    """λ of task arithmetic θ = θ_pre + λ·Σ_i w_i(θ_i - θ_pre); 1 is the weighted average."""

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError("SFTConfig.domains is empty; name at least one, e.g. ('one_object',)")
        for d in self.domains:
            if d not in DOMAINS and not d.startswith("style="):
                raise ValueError(f"unknown SFT domain {d!r}; use one of {DOMAINS} or 'style=NAME'")
        if self.merge_weights is not None and len(self.merge_weights) != len(self.domains):
            raise ValueError(
                f"SFTConfig.merge_weights has {len(self.merge_weights)} entries for "
                f"{len(self.domains)} domains; give one weight per domain or None"
            )
        _positive("SFTConfig", scenes=self.scenes_per_domain, batch_size=self.batch_size)
        _positive("SFTConfig", lr=self.lr, task_scale=self.task_scale, shift=self.shift)


@dataclass(frozen=True, kw_only=True)
class PreferenceConfig:
    """On-policy pairs scored by the rubric reward, then STPO (and Flow-DPO for comparison)."""

    num_prompts: int = 48
    group_size: int = 4
    """On-policy samples per prompt (the SFT model)."""
    sample_steps: int = 12
    guidance_scale: float = 4.0
    """CFG of the on-policy samples (1.0: CFG-free)."""
    weak_per_prompt: int = 2
    """Weaker-generator samples per prompt: fewer steps and no CFG."""
    weak_steps: int = 3
    curated: bool = True
    """Add each prompt's ground-truth render as a curated candidate ("vs_curated" pairs)."""
    margin_threshold: float = 0.1
    """δ: a pair is kept when the rubric reward margin exceeds it."""
    losses: tuple[str, ...] = ("dpo", "stpo_a")
    """Runs from the SFT checkpoint, each against a frozen reference copy; "stpo_a" feeds GRPO."""
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-4
    beta: float = 2000.0
    shift: float = 3.0
    """Shift of the logit-normal training timesteps."""

    def __post_init__(self) -> None:
        if "stpo_a" not in self.losses:
            raise ValueError(f"PreferenceConfig.losses={self.losses} must include 'stpo_a'")
        if self.group_size < 2:
            raise ValueError("PreferenceConfig.group_size must be >= 2 for within-group pairs")
        if self.margin_threshold < 0:
            raise ValueError("PreferenceConfig.margin_threshold must be >= 0")
        _positive("PreferenceConfig", num_prompts=self.num_prompts, steps=self.steps)
        _positive("PreferenceConfig", lr=self.lr, beta=self.beta, batch_size=self.batch_size)


@dataclass(frozen=True, kw_only=True)
class GRPOConfig:
    """CFG-free Flow-GRPO from the STPO checkpoint with a prompt pool and a rubric reward."""

    pool_prompts: int = 96
    iterations: int = 40
    groups_per_iteration: int = 4
    group_size: int = 8
    rollout_steps: int = 8
    """Fewer than the evaluation's Euler steps (Flow-GRPO's denoising reduction)."""
    shift: float = 3.0
    sde_kind: Literal["flow_sde", "cps"] = "cps"
    noise_level: float = 0.8
    sde_window: int = 2
    """SDE steps per rollout (a random window in the noisier half); the rest are ODE steps."""
    shared_noise: bool = True
    """Every member of a group starts from the same x_T (DanceGRPO's `init_same_noise`,
    TempFlow-GRPO's seed groups), so with an SDE window the trajectories only differ by the
    window's noise, which is what the log-probabilities credit. With independent starts most
    of a group's reward spread comes from x_T, which no log-probability sees."""
    lr: float = 1e-4
    clip_range: float = 1e-4
    kl_coef: float = 0.01
    adv_clip: float = 5.0
    artifact_threshold: float | None = None
    """If set, samples whose in-range pixel fraction is below it cannot get a positive
    advantage (combine_rewards with an artifact gate); None: plain group advantages."""
    success_threshold: float | None = 0.5
    """Prompt-pool success: a rubric reward at or above this (half the prompt's requirements)
    counts; groups with no success are "impossible", all successes "saturated". None: only
    zero-variance groups retire a prompt."""
    reprobe_every: int = 10
    grad_agreement: bool = False
    """Diagnostic: backpropagate the two halves of the groups separately and log the cosine
    between their gradients (`grad_half_cosine`; near 0 means the update is mostly noise).
    Costs a second backward pass per SDE step."""

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError("GRPOConfig.group_size must be >= 2 (advantages are within-group)")
        if not 1 <= self.sde_window <= self.rollout_steps:
            raise ValueError(
                f"GRPOConfig.sde_window={self.sde_window} must be in [1, rollout_steps="
                f"{self.rollout_steps}]"
            )
        if self.sde_kind == "cps" and max(self.sde_window, self.rollout_steps // 2) >= (
            self.rollout_steps
        ):
            raise ValueError(
                "a CPS step into t = 0 has no density and the SDE window may reach the last "
                f"step: use sde_window < rollout_steps // 2 + 1 (got {self.sde_window} of "
                f"{self.rollout_steps}) or sde_kind='flow_sde'"
            )
        _positive("GRPOConfig", pool=self.pool_prompts, groups=self.groups_per_iteration)
        _positive("GRPOConfig", lr=self.lr, clip_range=self.clip_range, noise=self.noise_level)


@dataclass(frozen=True, kw_only=True)
class PosttrainConfig:
    """All post-training stages; the world, text encoder and eval settings come from pretraining."""

    sft: SFTConfig = field(default_factory=SFTConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval_prompts: int = 48
    """Held-out prompts per evaluation (the pretraining eval's caption variant and shift)."""
    eval_steps: int = 12
    eval_guidance: float = 4.0
    """CFG scale of the guided evaluation (every checkpoint is also scored CFG-free)."""
    seed: int = 0
    threads: int | None = None
    """torch intra-op threads (None: leave as is)."""
    progress: bool = True

    def __post_init__(self) -> None:
        _positive("PosttrainConfig", eval_prompts=self.eval_prompts, eval_steps=self.eval_steps)


def _smoke() -> PosttrainConfig:
    return PosttrainConfig(
        sft=SFTConfig(scenes_per_domain=16, steps=3, batch_size=4, warmup_steps=1),
        preference=PreferenceConfig(
            num_prompts=4,
            group_size=2,
            sample_steps=3,
            weak_per_prompt=1,
            weak_steps=2,
            margin_threshold=0.0,
            steps=3,
            batch_size=2,
        ),
        grpo=GRPOConfig(
            pool_prompts=4,
            iterations=3,
            groups_per_iteration=2,
            group_size=2,
            rollout_steps=3,
            sde_window=1,
            reprobe_every=1,
        ),
        eval_prompts=4,
        eval_steps=3,
        progress=False,
    )


def _small() -> PosttrainConfig:
    return PosttrainConfig(
        sft=SFTConfig(scenes_per_domain=8192, steps=2000, batch_size=64, lr=1e-4),
        preference=PreferenceConfig(num_prompts=1024, group_size=8, steps=1000, batch_size=32),
        grpo=GRPOConfig(pool_prompts=2048, iterations=300, groups_per_iteration=16, group_size=12),
        eval_prompts=512,
        eval_steps=32,
    )


POSTTRAIN_PRESETS: dict[str, PosttrainConfig] = {
    "tiny": PosttrainConfig(),
    "smoke": _smoke(),
    "small": _small(),
}
"""`tiny`: a few CPU minutes after the tiny pretraining; `smoke`: seconds; `small`: one GPU."""

__all__ = [
    "DOMAINS",
    "POSTTRAIN_PRESETS",
    "GRPOConfig",
    "PosttrainConfig",
    "PreferenceConfig",
    "SFTConfig",
]
