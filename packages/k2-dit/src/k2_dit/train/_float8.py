"""8-bit (float8) training through torchao, with a filter that keeps small layers in bf16."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Float8Recipe = Literal["tensorwise", "rowwise", "rowwise_with_gw_hp"]
"""torchao recipe names: `tensorwise` (the report at 256 px), `rowwise` (at 512 px)."""

Float8ModuleFilter = Callable[[nn.Module, str], bool]
"""`filter(module, fqn) -> bool`, torchao's `module_filter_fn` signature."""

FLOAT8_SKIP_FQNS: tuple[str, ...] = ("patch_embed", "final_proj", "conditioning", "modulation")
"""Name fragments kept in high precision: the DiT's first and last linear layers (they set
the input/output scale, as torchtitan keeps an LLM's `output` head out) and the per-sample
timestep/modulation MLPs, whose GEMMs have one row per image and cannot gain."""

_RECIPES = ("tensorwise", "rowwise", "rowwise_with_gw_hp")


class Float8SkippedWarning(UserWarning):
    """float8 conversion was skipped (no torchao, no CUDA or a GPU older than sm_89)."""


def _rejection(
    module: nn.Module, fqn: str, *, min_features: int, skip_fqns: Sequence[str]
) -> str | None:
    if not isinstance(module, nn.Linear):
        return "not an nn.Linear"
    hit = next((s for s in skip_fqns if s in fqn), None)
    if hit is not None:
        return f"name matches {hit!r}"
    k, n = module.in_features, module.out_features
    if k % 16 or n % 16:
        return f"{k}x{n} not divisible by 16 (float8 GEMM needs multiples of 16)"
    if min(k, n) < min_features:
        return f"{k}x{n} below min_features={min_features}"
    return None


def float8_module_filter(
    module: nn.Module,
    fqn: str,
    *,
    min_features: int = 1024,
    skip_fqns: Sequence[str] = FLOAT8_SKIP_FQNS,
) -> bool:
    """Whether torchao should swap this module for a float8 linear.

    True for an `nn.Linear` whose in and out features are both multiples of 16 (the float8
    GEMM's requirement) and both >= `min_features`, and whose qualified name contains none
    of `skip_fqns` (substring match, like torchtitan's `filter_fqns`). Small GEMMs get
    slower in float8 because the per-tensor/row scaling casts cost more than the faster
    matmul saves; torchao's H100 tables show no gain below about 1024 (rowwise needs more).

    Args:
        module: candidate module.
        fqn: its qualified name in the model.
        min_features: smallest in/out width worth converting.
        skip_fqns: name fragments never converted (default `FLOAT8_SKIP_FQNS`).

    Returns:
        True to convert.

    References:
        torchao `float8` README (performance by shape) and torchtitan `docs/float8.md`
        (`filter_fqns`, auto-filtering of small layers); Krea 2 report, Pretraining.
    """
    return _rejection(module, fqn, min_features=min_features, skip_fqns=skip_fqns) is None


@dataclass(frozen=True, kw_only=True)
class Float8Report:
    """What `convert_to_float8` did, or would have done."""

    converted: bool
    """Whether the model now holds float8 linears."""
    recipe: str
    """The torchao recipe."""
    modules: tuple[str, ...]
    """Linear layers selected for float8 (converted when `converted`)."""
    kept: tuple[tuple[str, str], ...]
    """Linear layers left in high precision, with the reason."""
    reason: str | None = None
    """Why conversion was skipped; None when it ran."""


def _float8_unavailable() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device (float8 GEMMs need an sm_89+ GPU: Ada, Hopper or newer)"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        return f"GPU compute capability {major}.{minor} < 8.9 has no float8 tensor cores"
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return "torchao is not installed (`pip install torchao`, or the k2-dit [gpu] extra)"
    return None


def convert_to_float8(
    model: nn.Module,
    *,
    recipe: Float8Recipe = "tensorwise",
    min_features: int = 1024,
    module_filter: Float8ModuleFilter | None = None,
) -> tuple[nn.Module, Float8Report]:
    """Swap the model's large linear layers for torchao float8 training linears, in place.

    Uses `torchao.float8.convert_to_float8_training` with
    `Float8LinearConfig.from_recipe_name(recipe)`. `tensorwise`: dynamic per-tensor scales,
    e4m3 activations/weights, e5m2 gradients; `rowwise`: per-row scales, e4m3 throughout,
    power-of-2 scales (finer, a little slower). Compile the model afterwards: torchao relies
    on `torch.compile` to fuse the casts. Without CUDA, on a GPU below sm_89 or without
    torchao, nothing is changed: a `Float8SkippedWarning` says why and the report still lists
    the layers that would have been converted.

    Args:
        model: the model (a `k2_dit.model.DiT` or any module).
        recipe: `tensorwise`, `rowwise` or `rowwise_with_gw_hp`.
        min_features: see `float8_module_filter` (ignored when `module_filter` is given).
        module_filter: replaces the default filter; called as `module_filter(module, fqn)`.

    Returns:
        (model, report); the model is the same object, converted in place when possible.

    References:
        torchao float8 training workflow; Krea 2 report, Pretraining ("At 256px we use 8-bit
        training with tensorwise scaling, and at 512px we use finer-grained rowwise scaling").
    """
    if recipe not in _RECIPES:
        raise ValueError(f"recipe={recipe!r} is not a torchao float8 recipe: use one of {_RECIPES}")
    if min_features < 16:
        raise ValueError(f"min_features={min_features} must be >= 16 (float8 GEMM granularity)")

    def default_filter(module: nn.Module, fqn: str) -> bool:
        return float8_module_filter(module, fqn, min_features=min_features)

    keep = module_filter if module_filter is not None else default_filter
    selected: list[str] = []
    kept: list[tuple[str, str]] = []
    for fqn, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if keep(module, fqn):
            selected.append(fqn)
        elif module_filter is not None:
            kept.append((fqn, "rejected by module_filter"))
        else:
            why = _rejection(module, fqn, min_features=min_features, skip_fqns=FLOAT8_SKIP_FQNS)
            kept.append((fqn, why or "rejected"))
    reason = _float8_unavailable()
    if reason is None and not selected:
        reason = "no linear layer passes the filter (lower min_features for small models)"
    if reason is not None:
        warnings.warn(
            f"float8 training skipped, model left in high precision: {reason}; "
            f"{len(selected)} linear layers would have been converted",
            Float8SkippedWarning,
            stacklevel=2,
        )
        return model, Float8Report(
            converted=False, recipe=recipe, modules=tuple(selected), kept=tuple(kept), reason=reason
        )

    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    chosen = set(selected)
    converted = convert_to_float8_training(
        model,
        config=Float8LinearConfig.from_recipe_name(recipe),
        module_filter_fn=lambda module, fqn: fqn in chosen,
    )
    return converted, Float8Report(
        converted=True, recipe=recipe, modules=tuple(selected), kept=tuple(kept)
    )
