"""Loss-spike and NaN guard: skip a bad step, stop after too many in a row."""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any

from k2_dit.config import ConfigError


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps were skipped by the guard; the run cannot continue as is."""


@dataclass(frozen=True, kw_only=True)
class GuardConfig:
    """When a step counts as bad, and how many bad steps in a row end the run."""

    spike_factor: float = 4.0
    """A loss above spike_factor × the running median of accepted losses is a spike."""
    window: int = 50
    """Accepted losses the running median is taken over."""
    min_history: int = 10
    """Accepted losses needed before the spike rule applies (non-finite values always skip)."""
    max_consecutive_skips: int = 5
    """Skipped steps in a row that stop the run with `TrainingDiverged`."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spike_factor) and self.spike_factor > 1):
            raise ConfigError(f"GuardConfig.spike_factor={self.spike_factor!r} must be > 1")
        if self.window < 1 or not 1 <= self.min_history <= self.window:
            raise ConfigError(
                f"GuardConfig needs window >= 1 and 1 <= min_history <= window, got "
                f"window={self.window}, min_history={self.min_history}"
            )
        if self.max_consecutive_skips < 1:
            raise ConfigError("GuardConfig.max_consecutive_skips must be >= 1")


class SpikeGuard:
    """Decides per step whether to apply the update, from the loss and the gradient norm.

    A step is skipped when the loss or the gradient norm is not finite, or when the loss
    exceeds `spike_factor` × the median of the last `window` accepted losses (once
    `min_history` are known). Skipped losses never enter the median, so a spike cannot raise
    its own threshold. After `max_consecutive_skips` skips in a row `check` raises
    `TrainingDiverged`. Call with host floats (one sync per step, in the trainer, not in the
    maths); every rank must pass the same (all-reduced) values so all ranks decide alike.

    References:
        LightningDiT issues #10/#23 (NaN after long runs); Chowdhery et al. 2022 (PaLM), §5.1
        (skipping batches around loss spikes); Krea 2 report, Optimization (Muon loss spikes).
    """

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        self._history: deque[float] = deque(maxlen=self.config.window)
        self.consecutive = 0
        self.total_skipped = 0

    def threshold(self) -> float:
        """Current spike threshold (inf until `min_history` accepted losses)."""
        if len(self._history) < self.config.min_history:
            return math.inf
        return self.config.spike_factor * statistics.median(self._history)

    def check(self, loss: float, grad_norm: float = 0.0, *, step: int | None = None) -> str | None:
        """Record a step; return None to apply it, or the reason it must be skipped.

        Args:
            loss: the step's loss (mean over the global batch).
            grad_norm: the global gradient norm before clipping.
            step: for the error message only.

        Returns:
            None when the step is accepted, else a short reason.

        Raises:
            TrainingDiverged: the skip made `max_consecutive_skips` in a row.
        """
        reason = None
        if not math.isfinite(loss):
            reason = f"loss is {loss}"
        elif not math.isfinite(grad_norm):
            reason = f"gradient norm is {grad_norm}"
        elif loss > (limit := self.threshold()):
            reason = (
                f"loss {loss:.4g} > {self.config.spike_factor:g} × running median ({limit:.4g})"
            )
        if reason is None:
            self._history.append(loss)
            self.consecutive = 0
            return None
        self.consecutive += 1
        self.total_skipped += 1
        if self.consecutive >= self.config.max_consecutive_skips:
            raise TrainingDiverged(
                f"{self.consecutive} consecutive steps skipped (last at step {step}: {reason}); "
                "stopping. Resume from the last checkpoint with a lower learning rate, a "
                "tighter gradient clip, or inspect the data of these steps"
            )
        return reason

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state, saved with checkpoints so a resumed run decides identically."""
        return {
            "history": list(self._history),
            "consecutive": self.consecutive,
            "total_skipped": self.total_skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._history = deque((float(v) for v in state["history"]), maxlen=self.config.window)
        self.consecutive = int(state["consecutive"])
        self.total_skipped = int(state["total_skipped"])
