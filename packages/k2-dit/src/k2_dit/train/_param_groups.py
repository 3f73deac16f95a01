"""Optimizer parameter groups: AdamW weight-decay split and the Muon/AdamW split."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from k2_dit.conditioning import Modulation
from k2_dit.train._muon import BatchedMuon

ParamPredicate = Callable[[str, nn.Parameter], bool]
"""`predicate(qualified_name, parameter) -> bool`."""

_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
_NORMS = (
    nn.LayerNorm,
    nn.RMSNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
)


def _is_norm(module: nn.Module) -> bool:
    # Custom norms (e.g. the zero-centred RMSNorm(1 + w) of k2_dit.blocks) are recognised
    # by class name, since they do not subclass torch's norms.
    return isinstance(module, _NORMS) or "norm" in type(module).__name__.lower()


def _is_modulation_table(local: str, module: nn.Module) -> bool:
    # The report's "per-block tunable bias" (Modulation.table, rows × dim): a bias, so no
    # decay, although it is 2-D and not named *bias.
    return isinstance(module, Modulation) and local == "table"


def _named_trainable(model: nn.Module) -> Iterator[tuple[str, str, nn.Module, nn.Parameter]]:
    """(qualified name, local name, owning module, parameter); shared parameters once."""
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            yield (f"{mod_name}.{local}" if mod_name else local), local, module, p


def _decays(
    name: str,
    local: str,
    module: nn.Module,
    p: nn.Parameter,
    *,
    decay_norm_gains: bool,
    no_decay: ParamPredicate | None,
) -> bool:
    if no_decay is not None and no_decay(name, p):
        return False
    if local.endswith("bias") or isinstance(module, _EMBEDDINGS):
        return False
    if _is_modulation_table(local, module):
        return False
    if _is_norm(module):
        return decay_norm_gains
    return p.ndim >= 2


def _split_decay(
    entries: Sequence[tuple[str, str, nn.Module, nn.Parameter]],
    *,
    weight_decay: float,
    decay_norm_gains: bool,
    no_decay: ParamPredicate | None,
) -> list[dict[str, Any]]:
    decay: list[tuple[str, nn.Parameter]] = []
    keep: list[tuple[str, nn.Parameter]] = []
    for name, local, module, p in entries:
        flag = _decays(name, local, module, p, decay_norm_gains=decay_norm_gains, no_decay=no_decay)
        (decay if flag else keep).append((name, p))
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    return groups


def adamw_param_groups(
    model: nn.Module,
    *,
    weight_decay: float,
    decay_norm_gains: bool = True,
    no_decay: ParamPredicate | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices (and norm gains), none on biases and tables.

    No decay: every `*bias`, `nn.Embedding`/`nn.EmbeddingBag` tables, the modulation tables
    of `k2_dit.conditioning.Modulation` (the report's per-block tunable bias: a bias of
    shape (rows, dim), so it is treated like one), other parameters with fewer than 2 dims,
    and anything `no_decay(name, p)` selects. Decay: parameters with
    >= 2 dims, and the gains of norm modules (torch norms and any module whose class name
    contains "Norm") when `decay_norm_gains`. The default decays norm gains because the
    report's RMSNorm is zero-centred (y = x/rms·(1 + w)): decay pulls w to 0, i.e. the gain
    to 1. Set it to False for norms whose gain starts at 1 (decay would pull it to 0).

    Args:
        model: the module to optimise (frozen parameters are skipped).
        weight_decay: decay of the decayed group.
        decay_norm_gains: whether norm gains are decayed.
        no_decay: extra `predicate(name, p)` for parameters that must not be decayed (e.g.
            learned position tables stored as raw parameters).

    Returns:
        Up to two groups, `{"params": [(name, p), ...], "weight_decay": ...}`; torch
        optimizers record the names as `param_names`.

    References:
        Loshchilov & Hutter 2019 (AdamW); Krea 2 report, Architecture ("zero-centered
        RMSNorm and apply weight decay to its learnable parameters").
    """
    return _split_decay(
        list(_named_trainable(model)),
        weight_decay=weight_decay,
        decay_norm_gains=decay_norm_gains,
        no_decay=no_decay,
    )


