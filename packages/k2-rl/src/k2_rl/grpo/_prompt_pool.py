"""Prompt pool: per-prompt group-reward statistics that steer rollouts to prompts that still teach.

GRPO learns only from reward differences within a group, so a prompt whose groups always
succeed, always fail or all score the same spends compute for a zero gradient. The pool
samples prompts in proportion to how informative their recent groups were, retires
uninformative ones and re-probes them later (the policy moves, so "impossible" may not last).

Weight of an active prompt that has been seen (σ̂, p̂: EMAs of its group std and group
success rate; w_min = `weight_floor`, γ = `success_power`):

    w = w_min + σ̂ · (4·p̂·(1 - p̂))^γ          (without a success threshold: w = w_min + σ̂)

The factor peaks at p̂ = ½ and vanishes at 0 and 1; for 0/1 rewards σ̂ ≈ sqrt(p̂(1 - p̂))
already favours middling success, the factor sharpens it. Unseen prompts get `unseen_weight`
(default: the largest seen weight, so new prompts are explored first); retired prompts 0.

This is host-side bookkeeping (Python floats); rewards are read once per `update`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

PromptStatus = Literal["active", "saturated", "impossible", "zero_variance"]


@dataclass(frozen=True, kw_only=True)
class PromptPoolConfig:
    """How the pool judges, weights, retires and re-probes prompts.

    References:
        Krea 2 report, Reinforcement learning (prompt selection as resource allocation);
        DAPO (arXiv 2503.14476) dynamic sampling; CGPO (arXiv 2605.17807) variance weighting.
    """

    success_threshold: float | None = 0.5
    """A reward >= this counts as a success; None: continuous rewards, no success rate."""
    saturated_rate: float = 1.0
    """A group with success rate >= this is too easy (1.0: every sample succeeded)."""
    impossible_rate: float = 0.0
    """A group with success rate <= this is too hard (0.0: no sample succeeded)."""
    min_std: float = 1e-6
    """A group with reward std <= this carries no signal."""
    retire_after: int = 2
    """Consecutive uninformative groups before an active prompt is retired."""
    reprobe_every: int | None = 200
    """Steps after retirement before a prompt is re-probed; None: never."""
    reprobe_fraction: float = 0.25
    """At most ceil(fraction·n) of a sampled batch goes to due re-probes."""
    ema_decay: float = 0.5
    """Weight of history in the recent mean/std/success EMAs (0: last group only)."""
    weight_floor: float = 0.01
    """w_min, so active prompts with a low recent std keep a small chance."""
    success_power: float = 1.0
    """γ in the weight; 0 ignores the success rate."""
    unseen_weight: float | None = None
    """Weight of never-seen prompts; None: the largest seen weight (1.0 if none)."""

    def __post_init__(self) -> None:
        if not 0 <= self.impossible_rate < self.saturated_rate <= 1:
            raise ValueError(
                f"need 0 <= impossible_rate < saturated_rate <= 1, got {self.impossible_rate} "
                f"and {self.saturated_rate}"
            )
        if not (isinstance(self.retire_after, int) and self.retire_after >= 1):
            raise ValueError(f"retire_after={self.retire_after!r} must be an int >= 1")
        if self.reprobe_every is not None and not (
            isinstance(self.reprobe_every, int) and self.reprobe_every >= 1
        ):
            raise ValueError(f"reprobe_every={self.reprobe_every!r} must be an int >= 1 or None")
        checks = {
            "min_std": self.min_std >= 0,
            "reprobe_fraction": 0 <= self.reprobe_fraction <= 1,
            "ema_decay": 0 <= self.ema_decay < 1,
            "weight_floor": self.weight_floor >= 0,
            "success_power": self.success_power >= 0,
            "unseen_weight": self.unseen_weight is None or self.unseen_weight > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"PromptPoolConfig.{name}={getattr(self, name)!r} is out of range")


@dataclass
class _Stats:
    visits: int = 0
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    successes: int = 0
    recent_mean: float = math.nan
    recent_std: float = math.nan
    recent_success: float = math.nan
    last_step: int | None = None
    streak: int = 0
    status: str = "active"
    retired_step: int | None = None


class PromptPool:
    """Per-prompt running reward statistics, informative-first sampling, retirement and re-probes."""

    def __init__(self, prompts: Sequence[str], *, config: PromptPoolConfig | None = None) -> None:
        if len(prompts) == 0:
            raise ValueError("PromptPool needs at least one prompt")
        self.config = config or PromptPoolConfig()
        self._prompts = tuple(prompts)
        self._stats = [_Stats() for _ in self._prompts]

    def __len__(self) -> int:
        return len(self._prompts)

    @property
    def prompts(self) -> tuple[str, ...]:
        return self._prompts

    def status(self, index: int) -> PromptStatus:
        return self._stats[index].status  # type: ignore[return-value]

    def weights(self) -> Float[Tensor, " n"]:
        """Sampling weight of every prompt (float64, 0 for retired ones); see the module doc."""
        cfg, seen, out = self.config, [], []
        for s in self._stats:
            if s.status != "active" or s.visits == 0:
                out.append(0.0 if s.status != "active" else math.nan)
                continue
            p = s.recent_success
            factor = (
                1.0 if cfg.success_threshold is None else (4 * p * (1 - p)) ** cfg.success_power
            )
            out.append(cfg.weight_floor + s.recent_std * factor)
            seen.append(out[-1])
        unseen = cfg.unseen_weight or max((w for w in seen if w > 0), default=1.0)
        return torch.tensor([unseen if math.isnan(w) else w for w in out], dtype=torch.float64)

    def due_for_reprobe(self, *, step: int) -> list[int]:
        """Retired prompts whose re-probe interval has passed, oldest retirement first."""
        every = self.config.reprobe_every
        due = [
            (s.retired_step, i)
            for i, s in enumerate(self._stats)
            if s.status != "active" and every is not None and step - s.retired_step >= every
        ]
        return [i for _, i in sorted(due)]

    def sample(self, n: int, *, step: int, generator: torch.Generator | None = None) -> list[int]:
        """Indices of n prompts: due re-probes first, the rest drawn by weight without replacement.

        Only when fewer than n prompts have a positive weight are the remaining slots drawn
        with replacement. Deterministic given the generator's seed and the pool's state.

        Args:
            n: number of prompt groups to roll out.
            step: the training step (for re-probe timing).
            generator: CPU generator for the draw.

        Returns:
            A list of n prompt indices (into `prompts`).
        """
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"n={n!r} must be an int >= 1")
        due = self.due_for_reprobe(step=step)
        chosen = due[: min(len(due), math.ceil(self.config.reprobe_fraction * n))]
        m = n - len(chosen)
        w = self.weights()
        positive = int((w > 0).sum())
        if m > 0 and positive == 0:
            if len(due) >= n:
                return due[:n]
            counts = {k: sum(s.status == k for s in self._stats) for k in get_args(PromptStatus)}
            raise RuntimeError(
                f"no prompt to sample at step {step}: {counts} and {len(due)} due for re-probe; "
                "add prompts, raise retire_after or lower reprobe_every"
            )
        if m > 0:
            chosen += torch.multinomial(w, min(m, positive), generator=generator).tolist()
        if m > positive:
            chosen += torch.multinomial(
                w, m - positive, replacement=True, generator=generator
            ).tolist()
        return chosen

    def update(self, indices: Sequence[int], rewards: Float[Tensor, "g n"], *, step: int) -> None:
        """Record one group of rewards per prompt index (row g of `rewards` belongs to indices[g]).

        Args:
            indices: prompt index of each group.
            rewards: [groups, samples per group >= 2] rewards (a single host read).
            step: the training step the groups were rolled out at.
        """
        if rewards.ndim != 2 or rewards.shape[0] != len(indices) or rewards.shape[1] < 2:
            raise ValueError(
                f"rewards {tuple(rewards.shape)} must be [len(indices)={len(indices)}, group size "
                ">= 2]: one row per prompt group (a single sample has no within-group variance)"
            )
        rows = rewards.detach().double().cpu().tolist()
        if not all(math.isfinite(r) for row in rows for r in row):
            raise ValueError("rewards contain NaN or inf; fix the reward model before updating")
        for i, row in zip(indices, rows, strict=True):
            if not 0 <= i < len(self):
                raise IndexError(f"prompt index {i} out of range for a pool of {len(self)}")
            self._observe(self._stats[i], row, step)

    def _observe(self, s: _Stats, r: list[float], step: int) -> None:
        cfg, n = self.config, len(r)
        mean = sum(r) / n
        var = sum((x - mean) ** 2 for x in r) / n
        thr = cfg.success_threshold
        rate = math.nan if thr is None else sum(x >= thr for x in r) / n
        # Chan et al. pairwise merge: exact running mean/variance over every reward seen.
        total = s.count + n
        delta = mean - s.mean
        s.m2 += var * n + delta**2 * s.count * n / total
        s.mean += delta * n / total
        s.count, s.successes = total, s.successes + (0 if thr is None else sum(x >= thr for x in r))
        d = cfg.ema_decay if s.visits else 0.0
        s.recent_mean = d * s.recent_mean + (1 - d) * mean if s.visits else mean
        s.recent_std = d * s.recent_std + (1 - d) * math.sqrt(var) if s.visits else math.sqrt(var)
        s.recent_success = d * s.recent_success + (1 - d) * rate if s.visits else rate
        s.visits, s.last_step = s.visits + 1, step
        reason = None
        if thr is not None and rate >= cfg.saturated_rate:
            reason = "saturated"
        elif thr is not None and rate <= cfg.impossible_rate:
            reason = "impossible"
        elif math.sqrt(var) <= cfg.min_std:
            reason = "zero_variance"
        s.streak = s.streak + 1 if reason else 0
        if s.status == "active":
            if reason is not None and s.streak >= cfg.retire_after:
                s.status, s.retired_step = reason, step
        elif reason is None:  # a re-probe found signal again
            s.status, s.retired_step = "active", None
        else:  # still uninformative: wait another interval
            s.status, s.retired_step = reason, step

    def to_rows(self) -> list[dict[str, Any]]:
        """The statistics table, one dict per prompt (var is the population variance)."""
        weights = self.weights().tolist()
        rows = []
        for i, (p, s, w) in enumerate(zip(self._prompts, self._stats, weights, strict=True)):
            rows.append(
                {
                    "index": i,
                    "prompt": p,
                    "status": s.status,
                    "weight": w,
                    "visits": s.visits,
                    "count": s.count,
                    "mean": s.mean if s.count else math.nan,
                    "var": s.m2 / s.count if s.count else math.nan,
                    "success_rate": s.successes / s.count
                    if s.count and self.config.success_threshold is not None
                    else math.nan,
                    "recent_mean": s.recent_mean,
                    "recent_std": s.recent_std,
                    "recent_success": s.recent_success,
                    "last_step": s.last_step,
                    "retired_step": s.retired_step,
                }
            )
        return rows

    def to_csv(self, path: str | Path) -> None:
        """Write `to_rows()` as CSV (standard library only)."""
        rows = self.to_rows()
        with Path(path).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def to_arrow(self) -> Any:
        """`to_rows()` as a `pyarrow.Table` (pyarrow is optional: `pip install pyarrow`)."""
        try:
            import pyarrow as pa
        except ImportError as e:
            raise ImportError("PromptPool.to_arrow needs pyarrow: pip install pyarrow") from e
        return pa.Table.from_pylist(self.to_rows())

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state for checkpoints (prompts and statistics)."""
        return {"prompts": list(self._prompts), "stats": [asdict(s) for s in self._stats]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` output; the prompt list must match."""
        if list(state["prompts"]) != list(self._prompts):
            raise ValueError(
                "state_dict prompts differ from this pool's: build the pool from the same list"
            )
        names = {f.name for f in fields(_Stats)}
        self._stats = [_Stats(**{k: v for k, v in d.items() if k in names}) for d in state["stats"]]
