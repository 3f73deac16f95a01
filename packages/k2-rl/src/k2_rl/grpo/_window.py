"""SDE windows: which sampling steps inject noise (and are trained), the rest being ODE steps."""

from __future__ import annotations

import torch


def _check_size(num_steps: int, size: int) -> None:
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"num_steps={num_steps!r} must be an int >= 1")
    if not (isinstance(size, int) and 1 <= size <= num_steps):
        raise ValueError(f"size={size!r} must be an int in [1, num_steps={num_steps}]")


def sliding_sde_window(
    num_steps: int,
    *,
    size: int,
    iteration: int,
    shift_every: int,
    stride: int = 1,
    max_start: int | None = None,
) -> range:
    """MixGRPO's sliding window: `size` SDE steps whose start moves towards the data over training.

    start = (iteration // shift_every)·stride mod (max_start + 1), so the window slides from
    the noisiest steps to the cleanest and then rolls back to step 0.

    Args:
        num_steps: sampling steps in the rollout.
        size: window length w (MixGRPO default 4).
        iteration: the training iteration (>= 0).
        shift_every: iterations between moves τ (MixGRPO default 25).
        stride: steps moved each time (MixGRPO default 1).
        max_start: last allowed start; default num_steps - size.

    Returns:
        range(start, start + size) of step indices.

    References:
        Li et al. 2025, MixGRPO (arXiv 2507.21802), §3.2 (sliding window, roll-back).
    """
    _check_size(num_steps, size)
    last = num_steps - size if max_start is None else max_start
    if not (0 <= last <= num_steps - size):
        raise ValueError(
            f"max_start={max_start!r} must be in [0, num_steps - size={num_steps - size}]"
        )
    if iteration < 0 or shift_every < 1 or stride < 1:
        raise ValueError(
            f"need iteration >= 0, shift_every >= 1 and stride >= 1 (got {iteration}, "
            f"{shift_every}, {stride})"
        )
    start = (iteration // shift_every) * stride % (last + 1)
    return range(start, start + size)


def random_sde_window(
    num_steps: int,
    *,
    size: int,
    low: int = 0,
    high: int | None = None,
    generator: torch.Generator | None = None,
) -> range:
    """Flow-GRPO-Fast's window: `size` consecutive SDE steps at a random start in [low, high - size].

    Args:
        num_steps: sampling steps in the rollout.
        size: window length (Flow-GRPO-Fast uses 1-3).
        low: first step the window may cover.
        high: one past the last step it may cover (default num_steps; the reference
            restricts it to the first half, num_steps // 2).
        generator: CPU generator for the start draw (deterministic given its seed).

    Returns:
        range(start, start + size).

    References:
        Flow-GRPO repository, "Flow-GRPO-Fast" (`sde_window_size`, `sde_window_range`).
    """
    _check_size(num_steps, size)
    hi = num_steps if high is None else high
    if not (low >= 0 and low + size <= hi <= num_steps):
        raise ValueError(
            f"need 0 <= low and low + size <= high <= num_steps (low={low}, size={size}, "
            f"high={hi}, num_steps={num_steps})"
        )
    start = int(torch.randint(low, hi - size + 1, (1,), generator=generator))
    return range(start, start + size)
