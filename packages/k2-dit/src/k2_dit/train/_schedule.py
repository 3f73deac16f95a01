"""Warmup-stable-decay learning-rate schedule (a thin wrapper over transformers)."""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

DecayType = Literal["linear", "cosine", "1-sqrt"]


def wsd_phase_steps(
    *, warmup_steps: int, total_steps: int, decay_fraction: float = 0.2
) -> tuple[int, int, int]:
    """Split `total_steps` into (warmup, stable, decay) step counts.

    The decay phase is the last round(decay_fraction · total_steps) steps; the stable
    phase is what remains after warmup. PMA snapshots belong to the stable phase.

    Args:
        warmup_steps: steps of linear warmup (>= 0).
        total_steps: all optimizer steps (> 0).
        decay_fraction: share of `total_steps` spent decaying, in [0, 1].

    Returns:
        (warmup, stable, decay), summing to `total_steps`.
    """
    if not (isinstance(total_steps, int) and total_steps > 0):
        raise ValueError(f"total_steps={total_steps!r} must be an int > 0")
    if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
        raise ValueError(f"warmup_steps={warmup_steps!r} must be an int >= 0")
    if not (math.isfinite(decay_fraction) and 0.0 <= decay_fraction <= 1.0):
        raise ValueError(f"decay_fraction={decay_fraction!r} must lie in [0, 1]")
    decay = round(decay_fraction * total_steps)
    stable = total_steps - warmup_steps - decay
    if stable < 0:
        raise ValueError(
            f"warmup_steps={warmup_steps} + decay steps {decay} (decay_fraction="
            f"{decay_fraction} of total_steps={total_steps}) exceed total_steps; shorten the "
            "warmup or lower decay_fraction"
        )
    return warmup_steps, stable, decay


def wsd_schedule(
    optimizer: Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    decay_fraction: float = 0.2,
    decay_type: DecayType = "linear",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Warmup-stable-decay LR schedule; the factor multiplies each group's initial LR.

    Warmup rises linearly from `min_lr_ratio` to 1 over `warmup_steps`; the LR then stays
    at 1 until the last `decay_fraction` of `total_steps`, where it falls to `min_lr_ratio`
    following `decay_type`, and stays there afterwards. This is
    `transformers.get_wsd_schedule` with the phase lengths from `wsd_phase_steps`.

    Args:
        optimizer: the optimizer whose group LRs are scheduled.
        warmup_steps: linear warmup length.
        total_steps: total optimizer steps.
        decay_fraction: share of `total_steps` spent decaying.
        decay_type: `linear`, `cosine` (half cosine) or `1-sqrt`.
        min_lr_ratio: final LR as a fraction of the peak, in [0, 1].

    Returns:
        A `LambdaLR`; call `.step()` once per optimizer step.

    References:
        Hu et al. 2024, "MiniCPM", §4.1 (WSD); Hägele et al. 2024, "Scaling Laws and
        Compute-Optimal Training Beyond Fixed Training Durations" (1-sqrt cooldown);
        Krea 2 report, Pretraining.
    """
    if decay_type not in ("linear", "cosine", "1-sqrt"):
        raise ValueError(f"decay_type={decay_type!r} must be 'linear', 'cosine' or '1-sqrt'")
    if not (math.isfinite(min_lr_ratio) and 0.0 <= min_lr_ratio <= 1.0):
        raise ValueError(f"min_lr_ratio={min_lr_ratio!r} must lie in [0, 1]")
    # Imported here so `import k2_dit.train` does not pay for importing transformers.
    from transformers import get_wsd_schedule

    warmup, _, decay = wsd_phase_steps(
        warmup_steps=warmup_steps, total_steps=total_steps, decay_fraction=decay_fraction
    )
    return get_wsd_schedule(
        optimizer,
        num_warmup_steps=warmup,
        num_decay_steps=decay,
        num_training_steps=total_steps,
        warmup_type="linear",
        decay_type=decay_type,
        min_lr_ratio=min_lr_ratio,
    )
