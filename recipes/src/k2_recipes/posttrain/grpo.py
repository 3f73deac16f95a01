"""CFG-free Flow-GRPO on the synthetic world: SDE-window rollouts, rubric reward, prompt pool.

The report trains the whole RL stage without CFG, so rollouts and training use the
conditional velocity alone (guidance stays available at inference). Each iteration samples
prompt groups from a `PromptPool`, rolls out `group_size` samples per prompt with
`sample_with_logprobs` (SDE steps in a random window of the noisier half, ODE elsewhere,
fewer steps than evaluation), scores them with the world's rubric reward, turns rewards
into group advantages (or GDPO with an artifact gate through `combine_rewards`), and takes
one clipped-ratio step with a velocity-space KL to the frozen reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from k2_dit.train import save_checkpoint
from k2_recipes.posttrain.common import PromptBank, frozen_copy, to_uint8, velocity
from k2_recipes.posttrain.presets import GRPOConfig
from k2_recipes.presets import PretrainConfig
from k2_recipes.progress import progress as bar
from k2_recipes.rubric_world import world_rubric_reward
from k2_recipes.rundir import RunDir
from k2_rl.grpo import (
    PromptPool,
    PromptPoolConfig,
    check_on_policy_ratio,
    group_advantages,
    grpo_loss,
    random_sde_window,
    rollout_timesteps,
    sample_with_logprobs,
    transition_log_prob,
    velocity_kl,
)
from k2_rl.rewards import combine_rewards


@dataclass
class GRPORun:
    model: nn.Module
    curve: list[dict[str, float]] = field(default_factory=list)
    """Per iteration: reward mean/std, loss terms, pool counts."""
    pool_rows: list[dict[str, Any]] = field(default_factory=list)
    """`PromptPool.to_rows()` at the end of training."""


def in_range_fraction(x: Tensor, *, tol: float = 0.05) -> Tensor:
    """Per-sample fraction of values within [-1 - tol, 1 + tol]: a crude saturation/artifact
    score (a drifting policy pushes pixels out of range before the clamp hides it)."""
    return (x.abs() <= 1 + tol).flatten(1).float().mean(1)


def _advantages(rewards: Tensor, group_ids: Tensor, x0: Tensor, cfg: GRPOConfig) -> Tensor:
    if cfg.artifact_threshold is None:
        return group_advantages(rewards, group_ids, clip=cfg.adv_clip)
    adv = combine_rewards(
        rewards[:, None],
        group_ids,
        torch.ones(1, dtype=rewards.dtype),
        method="gdpo",
        artifact_scores=in_range_fraction(x0.cpu()).to(rewards.dtype),
        artifact_threshold=cfg.artifact_threshold,
    )
    return adv.clamp(-cfg.adv_clip, cfg.adv_clip)


def rollout_noise(
    groups: int,
    group_size: int,
    shape: tuple[int, ...],
    *,
    shared: bool,
    generator: torch.Generator,
) -> Tensor:
    """Starting noise x_T for `groups` groups of `group_size` rollouts, group-major.

    `shared`: one draw per group, repeated for its members (seed groups), so that members
    differ only by the SDE noise their log-probabilities account for.
    """
    draws = groups if shared else groups * group_size
    x = torch.randn(draws, *shape, generator=generator)
    return x.repeat_interleave(group_size, dim=0) if shared else x


def _flat_grad(model: nn.Module) -> Tensor:
    """All parameter gradients as one float64 vector (zeros where there is none yet)."""
    grads = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten()
        for p in model.parameters()
    ]
    return torch.cat(grads).double()


def _pool_counts(pool: PromptPool) -> dict[str, int]:
    statuses = [pool.status(i) for i in range(len(pool))]
    return {f"pool_{s}": statuses.count(s) for s in ("active", "saturated", "impossible")} | {
        "pool_zero_variance": statuses.count("zero_variance")
    }


def train_grpo(
    start_model: nn.Module,
    bank: PromptBank,
    cfg: GRPOConfig,
    pretrain: PretrainConfig,
    run: RunDir,
    *,
    seed: int,
    progress: bool = True,
    name: str = "grpo",
) -> GRPORun:
    """CFG-free GRPO from `start_model` (a copy is trained; the original is the KL reference)."""
    device = pretrain.device
    policy = copy.deepcopy(start_model).eval()  # eval mode: rollouts and rescoring must match
    policy.requires_grad_(True)
    ref = frozen_copy(start_model)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=pretrain.betas, weight_decay=0)
    pool = PromptPool(
        bank.prompts,
        config=PromptPoolConfig(
            success_threshold=cfg.success_threshold, reprobe_every=cfg.reprobe_every
        ),
    )
    reward_fn = world_rubric_reward()
    gen = torch.Generator().manual_seed(seed)
    grid = rollout_timesteps(cfg.rollout_steps, shift=cfg.shift, device=device)
    res, channels, n = pretrain.eval.resolution, pretrain.model.in_channels, cfg.group_size
    result = GRPORun(model=policy)
    for it in bar(range(cfg.iterations), desc=name, enable=progress):
        try:
            picked = pool.sample(cfg.groups_per_iteration, step=it, generator=gen)
            exhausted = 0
        except RuntimeError:
            # Every prompt retired and none due for a re-probe yet: a weak policy on a small
            # pool. Draw uniformly rather than stop the recipe; the row records it.
            picked = torch.randint(len(pool), (cfg.groups_per_iteration,), generator=gen).tolist()
            exhausted = 1
        rows = [i for i in picked for _ in range(n)]
        group_ids = torch.arange(len(picked)).repeat_interleave(n)
        hidden, mask = bank.get(rows)
        x_T = rollout_noise(
            len(picked), n, (channels, res, res), shared=cfg.shared_noise, generator=gen
        ).to(device)
        # Flow-GRPO-Fast: a short SDE window in the noisier half, where the prompt matters.
        high = max(cfg.sde_window, cfg.rollout_steps // 2)
        window = random_sde_window(cfg.rollout_steps, size=cfg.sde_window, high=high, generator=gen)
        policy_fn = velocity(policy, hidden, mask)
        traj = sample_with_logprobs(
            policy_fn,
            x_T,
            grid,
            noise_level=cfg.noise_level,
            kind=cfg.sde_kind,
            sde_window=window,
            generator=gen,
        )
        if it == 0:
            check_on_policy_ratio(policy_fn, traj, atol=1e-4)
        x0 = traj.latents[-1]
        prompts = [bank.prompts[i] for i in rows]
        rewards = reward_fn(list(to_uint8(x0)), prompts).to(torch.float32)
        adv = _advantages(rewards, group_ids, x0, cfg).to(device)
        pool.update(picked, rewards.view(len(picked), n), step=it)

        opt.zero_grad(set_to_none=True)
        ref_fn = velocity(ref, hidden, mask)
        k = len(traj.sde_steps)
        first = torch.zeros((), dtype=torch.float64)  # the first half's gradient, summed
        stats: dict[str, float] = {"clip_fraction": 0.0, "approx_kl": 0.0, "kl": 0.0}
        for j in range(k):
            new = transition_log_prob(policy_fn, traj, j)
            x, t, t_next, _ = traj.transition(j)
            with torch.no_grad():
                v_ref = ref_fn(x.to(traj.model_dtype), t)
            kl = velocity_kl(
                new.velocity, v_ref, t, t_next, noise_level=cfg.noise_level, kind=cfg.sde_kind
            )
            out = grpo_loss(
                new.log_prob,
                traj.log_probs[:, j],
                adv,
                clip_range=cfg.clip_range,
                kl=kl,
                kl_coef=cfg.kl_coef,
            )
            if cfg.grad_agreement:
                # Two backward passes, one per half of the groups (group-major rows).
                half = (len(picked) // 2) * n
                before = _flat_grad(policy)
                (out.loss[:half].sum() / (len(rows) * k)).backward(retain_graph=True)
                first = first + (_flat_grad(policy) - before)
                (out.loss[half:].sum() / (len(rows) * k)).backward()
            else:
                (out.loss.mean() / k).backward()
            stats["clip_fraction"] += float(out.clip_fraction) / k
            stats["approx_kl"] += float(out.approx_kl) / k
            stats["kl"] += float(kl.detach().mean()) / k
        if cfg.grad_agreement:
            both = _flat_grad(policy)
            stats["grad_half_cosine"] = float(
                torch.nn.functional.cosine_similarity(first, both - first, dim=0)
            )
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), pretrain.grad_clip)
        opt.step()
        std_g = rewards.view(len(picked), n).std(1, unbiased=False)
        row = {
            "iteration": it + 1,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            "zero_std_groups": float((std_g == 0).float().mean()),
            "grad_norm": float(grad_norm),
            "sde_start": window.start,
            "pool_exhausted": exhausted,
            **stats,
            **_pool_counts(pool),
        }
        result.curve.append(row)
        run.log(stage=name, **row)
    policy.eval()
    result.pool_rows = pool.to_rows()
    save_checkpoint(
        run.path / "checkpoints" / name,
        policy,
        pretrain.model,
        step=cfg.iterations,
        extra={"cfg_free": True, "rollout_steps": cfg.rollout_steps, "kind": cfg.sde_kind},
    )
    return result
