"""Rollouts that record log-probabilities, their recomputation at training time, and the ratio self-test."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from k2_dit.flow import ShiftSchedule, sampling_timesteps
from k2_rl.grpo._sde import LogProbForm, SdeKind, _check_kind, sde_step

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""`velocity_fn(x, t) -> v`: x `[b, ...]` in the rollout's input dtype, t `[b]`, v shaped like x."""


@dataclass(frozen=True, kw_only=True)
class Trajectory:
    """A rollout: every state, the grid, and the old log-probs of its SDE transitions."""

    latents: Tensor
    """[n + 1, b, ...]: x at every grid time (float32 or wider); latents[-1] is the sample."""
    timesteps: Tensor
    """[n + 1]: the grid, decreasing from noise to data, in the latents' dtype."""
    log_probs: Tensor
    """[b, k]: log-prob of each SDE transition, in the order of `sde_steps`."""
    sde_steps: tuple[int, ...]
    """The k step indices that injected noise (the trainable ones), increasing."""
    noise_level: float
    kind: SdeKind
    log_prob_form: LogProbForm
    model_dtype: torch.dtype
    """The dtype `velocity_fn` received x in (that of x_T)."""

    def transition(self, j: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x, t, t_next, x_next) of the j-th SDE transition; t and t_next have shape [b]."""
        k = self.sde_steps[j]
        b = self.latents.shape[1]
        t, t_next = self.timesteps[k].expand(b), self.timesteps[k + 1].expand(b)
        return self.latents[k], t, t_next, self.latents[k + 1]


class TransitionLogProb(NamedTuple):
    log_prob: Tensor
    """[b]: the current model's log-prob of the stored transition."""
    velocity: Tensor
    """[b, ...]: the (guided) velocity it was computed from, e.g. for the KL term."""
    mean: Tensor
    std: Tensor


def rollout_timesteps(
    steps: int,
    *,
    shift: float = 1.0,
    schedule: ShiftSchedule | None = None,
    num_tokens: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, " n"]:
    """Shifted grid of `steps + 1` times from 1 to 0 (fewer steps for training rollouts than eval).

    Args:
        steps: sampling steps (Flow-GRPO: 10 for training rollouts, 40 for evaluation).
        shift: the shift s, used when `schedule` is None.
        schedule: per-resolution shift rule; needs `num_tokens`.
        num_tokens: latent tokens per image, for `schedule`.
        device: where the grid lives.
        dtype: its dtype.

    Returns:
        `k2_dit.flow.sampling_timesteps(steps, shift=...)`.

    References:
        Esser et al. 2024 (SD3), Eq. 23; Flow-GRPO (arXiv 2505.05470), §4 "Denoising Reduction".
    """
    if schedule is not None:
        if num_tokens is None:
            raise ValueError("schedule=... needs num_tokens (latent tokens per image)")
        shift = schedule.shift_for(num_tokens)
    return sampling_timesteps(steps, shift=shift, device=device, dtype=dtype)


def _check_guidance(guidance_scale: float | None, uncond_fn: VelocityFn | None) -> None:
    if guidance_scale is None or guidance_scale == 1.0:
        if uncond_fn is not None and guidance_scale is None:
            raise ValueError("uncond_fn is only used with guidance_scale=...; pass both or neither")
    elif uncond_fn is None:
        raise ValueError(
            f"guidance_scale={guidance_scale} needs uncond_fn (x, t) -> v_uncond; "
            "or leave guidance_scale=None for CFG-free rollouts"
        )


def _velocity(
    fn: VelocityFn, uncond_fn: VelocityFn | None, scale: float | None, x: Tensor, t: Tensor
) -> Tensor:
    v = fn(x, t)
    if scale is None or scale == 1.0 or uncond_fn is None:
        return v
    v_u = uncond_fn(x, t)
    return v_u + scale * (v - v_u)