@dataclass(frozen=True, kw_only=True)
class MuonParamGroups:
    """Parameters split between `torch.optim.Muon` (hidden matrices) and AdamW (the rest)."""

    muon: list[dict[str, Any]]
    adamw: list[dict[str, Any]]

    @property
    def muon_names(self) -> list[str]:
        return [n for g in self.muon for n, _ in g["params"]]

    @property
    def adamw_names(self) -> list[str]:
        return [n for g in self.adamw for n, _ in g["params"]]


def _exclusion(exclude: Sequence[str] | ParamPredicate, names: list[str]) -> ParamPredicate:
    if callable(exclude):
        return exclude
    if isinstance(exclude, str):
        raise TypeError(f"exclude={exclude!r} must be a sequence of names, not one string")
    prefixes = tuple(exclude)
    for prefix in prefixes:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            raise ValueError(
                f"exclude entry {prefix!r} matches no trainable parameter; use a parameter "
                f"or module name such as {names[:6]}"
            )
    return lambda name, _p: any(name == q or name.startswith(q + ".") for q in prefixes)


def muon_param_groups(
    model: nn.Module,
    *,
    exclude: Sequence[str] | ParamPredicate | None = None,
    weight_decay: float = 0.0,
    decay_norm_gains: bool = True,
    no_decay: ParamPredicate | None = None,
    hidden_matrix: ParamPredicate | None = None,
) -> MuonParamGroups:
    """Split parameters: 2-D hidden matrices to Muon; first/last layers and the rest to AdamW.

    Muon gets the `weight` of every `nn.Linear` (or whatever `hidden_matrix` selects; it
    must be 2-D) that `exclude` does not name. Everything else (excluded layers, biases,
    norms, embedding tables, modulation vectors, conv kernels) goes to AdamW, split by
    the rules of `adamw_param_groups`. There is no guess at which layers are the first and
    last: by default the model declares them through `model.adamw_linear_names()` (as
    `k2_dit.model.DiT` does: patch embedding, final projection and the text/timestep input
    projections); any other model must pass `exclude`.

    For the default `DiT` this gives the issue's split: Muon takes every attention and MLP
    matrix of the blocks and of the text adapter, the timestep MLP's second layer and the
    shared modulation projection; AdamW takes the excluded linears (decayed), the
    zero-centred norm gains (decayed), and biases, embeddings and modulation tables (not
    decayed).

    Args:
        model: the module to optimise.
        exclude: module or parameter names (a name also matches everything under it), or
            a predicate `exclude(name, p)`. Every name must match a parameter, which catches
            typos and renamed layers. None (default) uses `model.adamw_linear_names()`.
        weight_decay: decay of the Muon group and of AdamW's decayed group.
        decay_norm_gains: see `adamw_param_groups`.
        no_decay: see `adamw_param_groups`.
        hidden_matrix: optional predicate replacing "weight of an nn.Linear".

    Returns:
        `MuonParamGroups(muon=[...], adamw=[...])` of `(name, p)` groups.

    References:
        Jordan et al. 2024, "Muon"; Liu et al. 2025, "Muon is Scalable for LLM Training"
        (Moonlight), §2; Krea 2 report, Architecture ("crucial to exclude the first and last
        linear layers of the MMDiT from the Muon parameters").
    """
    if exclude is None:
        declared = getattr(model, "adamw_linear_names", None)
        if not callable(declared):
            raise TypeError(
                f"{type(model).__name__} has no adamw_linear_names() method, so "
                "muon_param_groups cannot tell its first and last linear layers: pass "
                "exclude=('<first linear>', '<last linear>', ...) explicitly"
            )
        exclude = tuple(declared())
    entries = list(_named_trainable(model))
    excluded = _exclusion(exclude, [e[0] for e in entries])
    muon: list[tuple[str, nn.Parameter]] = []
    rest = []
    for entry in entries:
        name, local, module, p = entry
        hidden = (
            hidden_matrix(name, p)
            if hidden_matrix is not None
            else isinstance(module, nn.Linear) and local == "weight"
        )
        if hidden and not excluded(name, p):
            if p.ndim != 2:
                raise ValueError(
                    f"{name} has shape {tuple(p.shape)}; Muon only takes 2-D matrices, so "
                    "`hidden_matrix` must not select it"
                )
            muon.append((name, p))
        else:
            rest.append(entry)
    muon_groups = [{"params": muon, "weight_decay": weight_decay}] if muon else []
    adamw_groups = _split_decay(
        rest, weight_decay=weight_decay, decay_norm_gains=decay_norm_gains, no_decay=no_decay
    )
    return MuonParamGroups(muon=muon_groups, adamw=adamw_groups)


