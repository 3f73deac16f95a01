"""Weight averaging: weighted state-dict averages, task arithmetic and PMA snapshots."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

MergeMethod = Literal["sma", "wma", "ema"]


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, Tensor]], weights: Sequence[float] | None = None
) -> dict[str, Tensor]:
    """Weighted average Σ_i w_i·θ_i / Σ_i w_i of state dicts with identical keys and shapes.

    Floating tensors are accumulated in at least float32 (so bf16 checkpoints do not lose
    precision in the sum) and returned in their original dtype, on the first dict's device.
    Integer/bool tensors (step counters, masks) cannot be averaged and are taken from the
    last state dict, which is the most recent one by convention.

    Args:
        state_dicts: one or more state dicts (oldest first).
        weights: non-negative weights, one per state dict, with a positive sum; they are
            normalised. None means equal weights (a simple average).

    Returns:
        A new state dict.

    References:
        Wortsman et al. 2022, "Model soups", Eq. 1 (uniform soup); Li et al. 2025, "Model
        Merging in Pre-training of Large Language Models" (arXiv 2505.12082), §3 (PMA).
    """
    n = len(state_dicts)
    if n == 0:
        raise ValueError("average_state_dicts needs at least one state dict")
    if weights is None:
        norm = [1.0 / n] * n
    else:
        w = [float(x) for x in weights]
        if len(w) != n:
            raise ValueError(f"got {len(w)} weights for {n} state dicts; give one weight each")
        if not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"weights={w} must be finite, >= 0 and have a positive sum")
        total = math.fsum(w)
        norm = [x / total for x in w]

    first = state_dicts[0]
    keys = set(first)
    for i, sd in enumerate(state_dicts[1:], start=1):
        if set(sd) != keys:
            raise ValueError(
                f"state dict {i} has different keys than state dict 0: missing "
                f"{sorted(keys - set(sd))}, extra {sorted(set(sd) - keys)}; only checkpoints "
                "of the same model can be averaged"
            )
    out: dict[str, Tensor] = {}
    for name, ref in first.items():
        for i, sd in enumerate(state_dicts):
            if sd[name].shape != ref.shape:
                raise ValueError(
                    f"{name!r} has shape {tuple(sd[name].shape)} in state dict {i} but "
                    f"{tuple(ref.shape)} in state dict 0"
                )
        if not (ref.is_floating_point() or ref.is_complex()):
            out[name] = state_dicts[-1][name].detach().clone()
            continue
        acc_dtype = torch.promote_types(ref.dtype, torch.float32)
        acc = torch.zeros(ref.shape, dtype=acc_dtype, device=ref.device)
        for wi, sd in zip(norm, state_dicts, strict=True):
            if wi != 0.0:
                acc.add_(sd[name].detach().to(device=ref.device, dtype=acc_dtype), alpha=wi)
        out[name] = acc.to(ref.dtype)
    return out


def task_arithmetic(
    base: Mapping[str, Tensor],
    finetuned: Sequence[Mapping[str, Tensor]],
    *,
    scales: float | Sequence[float],
) -> dict[str, Tensor]:
    """Task arithmetic θ = θ_base + Σ_i λ_i (θ_i - θ_base) over fine-tunes of one base.

    Each fine-tune contributes its task vector τ_i = θ_i - θ_base scaled by λ_i. The sum is
    formed in at least float32 and returned in the base's dtype, on the base's device, so
    bf16 task vectors (small differences of large weights) are not rounded before scaling.
    With λ_i = w_i / Σ_j w_j the base cancels and this is the weighted average
    `average_state_dicts(finetuned, w)` (a model soup); λ_i summing to more than 1
    extrapolates along the task vectors. Integer/bool tensors are taken from the base.

    Args:
        base: the common starting point θ_base.
        finetuned: one or more state dicts fine-tuned from `base` (same keys and shapes).
        scales: λ_i, one per fine-tune, or one float used for all; any finite value
            (negative λ subtracts a task, the "forgetting" use of task vectors).

    Returns:
        A new state dict with the base's keys, dtypes and device.

    References:
        Ilharco et al. 2023, "Editing Models with Task Arithmetic" (arXiv 2212.04089), Eq. 1
        (τ = θ_ft - θ_pre) and §3-4 (θ = θ_pre + λ Σ τ_i); Krea 2 report, Supervised
        finetuning (SFT) ("model merging to produce a generalist SFT checkpoint").
    """
    n = len(finetuned)
    if n == 0:
        raise ValueError("task_arithmetic needs at least one fine-tuned state dict")
    lams = [float(scales)] * n if isinstance(scales, int | float) else [float(x) for x in scales]
    if len(lams) != n:
        raise ValueError(f"got {len(lams)} scales for {n} fine-tuned state dicts; give one each")
    if not all(math.isfinite(x) for x in lams):
        raise ValueError(f"scales={lams} must be finite")
    keys = set(base)
    for i, sd in enumerate(finetuned):
        if set(sd) != keys:
            raise ValueError(
                f"fine-tuned state dict {i} has different keys than the base: missing "
                f"{sorted(keys - set(sd))}, extra {sorted(set(sd) - keys)}; task arithmetic "
                "needs fine-tunes of the same model"
            )
    out: dict[str, Tensor] = {}
    for name, ref in base.items():
        for i, sd in enumerate(finetuned):
            if sd[name].shape != ref.shape:
                raise ValueError(
                    f"{name!r} has shape {tuple(sd[name].shape)} in fine-tuned state dict {i} "
                    f"but {tuple(ref.shape)} in the base"
                )
        if not (ref.is_floating_point() or ref.is_complex()):
            out[name] = ref.detach().clone()
            continue
        acc_dtype = torch.promote_types(ref.dtype, torch.float32)
        theta_base = ref.detach().to(acc_dtype)
        acc = theta_base.clone()
        for lam, sd in zip(lams, finetuned, strict=True):
            if lam != 0.0:
                task = sd[name].detach().to(device=ref.device, dtype=acc_dtype) - theta_base
                acc.add_(task, alpha=lam)
        out[name] = acc.to(ref.dtype)
    return out


def merge_weights(method: MergeMethod, n: int, *, ema_alpha: float = 0.2) -> list[float]:
    """Per-checkpoint weights (oldest first, summing to 1) of the PMA merging rules.

    `sma`: w_i = 1/N. `wma`: w_i = i / Σ_j j (linearly more weight on recent checkpoints).
    `ema`: the weights of the recursion M_1 = θ_1, M_i = α·θ_i + (1 - α)·M_{i-1} over the
    window, i.e. w_1 = (1 - α)^(N-1) and w_i = α·(1 - α)^(N-i) for i >= 2.

    Args:
        method: `sma`, `wma` or `ema`.
        n: number of checkpoints N (>= 1).
        ema_alpha: α in (0, 1], `ema` only.

    Returns:
        N weights.

    References:
        Li et al. 2025 (arXiv 2505.12082), §3, merging methods (SMA, WMA, EMA).
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if method == "sma":
        return [1.0 / n] * n
    if method == "wma":
        total = n * (n + 1) / 2
        return [i / total for i in range(1, n + 1)]
    if method == "ema":
        if not (0.0 < ema_alpha <= 1.0):
            raise ValueError(f"ema_alpha={ema_alpha!r} must lie in (0, 1]")
        a = ema_alpha
        return [(1 - a) ** (n - 1)] + [a * (1 - a) ** (n - i) for i in range(2, n + 1)]
    raise ValueError(f"method={method!r} must be 'sma', 'wma' or 'ema'")