def _grid(timesteps: Tensor) -> list[float]:
    if timesteps.ndim != 1 or timesteps.shape[0] < 2:
        raise ValueError(
            f"timesteps must be 1-D with >= 2 times, got shape {tuple(timesteps.shape)}"
        )
    grid = timesteps.detach().double().cpu().tolist()  # one host read per rollout, not per step
    if not (grid[-1] >= 0 and grid[0] <= 1 and all(a > b for a, b in itertools.pairwise(grid))):
        raise ValueError(
            f"timesteps must decrease strictly within [0, 1] (1 = noise), got {grid}; "
            "build one with rollout_timesteps(steps, shift=...)"
        )
    return grid


def _window(sde_window: Iterable[int] | None, n: int) -> tuple[int, ...]:
    if sde_window is None:
        return tuple(range(n))
    steps = list(sde_window)
    bad = [k for k in steps if not (isinstance(k, int) and 0 <= k < n)]
    if bad or len(set(steps)) != len(steps):
        raise ValueError(
            f"sde_window={steps} must hold distinct step indices in [0, {n}) for a grid of "
            f"{n} steps (bad: {bad})"
        )
    return tuple(sorted(steps))


def sample_with_logprobs(
    velocity_fn: VelocityFn,
    x_T: Float[Tensor, " b *rest"],
    timesteps: Float[Tensor, " n"],
    *,
    noise_level: float,
    kind: SdeKind = "flow_sde",
    sde_window: Iterable[int] | None = None,
    log_prob_form: LogProbForm | None = None,
    guidance_scale: float | None = None,
    uncond_fn: VelocityFn | None = None,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """Roll out from x_T: SDE steps (with log-probs) inside `sde_window`, Euler ODE steps outside.

    Runs under `torch.no_grad()`; the trainable log-probs are recomputed with
    `transition_log_prob`. The state is kept in float32 (or wider) and `velocity_fn`
    sees x in the dtype of `x_T`. CFG-free unless `guidance_scale` is given.

    Args:
        velocity_fn: `(x, t) -> v` (close over the prompt conditioning).
        x_T: initial noise at timesteps[0] (share it within a group if desired).
        timesteps: decreasing grid of n + 1 times (`rollout_timesteps`).
        noise_level: a (flow_sde) or η (cps) for the SDE steps.
        kind: "flow_sde" or "cps".
        sde_window: step indices that inject noise; None means every step (Flow-GRPO).
        log_prob_form: see `sde_step`.
        guidance_scale: CFG scale s: v = v_u + s·(v_c - v_u); None or 1 disables it.
        uncond_fn: `(x, t) -> v_uncond`, required with `guidance_scale`.
        generator: source of the SDE noise.

    Returns:
        The `Trajectory`.

    References:
        Flow-GRPO (arXiv 2505.05470), Alg. 1; MixGRPO (arXiv 2507.21802), §3.2 (ODE outside
        the window); Ho & Salimans 2022 (CFG).
    """
    _check_guidance(guidance_scale, uncond_fn)
    _check_kind(kind, noise_level, allow_zero=False)
    grid = _grid(timesteps)
    n = len(grid) - 1
    steps = _window(sde_window, n)
    if kind == "cps" and any(grid[k + 1] == 0 for k in steps):
        raise ValueError(
            "a CPS step into t_next = 0 has std t_next·sin(ηπ/2) = 0 and no density; "
            f"drop step {n - 1} from sde_window (it then runs as an ODE step)"
        )
    form: LogProbForm = log_prob_form or ("gaussian" if kind == "flow_sde" else "unnormalized")
    state_dtype = torch.promote_types(x_T.dtype, torch.float32)
    ts = timesteps.to(device=x_T.device, dtype=state_dtype)
    b = x_T.shape[0]
    x = x_T.to(state_dtype)
    states, log_probs = [x], []
    chosen = set(steps)
    with torch.no_grad():
        for i in range(n):
            t, t_next = ts[i].expand(b), ts[i + 1].expand(b)
            v = _velocity(velocity_fn, uncond_fn, guidance_scale, x.to(x_T.dtype), t)
            if i in chosen:
                x, lp, _, _ = sde_step(
                    x,
                    v,
                    t,
                    t_next,
                    noise_level=noise_level,
                    kind=kind,
                    log_prob_form=form,
                    generator=generator,
                )
                log_probs.append(lp)
            else:
                x = x + (ts[i + 1] - ts[i]) * v.to(state_dtype)
            states.append(x)
    lp_all = torch.stack(log_probs, 1) if log_probs else x.new_zeros(b, 0)
    return Trajectory(
        latents=torch.stack(states),
        timesteps=ts,
        log_probs=lp_all,
        sde_steps=steps,
        noise_level=noise_level,
        kind=kind,
        log_prob_form=form,
        model_dtype=x_T.dtype,
    )


def transition_log_prob(
    velocity_fn: VelocityFn,
    trajectory: Trajectory,
    j: int,
    *,
    guidance_scale: float | None = None,
    uncond_fn: VelocityFn | None = None,
) -> TransitionLogProb:
    """The current model's log-prob of the j-th stored SDE transition (differentiable in its weights).

    Args:
        velocity_fn: the policy `(x, t) -> v` being trained.
        trajectory: a rollout from `sample_with_logprobs`.
        j: index into `trajectory.sde_steps`.
        guidance_scale: must match the rollout's for an on-policy ratio of 1.
        uncond_fn: the unconditional branch when guided.

    Returns:
        `TransitionLogProb(log_prob [b], velocity, mean, std)`.

    References:
        Flow-GRPO (arXiv 2505.05470), Eq. 8 (the ratio's numerator).
    """
    _check_guidance(guidance_scale, uncond_fn)
    x, t, t_next, x_next = trajectory.transition(j)
    v = _velocity(velocity_fn, uncond_fn, guidance_scale, x.to(trajectory.model_dtype), t)
    _, lp, mean, std = sde_step(
        x,
        v,
        t,
        t_next,
        noise_level=trajectory.noise_level,
        kind=trajectory.kind,
        log_prob_form=trajectory.log_prob_form,
        prev_sample=x_next,
    )
    return TransitionLogProb(lp, v, mean, std)


def check_on_policy_ratio(
    velocity_fn: VelocityFn,
    trajectory: Trajectory,
    *,
    guidance_scale: float | None = None,
    uncond_fn: VelocityFn | None = None,
    atol: float = 1e-6,
) -> Float[Tensor, "b k"]:
    """Self-test: rescoring a rollout with the model that drew it must give ratio 1 at every step.

    A failure means rollout and training disagree (dropout or other train-mode noise,
    batch-dependent kernels, a different dtype or guidance scale), which silently biases
    every clipped update.

    Args:
        velocity_fn: the model that produced `trajectory`, unchanged since.
        trajectory: its rollout.
        guidance_scale: as used in the rollout.
        uncond_fn: as used in the rollout.
        atol: largest allowed |ratio - 1|.

    Returns:
        The ratios exp(logp_new - logp_old), [b, k].

    References:
        Flow-GRPO repository FAQ ("check ratio == 1 on-policy").
    """
    with torch.no_grad():
        new = [
            transition_log_prob(
                velocity_fn, trajectory, j, guidance_scale=guidance_scale, uncond_fn=uncond_fn
            ).log_prob
            for j in range(len(trajectory.sde_steps))
        ]
    b = trajectory.log_probs.shape[0]
    lp = torch.stack(new, 1) if new else trajectory.log_probs.new_zeros(b, 0)
    ratio = torch.exp(lp - trajectory.log_probs)
    worst = float((ratio - 1).abs().max()) if ratio.numel() else 0.0
    if worst > atol:
        raise RuntimeError(
            f"on-policy ratio deviates from 1 by {worst:.3g} > atol={atol:g}: put the model in "
            "eval mode, keep the rollout batch, dtype and guidance_scale identical at training time"
        )
    return ratio
