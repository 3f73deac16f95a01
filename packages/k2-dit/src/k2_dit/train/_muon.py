"""Muon with the Newton-Schulz iteration batched over matrices of equal shape."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""Keller Jordan's quintic coefficients (also `torch.optim.Muon`'s defaults)."""


def newton_schulz(
    g: Float[Tensor, "*batch m n"],
    *,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    steps: int = 5,
    eps: float = 1e-7,
    dtype: torch.dtype | None = torch.bfloat16,
) -> Float[Tensor, "*batch m n"]:
    """Approximate orthogonalisation U Vᵀ of each matrix G = U S Vᵀ by the quintic iteration.

    Each matrix is scaled to unit Frobenius norm, transposed to be wide (m ≤ n) so the Gram
    matrix is the small side, then iterated X ← a·X + (b·A + c·A²)·X with A = X Xᵀ. The
    coefficients push singular values toward [0.7, 1.2] rather than exactly 1 (Jordan 2024).
    All matrices of a batch go through one batched matmul per product, which is what makes it
    faster than a loop over small matrices.

    Args:
        g: one or more matrices (leading axes are batch axes).
        coefficients: (a, b, c) of the quintic.
        steps: iterations.
        eps: floor of the Frobenius norm (a zero matrix stays zero).
        dtype: compute dtype (bfloat16 as in `torch.optim.Muon`; None keeps g's dtype, e.g.
            float64 for reference checks).

    Returns:
        The iterate, in the compute dtype, with g's shape.

    References:
        Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"
        (`zeropower_via_newtonschulz5`); Bernstein & Newhouse 2024, "Old optimizer, new norm".
    """
    if g.ndim < 2:
        raise ValueError(f"newton_schulz needs matrices, got shape {tuple(g.shape)}")
    if steps < 1 or steps >= 100:
        raise ValueError(f"steps={steps} must be in [1, 100)")
    a, b, c = coefficients
    x = g.to(dtype=dtype or g.dtype, copy=True)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    lead = x.shape[:-2]
    x = x.reshape(-1, *x.shape[-2:])
    x = x / torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.baddbmm(x, update, x, beta=a)
    x = x.reshape(*lead, *x.shape[-2:])
    return x.mT if tall else x


def _adjusted_lr(lr: float, rule: str | None, shape: torch.Size) -> float:
    rows, cols = shape
    if rule is None:
        return lr
    if rule == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"adjust_lr_fn={rule!r} must be 'original', 'match_rms_adamw' or None")


class BatchedMuon(torch.optim.Optimizer):
    """`torch.optim.Muon`'s update with one batched Newton-Schulz per group of equal shapes.

    Per 2-D parameter W with gradient G and momentum buffer M (zero at the start):
    M ← μ·M + (1 − μ)·G; U = (1 − μ)·G + μ·M with Nesterov, else M; W ← (1 − η·λ)·W −
    η'·NS(U), where η' = η·0.2·sqrt(max(A, B)) under `match_rms_adamw` (Moonlight's RMS
    matching) and NS is `newton_schulz`. This is exactly `torch.optim.Muon`'s rule; the
    difference is speed: models with many small matrices (the tiny DiT has 43, in eight
    shapes) spend most of a looped Muon step in per-matrix kernel launches, and here every
    shape runs its momentum, iteration and update as a handful of batched/foreach kernels.

    Args:
        params: 2-D parameters (or groups / (name, parameter) pairs as for any optimizer).
        lr: learning rate η.
        weight_decay: decoupled weight decay λ (applied as W ← (1 − η·λ)·W).
        momentum: μ.
        nesterov: Nesterov momentum.
        ns_coefficients: (a, b, c) of the quintic.
        eps: Frobenius-norm floor.
        ns_steps: Newton-Schulz iterations.
        adjust_lr_fn: `match_rms_adamw`, `original` (sqrt(max(1, A/B))) or None.
        ns_dtype: dtype of the iteration (bfloat16 like torch's; None: the gradient's).

    References:
        Jordan et al. 2024, "Muon"; Liu et al. 2025, "Muon is Scalable for LLM Training"
        (Moonlight), Eq. 4; `torch.optim.Muon` (the rule this reproduces).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        ns_dtype: torch.dtype | None = torch.bfloat16,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1:
            raise ValueError(
                f"BatchedMuon needs lr >= 0, weight_decay >= 0 and 0 <= momentum < 1 "
                f"(got {lr}, {weight_decay}, {momentum})"
            )
        _adjusted_lr(lr, adjust_lr_fn, torch.Size((1, 1)))  # validates the rule name
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            ns_dtype=ns_dtype,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        f"BatchedMuon only takes 2-D matrices, got a parameter of shape "
                        f"{tuple(p.shape)}: put it in an AdamW group (muon_param_groups does)"
                    )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            buckets: dict[tuple, list[Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        raise RuntimeError("BatchedMuon does not support sparse gradients")
                    buckets[(p.shape, p.dtype, p.device)].append(p)
            for (shape, _, _), params in buckets.items():
                self._update(params, shape, group)
        return loss

    def _update(self, params: list[Tensor], shape: torch.Size, group: dict[str, Any]) -> None:
        mu = group["momentum"]
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            bufs.append(state["momentum_buffer"])
        torch._foreach_lerp_(bufs, grads, 1 - mu)
        updates = torch._foreach_lerp(grads, bufs, mu) if group["nesterov"] else bufs
        ortho = newton_schulz(
            torch.stack(updates),
            coefficients=group["ns_coefficients"],
            steps=group["ns_steps"],
            eps=group["eps"],
            dtype=group["ns_dtype"],
        ).to(params[0].dtype)
        lr = group["lr"]
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        step_size = _adjusted_lr(lr, group["adjust_lr_fn"], shape)
        torch._foreach_add_(params, list(ortho.unbind(0)), alpha=-step_size)
