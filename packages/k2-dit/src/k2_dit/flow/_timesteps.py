"""Training-time timestep distributions: logit-normal and the resolution shift.

Convention: t = 1 is noise, t = 0 is data. A larger shift s moves mass towards t = 1
(more noise), which high resolutions need because their latents keep more signal at a
given t.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor


def _check_shift(shift: float | Tensor) -> None:
    # Only Python numbers are checked: checking a tensor would force a host sync.
    if not isinstance(shift, Tensor) and not (math.isfinite(shift) and shift > 0):
        raise ValueError(
            f"shift={shift!r} must be a finite number > 0 (1.0 means no shift; "
            "values > 1 move timesteps towards noise)"
        )


def shift_timesteps(t: Float[Tensor, " *shape"], shift: float | Tensor) -> Float[Tensor, " *shape"]:
    """Resolution-dependent timestep shift t' = s·t / (1 + (s - 1)·t).

    It is the same map for training and sampling, which is what keeps the two aligned.
    It fixes 0 and 1 and satisfies logit(t') = logit(t) + ln s, so shifting a
    logit-normal(m, σ) sample gives a logit-normal(m + ln s, σ) sample.

    Args:
        t: times in [0, 1] (1 is noise).
        shift: s > 0, a number or a tensor broadcastable to `t` (per-sample shifts for
            mixed-resolution batches; tensors are not range-checked to avoid a sync).

    Returns:
        The shifted times, same shape as `t`.

    References:
        Esser et al. 2024 (SD3), §5.3.2, Eq. 23 (t_m = sqrt(m/n)·t_n / (1 + (sqrt(m/n) - 1)·t_n)).
    """
    _check_shift(shift)
    return shift * t / (1 + (shift - 1) * t)


def logit_normal_timesteps(
    n: int,
    *,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, " n"]:
    """Draw n times from the logit-normal distribution: t = sigmoid(u), u ~ N(mean, std²).

    Args:
        n: number of samples.
        mean: location m of the underlying normal (in logit space).
        std: scale σ > 0 of the underlying normal.
        generator: source of randomness. Samples are drawn on the generator's device,
            then moved to `device`, so a CPU generator gives the same numbers anywhere.
        device: where the result lives (defaults to the generator's device, else CPU).
        dtype: floating dtype of the result.

    Returns:
        n times in (0, 1).

    References:
        Esser et al. 2024 (SD3), §3.1, Eq. 19 (logit-normal sampling π_ln(t; m, s)).
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"std={std!r} must be a finite number > 0")
    draw_device = generator.device if generator is not None else device
    u = torch.randn(n, generator=generator, device=draw_device, dtype=dtype)
    t = torch.sigmoid(u * std + mean)
    return t if device is None else t.to(device)


def shifted_logit_normal_timesteps(
    n: int,
    *,
    shift: float,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, " n"]:
    """Logit-normal times pushed through `shift_timesteps` (the function the sampler uses).

    Equivalent in distribution to logit-normal(mean + ln shift, std); it is computed as
    the pushforward so that training and inference share one definition of the shift.

    Args:
        n: number of samples.
        shift: s > 0 (see `ShiftSchedule` for per-resolution values).
        mean: logit-normal location before the shift.
        std: logit-normal scale.
        generator: source of randomness (see `logit_normal_timesteps`).
        device: where the result lives.
        dtype: floating dtype of the result.

    Returns:
        n shifted times in (0, 1).

    References:
        Esser et al. 2024 (SD3), Eq. 19 and Eq. 23; Krea 2 report, Pretraining ("a
        shifted logit-normal sampling schedule for both training and inference").
    """
    _check_shift(shift)
    t = logit_normal_timesteps(
        n, mean=mean, std=std, generator=generator, device=device, dtype=dtype
    )
    return shift_timesteps(t, shift)