def muon_adamw_optimizers(
    groups: MuonParamGroups,
    *,
    lr: float,
    adamw_lr: float | None = None,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    momentum: float = 0.95,
    nesterov: bool = True,
    adjust_lr_fn: str | None = "match_rms_adamw",
    batched: bool = False,
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Build `torch.optim.Muon` and `torch.optim.AdamW` over a `muon_param_groups` split.

    The defaults follow the report: Moonlight's RMS matching (`match_rms_adamw`, update
    scaled by 0.2·sqrt(max(A, B)) so AdamW's LR and weight decay carry over) and Nesterov
    momentum. Step both optimizers (and both schedulers) every iteration.

    Args:
        groups: the split from `muon_param_groups`.
        lr: learning rate of both optimizers (RMS matching makes one LR work for both).
        adamw_lr: optional different LR for the AdamW part.
        betas: AdamW betas.
        eps: AdamW epsilon.
        momentum: Muon momentum.
        nesterov: Muon Nesterov momentum.
        adjust_lr_fn: Muon's LR adjustment (`match_rms_adamw`, `original` or None).
        batched: use `BatchedMuon` (the same rule, one batched Newton-Schulz per shape:
            faster for many small matrices on one device; not for FSDP2-sharded
            parameters, which keep `torch.optim.Muon`).

    Returns:
        (muon, adamw).

    References:
        Liu et al. 2025 (Moonlight), Eq. 4 (update RMS matching); Krea 2 report,
        Architecture ("the RMS-matched setting from Moonlight", "adding Nesterov momentum").
    """
    muon_cls = BatchedMuon if batched else getattr(torch.optim, "Muon", None)
    if muon_cls is None:
        raise ImportError(
            f"torch.optim.Muon is not in torch {torch.__version__}; it needs torch >= 2.9"
        )
    if not groups.muon:
        raise ValueError("the Muon split holds no matrices: check `exclude`/`hidden_matrix`")
    if not groups.adamw:
        raise ValueError("the AdamW split is empty: exclude at least the first and last layers")
    # Optimizers rewrite the group dicts they are given; pass copies so `groups` stays usable.
    muon = muon_cls(
        [dict(g) for g in groups.muon],
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        adjust_lr_fn=adjust_lr_fn,
    )
    adamw = torch.optim.AdamW(
        [dict(g) for g in groups.adamw],
        lr=lr if adamw_lr is None else adamw_lr,
        betas=betas,
        eps=eps,
    )
    return muon, adamw


def build_optimizers(
    model: nn.Module,
    *,
    optimizer: Literal["adamw", "muon"],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    exclude: Sequence[str] | None = None,
    batched: bool = False,
) -> list[torch.optim.Optimizer]:
    """AdamW alone, or Muon on hidden matrices plus AdamW on the rest (the groups above).

    Under FSDP2, build after wrapping (the parameters become shards) and pass `exclude` taken
    from the plain model; Muon's Newton-Schulz step then runs on the DTensor shards through
    DTensor's redistribution, which is correct but gathers each matrix on every rank (a
    sharded Muon, dion, is the scalable path).

    Args:
        model: the model (wrapped or not).
        optimizer: `adamw` or `muon`.
        lr: learning rate (shared; Muon uses `match_rms_adamw` so one LR fits both).
        weight_decay: decoupled weight decay (norm gains included: they are zero-centred).
        betas: AdamW betas.
        exclude: linear layers kept on AdamW under Muon; None: `model.adamw_linear_names()`.
        batched: `BatchedMuon` instead of `torch.optim.Muon` (one device, many small
            matrices; not for FSDP2 shards).

    Returns:
        The optimizers to step every iteration.
    """
    if optimizer == "adamw":
        groups = adamw_param_groups(model, weight_decay=weight_decay)
        return [torch.optim.AdamW(groups, lr=lr, betas=betas)]
    if optimizer == "muon":
        split = muon_param_groups(model, exclude=exclude, weight_decay=weight_decay)
        return list(muon_adamw_optimizers(split, lr=lr, betas=betas, batched=batched))
    raise ValueError(f"optimizer={optimizer!r} must be 'adamw' or 'muon'")