class PMA:
    """Pre-trained Model Averaging: merge the last `window` snapshots taken every `interval` steps.

    Snapshots are detached copies on `device` (CPU by default), so the accelerator holds no
    extra weights; that is PMA's memory advantage over a per-step EMA. Restrict snapshots to
    the stable (constant-LR) phase of a WSD schedule with `start_step`/`end_step` (see
    `wsd_phase_steps`). For runs too large for host memory, save checkpoints instead and
    stream them: `average_checkpoints(pma_checkpoints(dirs, last_n=..., interval=...))`.

    Example:
        pma = PMA(window=4, interval=1000, start_step=warmup, end_step=warmup + stable)
        for step in ...:
            ...
            pma.maybe_update(step, model)
        merged = pma.average()

    References:
        Li et al. 2025, "Model Merging in Pre-training of Large Language Models"
        (arXiv 2505.12082), §3-4; Krea 2 report, Pretraining ("apply PMA").
    """

    def __init__(
        self,
        *,
        window: int,
        interval: int,
        method: MergeMethod = "sma",
        ema_alpha: float = 0.2,
        start_step: int = 0,
        end_step: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if window < 1:
            raise ValueError(f"window={window} must be >= 1 (number of checkpoints merged)")
        if interval < 1:
            raise ValueError(f"interval={interval} must be >= 1 (steps between snapshots)")
        if end_step is not None and end_step <= start_step:
            raise ValueError(f"end_step={end_step} must be > start_step={start_step}")
        merge_weights(method, 1, ema_alpha=ema_alpha)  # validates method and alpha
        self.window = window
        self.interval = interval
        self.method: MergeMethod = method
        self.ema_alpha = ema_alpha
        self.start_step = start_step
        self.end_step = end_step
        self.device = torch.device(device)
        self._snapshots: deque[dict[str, Tensor]] = deque(maxlen=window)
        self._steps: deque[int | None] = deque(maxlen=window)

    def __len__(self) -> int:
        return len(self._snapshots)

    @property
    def steps(self) -> list[int | None]:
        """Steps of the snapshots currently held, oldest first."""
        return list(self._steps)

    def should_snapshot(self, step: int) -> bool:
        """Whether `step` is a snapshot step: in [start_step, end_step) and on the interval."""
        in_range = step >= self.start_step and (self.end_step is None or step < self.end_step)
        return in_range and (step - self.start_step) % self.interval == 0

    def update(self, source: nn.Module | Mapping[str, Tensor], *, step: int | None = None) -> None:
        """Add a snapshot of `source` (a module or a state dict), dropping the oldest if full."""
        sd = source.state_dict() if isinstance(source, nn.Module) else source
        self._snapshots.append(
            {k: v.detach().to(device=self.device, copy=True) for k, v in sd.items()}
        )
        self._steps.append(step)

    def maybe_update(self, step: int, source: nn.Module | Mapping[str, Tensor]) -> bool:
        """Snapshot `source` if `should_snapshot(step)`; returns whether it did."""
        if not self.should_snapshot(step):
            return False
        self.update(source, step=step)
        return True

    def average(self) -> dict[str, Tensor]:
        """The merged state dict of the held snapshots (on `device`)."""
        if not self._snapshots:
            raise RuntimeError(
                "PMA holds no snapshots yet: call update()/maybe_update() during the stable "
                f"phase (start_step={self.start_step}, interval={self.interval}) first"
            )
        weights = merge_weights(self.method, len(self._snapshots), ema_alpha=self.ema_alpha)
        return average_state_dicts(list(self._snapshots), weights)

    def load_into(self, model: nn.Module) -> nn.Module:
        """Copy the merged weights into `model` (strict) and return it."""
        model.load_state_dict(self.average(), strict=True)
        return model
