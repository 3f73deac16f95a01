"""Euler sampler for the rectified-flow ODE with optional batched classifier-free guidance.

Convention: sampling integrates dx/dt = v(x, t) from t = 1 (noise) to t = 0 (data) on a
grid shifted by the same `shift_timesteps` used to draw training times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from k2_dit.flow._timesteps import _check_shift, shift_timesteps

VelocityFn = Callable[[Tensor, Tensor, Any], Tensor]
"""`velocity_fn(x, t, cond) -> v` with x `[b, ...]`, t `[b]`, v shaped like x."""
StepCallback = Callable[[int, Tensor, Tensor], None]
"""`callback(step, t, x)`, called after step `step` (0-based) with the new time and state."""


def sampling_timesteps(
    steps: int,
    *,
    shift: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, " n"]:
    """The `steps + 1` times of an Euler schedule, from 1 (noise) to 0 (data).

    Args:
        steps: number of Euler steps (>= 1).
        shift: s > 0 applied with `shift_timesteps` to linspace(1, 0, steps + 1).
        device: where the result lives.
        dtype: floating dtype of the result (the grid is built in float64 first).

    Returns:
        A decreasing grid t_0 = 1 > t_1 > ... > t_steps = 0 of length steps + 1.

    References:
        Esser et al. 2024 (SD3), Eq. 23 (the shift); Krea 2 report, Pretraining (shifted
        schedule for both training and inference).
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps={steps!r} must be an int >= 1")
    _check_shift(shift)
    # Built on the CPU in float64 (some accelerators lack float64), then moved.
    grid = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return shift_timesteps(grid, shift).to(device=device, dtype=dtype)


def _concat_conditions(cond: Any, uncond: Any, path: str = "cond") -> Any:
    """Concatenate two condition pytrees leaf by leaf along the batch (dim 0)."""
    if isinstance(cond, Tensor) and isinstance(uncond, Tensor):
        return torch.cat([cond, uncond.to(cond.dtype)], dim=0)
    if isinstance(cond, Mapping) and isinstance(uncond, Mapping):
        if set(cond) != set(uncond):
            raise ValueError(
                f"{path}: cond and uncond have different keys {sorted(cond)} vs "
                f"{sorted(uncond)}; give uncond the same structure (e.g. empty-prompt "
                "embeddings and masks)"
            )
        return {k: _concat_conditions(cond[k], uncond[k], f"{path}[{k!r}]") for k in cond}
    if isinstance(cond, tuple | list) and isinstance(uncond, tuple | list):
        if type(cond) is not type(uncond) or len(cond) != len(uncond):
            raise ValueError(
                f"{path}: cond is a {type(cond).__name__} of {len(cond)} and uncond a "
                f"{type(uncond).__name__} of {len(uncond)}; they must match"
            )
        return type(cond)(
            _concat_conditions(c, u, f"{path}[{i}]")
            for i, (c, u) in enumerate(zip(cond, uncond, strict=True))
        )
    if cond is None and uncond is None:
        return None
    if isinstance(cond, bool | int | float | str) and type(cond) is type(uncond) and cond == uncond:
        return cond
    raise TypeError(
        f"{path}: cannot batch cond of type {type(cond).__name__} with uncond of type "
        f"{type(uncond).__name__}; conditions must be tensors (batch first), tuples/lists/dicts "
        "of them, None, or equal plain scalars"
    )


def _guided_velocity(
    velocity_fn: VelocityFn,
    x: Tensor,
    t: Tensor,
    *,
    guidance_scale: float,
    cond: Any,
    uncond: Any,
) -> Tensor:
    if guidance_scale == 1.0:
        return velocity_fn(x, t, cond)
    # One forward over [cond; uncond] instead of two: better GPU utilisation and the
    # same normalisation statistics for both halves.
    v = velocity_fn(
        torch.cat([x, x], dim=0), torch.cat([t, t], dim=0), _concat_conditions(cond, uncond)
    )
    v_cond, v_uncond = v.chunk(2, dim=0)
    return v_uncond + guidance_scale * (v_cond - v_uncond)


def _check_guidance(guidance_scale: float, uncond: Any) -> None:
    if guidance_scale != 1.0 and uncond is None:
        raise ValueError(
            f"guidance_scale={guidance_scale} needs `uncond` (the unconditional/negative "
            "condition); pass uncond=... or use guidance_scale=1.0 for conditional-only sampling"
        )


def _integrate(
    velocity_fn: VelocityFn,
    noise: Tensor,
    *,
    steps: int,
    shift: float,
    guidance_scale: float,
    cond: Any,
    uncond: Any,
    callback: StepCallback | None,
    keep: bool,
) -> tuple[Tensor, list[Tensor], Tensor]:
    _check_guidance(guidance_scale, uncond)
    # The state and times are kept in at least float32 so bf16 models do not accumulate
    # rounding over many small steps; the model sees x in the input dtype.
    state_dtype = torch.promote_types(noise.dtype, torch.float32)
    ts = sampling_timesteps(steps, shift=shift, device=noise.device, dtype=state_dtype)
    x = noise.to(state_dtype)
    b = noise.shape[0]
    states = [noise] if keep else []
    for i in range(steps):
        t = ts[i].expand(b)
        v = _guided_velocity(
            velocity_fn,
            x.to(noise.dtype),
            t,
            guidance_scale=guidance_scale,
            cond=cond,
            uncond=uncond,
        )
        x = x + (ts[i + 1] - ts[i]) * v.to(state_dtype)
        if keep:
            states.append(x.to(noise.dtype))
        if callback is not None:
            callback(i, ts[i + 1], x.to(noise.dtype))
    return x.to(noise.dtype), states, ts


def euler_sample(
    velocity_fn: VelocityFn,
    noise: Float[Tensor, " b *rest"],
    *,
    steps: int,
    shift: float = 1.0,
    guidance_scale: float = 1.0,
    cond: Any = None,
    uncond: Any = None,
    callback: StepCallback | None = None,
) -> Float[Tensor, " b *rest"]:
    """Integrate dx/dt = v(x, t) from t = 1 to 0 with Euler steps on a shifted grid.

    With `guidance_scale != 1`, classifier-free guidance v = v_u + s·(v_c - v_u) is computed
    in one batched call: x and t are repeated and every tensor leaf of `cond`/`uncond` is
    concatenated along dim 0 (conditions may be a tensor, or tuples/lists/dicts of tensors
    with batch first; None and equal plain scalars pass through). With
    `guidance_scale == 1`, `uncond` is ignored and each step makes one conditional call.

    Args:
        velocity_fn: `velocity_fn(x, t, cond) -> v`; x has the dtype of `noise`, t has
            shape [b] and dtype float32 (float64 when `noise` is float64).
        noise: x at t = 1, ε ~ N(0, I).
        steps: number of Euler steps (model calls).
        shift: inference shift applied to the uniform grid (`sampling_timesteps`).
        guidance_scale: CFG scale s; 1 disables guidance.
        cond: conditioning passed to `velocity_fn`.
        uncond: unconditional conditioning, required when `guidance_scale != 1`.
        callback: optional `callback(step, t, x)` after each step.

    Returns:
        x at t = 0, in the dtype of `noise`.

    References:
        Liu et al. 2022 (rectified flow), Euler ODE solver; Ho & Salimans 2022,
        "Classifier-Free Diffusion Guidance", Eq. 6 (in velocity form).
    """
    x, _, _ = _integrate(
        velocity_fn,
        noise,
        steps=steps,
        shift=shift,
        guidance_scale=guidance_scale,
        cond=cond,
        uncond=uncond,
        callback=callback,
        keep=False,
    )
    return x


def sample_trajectory(
    velocity_fn: VelocityFn,
    noise: Float[Tensor, " b *rest"],
    *,
    steps: int,
    shift: float = 1.0,
    guidance_scale: float = 1.0,
    cond: Any = None,
    uncond: Any = None,
) -> tuple[Float[Tensor, " n b *rest"], Float[Tensor, " n"]]:
    """`euler_sample` that also returns every intermediate state (for RL rollouts).

    Args:
        velocity_fn: `velocity_fn(x, t, cond) -> v`, t has shape [b].
        noise: x at t = 1.
        steps: number of Euler steps.
        shift: inference shift.
        guidance_scale: CFG scale; 1 disables guidance.
        cond: conditioning.
        uncond: unconditional conditioning, required when `guidance_scale != 1`.

    Returns:
        (states, times): states[k] is x at times[k]; states[0] is `noise`, states[-1] the
        sample; both have length steps + 1.

    References:
        As `euler_sample`.
    """
    _, states, ts = _integrate(
        velocity_fn,
        noise,
        steps=steps,
        shift=shift,
        guidance_scale=guidance_scale,
        cond=cond,
        uncond=uncond,
        callback=None,
        keep=True,
    )
    return torch.stack(states, dim=0), ts
