"""PMA over checkpoint files: pick the stable-phase checkpoints, average them key by key."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from k2_dit.train._checkpoint import CONFIG_NAME, WEIGHTS_NAME, _read_payload

PathLike = str | os.PathLike[str]

_TRAILING_STEP = re.compile(r"(\d+)$")


def _weights_file(path: Path) -> Path:
    """The safetensors file of a `save_checkpoint` directory, or `path` itself."""
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(
                f"{path} is a directory without {WEIGHTS_NAME}; pass a folder written by "
                "k2_dit.train.save_checkpoint or a .safetensors file"
            )
        return weights
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; pass a save_checkpoint folder or a .safetensors file"
        )
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path} is not a .safetensors file; checkpoints are averaged from safetensors only "
            "(never pickle): pass a save_checkpoint folder or a .safetensors file"
        )
    return path


def _is_float(dtype: str) -> bool:
    # safetensors dtype tags: F64, F32, F16, BF16, F8_E4M3, F8_E5M2 are floating point;
    # BOOL, U8, I8, ..., I64 are not and are copied instead of averaged.
    return dtype.startswith("F") or dtype == "BF16"


def _normalised_weights(
    n: int, weights: Sequence[float] | None, ema_decay: float | None
) -> list[float]:
    if weights is not None and ema_decay is not None:
        raise ValueError("give either weights= or ema_decay=, not both")
    if ema_decay is not None:
        if not (math.isfinite(ema_decay) and 0.0 < ema_decay <= 1.0):
            raise ValueError(f"ema_decay={ema_decay!r} must lie in (0, 1]; 1 is a simple average")
        raw = [ema_decay ** (n - 1 - i) for i in range(n)]
    elif weights is None:
        raw = [1.0] * n
    else:
        raw = [float(x) for x in weights]
        if len(raw) != n:
            raise ValueError(f"got {len(raw)} weights for {n} checkpoints; give one weight each")
        if not all(math.isfinite(x) and x >= 0 for x in raw) or sum(raw) <= 0:
            raise ValueError(f"weights={raw} must be finite, >= 0 and have a positive sum")
    total = math.fsum(raw)
    return [x / total for x in raw]


def average_checkpoints(
    paths: Sequence[PathLike],
    weights: Sequence[float] | None = None,
    *,
    ema_decay: float | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Tensor]:
    """Weighted average Σ_i w_i·θ_i of checkpoint files, streamed one tensor at a time.

    All files are opened lazily with `safetensors.safe_open` (memory-mapped); their keys,
    shapes and dtypes are checked from the headers before anything is read. Then, for each
    key, the tensor of every file is read, added into a float32 (float64 for float64
    weights) accumulator and dropped, and the sum is stored in the checkpoints' dtype. At
    most one file's copy of one tensor is materialised at a time, so peak memory is the
    merged model plus one tensor, however many checkpoints are merged: PMA without the
    N-model cost of `average_state_dicts`. Integer/bool tensors are copied from the last
    (newest) file.

    Weights, oldest checkpoint first: `weights` (normalised), or with `ema_decay` = d the
    EMA weighting w_i ∝ d^(N-1-i), i = 0..N-1, so the newest has the largest weight and d = 1
    is the simple average; otherwise w_i = 1/N. (For the EMA recursion started at θ_1, whose
    oldest weight differs, pass `weights=merge_weights("ema", N, ema_alpha=1 - d)`.)

    Save the result by loading it into the model and calling `save_checkpoint`:
    `model.load_state_dict(merged); save_checkpoint(out, model, config)`.

    Args:
        paths: checkpoints, oldest first: `save_checkpoint` folders (their `model.safetensors`
            is read) or `.safetensors` files, mixed freely.
        weights: non-negative weights, one per checkpoint, with a positive sum.
        ema_decay: d in (0, 1]; exclusive with `weights`.
        device: where tensors are read to and accumulated.

    Returns:
        The merged state dict on `device`, keys in the first file's order.

    References:
        Li et al. 2025, "Model Merging in Pre-training of Large Language Models" (arXiv
        2505.12082), §3 (PMA: SMA, WMA, EMA); Wortsman et al. 2022, "Model soups", Eq. 1;
        Krea 2 report, Pretraining ("apply PMA").
    """
    if isinstance(paths, str | os.PathLike):
        raise TypeError(f"paths={paths!r} must be a sequence of checkpoints, not one path")
    files = [_weights_file(Path(p)) for p in paths]
    if not files:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    norm = _normalised_weights(len(files), weights, ema_decay)
    dev = str(torch.device(device))
    with ExitStack() as stack:
        handles = [
            stack.enter_context(safe_open(str(f), framework="pt", device=dev)) for f in files
        ]
        header = {k: handles[0].get_slice(k) for k in handles[0].keys()}  # noqa: SIM118
        spec = {k: (s.get_dtype(), list(s.get_shape())) for k, s in header.items()}
        for f, h in zip(files[1:], handles[1:], strict=True):
            _check_same_layout(files[0], spec, f, h)
        out: dict[str, Tensor] = {}
        for key, (dtype, _) in spec.items():
            if not _is_float(dtype):
                out[key] = handles[-1].get_tensor(key)
                continue
            acc: Tensor | None = None
            out_dtype = torch.float32
            for wi, h in zip(norm, handles, strict=True):
                if wi == 0.0:
                    continue
                # Read inside the expression so the file's tensor is freed right after the add.
                if acc is None:
                    theta = h.get_tensor(key)
                    out_dtype = theta.dtype
                    acc_dtype = torch.promote_types(out_dtype, torch.float32)
                    acc = theta.to(acc_dtype, copy=True).mul_(wi)
                    del theta
                else:
                    acc.add_(h.get_tensor(key).to(acc.dtype), alpha=wi)
            assert acc is not None  # weights have a positive sum
            out[key] = acc.to(out_dtype)
            del acc
    return out


def _check_same_layout(
    first: Path, spec: Mapping[str, tuple[str, list[int]]], path: Path, handle: Any
) -> None:
    keys = set(handle.keys())
    missing, extra = sorted(set(spec) - keys), sorted(keys - set(spec))
    if missing or extra:
        raise ValueError(
            f"{path} does not hold the same tensors as {first}: missing keys {missing}, extra "
            f"keys {extra}; only checkpoints of the same model can be averaged"
        )
    for key, (dtype, shape) in spec.items():
        s = handle.get_slice(key)
        if list(s.get_shape()) != shape:
            raise ValueError(
                f"{key!r} has shape {tuple(s.get_shape())} in {path} but {tuple(shape)} in "
                f"{first}; only checkpoints of the same model can be averaged"
            )
        if s.get_dtype() != dtype:
            raise ValueError(
                f"{key!r} is {s.get_dtype()} in {path} but {dtype} in {first}; save all "
                "checkpoints in one dtype (or convert them) before averaging"
            )


def _checkpoint_step(path: Path) -> int:
    """The training step of a checkpoint folder or weights file (see `pma_checkpoints`)."""
    folder = path if path.is_dir() else None
    if path.is_file() and path.name == WEIGHTS_NAME and (path.parent / CONFIG_NAME).is_file():
        folder = path.parent
    if folder is not None:
        step = _read_payload(folder).get("step")
        if step is None:
            raise ValueError(
                f"{folder / CONFIG_NAME} records no step (saved without step=); pass "
                "{step: path} to pma_checkpoints instead"
            )
        return int(step)
    weights = _weights_file(path)
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    if "step" in meta:
        try:
            return int(meta["step"])
        except ValueError as err:
            raise ValueError(f"{weights} has metadata step={meta['step']!r}, not an int") from err
    match = _TRAILING_STEP.search(weights.stem)
    if match is None:
        raise ValueError(
            f"cannot tell the training step of {weights}: it has no 'step' metadata and its "
            "name does not end in the step (e.g. step_004000.safetensors); pass {step: path}"
        )
    return int(match.group(1))


def pma_checkpoints(
    checkpoint_dirs_or_files: Sequence[PathLike] | Mapping[int, PathLike],
    *,
    last_n: int,
    interval: int,
    start_step: int = 0,
    end_step: int | None = None,
) -> list[Path]:
    """Choose PMA's checkpoints: the last `last_n` of the stable phase, `interval` steps apart.

    Only checkpoints with start_step <= step < end_step count (the constant-LR phase of a
    WSD schedule; see `wsd_phase_steps`). The window ends at the newest of them, s, and takes
    steps s - k·interval for k = last_n-1 .. 0; each must exist, so `interval` must be a
    multiple of the checkpoint spacing. Steps come from a `save_checkpoint` folder's
    `config.json` (also for its `model.safetensors`), else from a file's safetensors metadata
    `step`, else from the integer ending its name (`step_004000.safetensors`); or pass a
    mapping {step: path}.

    Args:
        checkpoint_dirs_or_files: checkpoints in any order, or a {step: path} mapping.
        last_n: number N of checkpoints merged (>= 1).
        interval: steps between merged checkpoints (>= 1).
        start_step: first step of the stable phase.
        end_step: first step after it (the decay's start), or None for no end.

    Returns:
        The chosen paths, oldest first, for `average_checkpoints`.

    References:
        Li et al. 2025 (arXiv 2505.12082), §3-4 (merging N checkpoints at interval V from the
        constant-LR phase); Krea 2 report, Pretraining ("tuning the number of merged
        checkpoints and the merge interval can yield slight gains").
    """
    if last_n < 1:
        raise ValueError(f"last_n={last_n} must be >= 1 (number of checkpoints merged)")
    if interval < 1:
        raise ValueError(f"interval={interval} must be >= 1 (steps between merged checkpoints)")
    if end_step is not None and end_step <= start_step:
        raise ValueError(f"end_step={end_step} must be > start_step={start_step}")
    if isinstance(checkpoint_dirs_or_files, Mapping):
        pairs = [(int(s), Path(p)) for s, p in checkpoint_dirs_or_files.items()]
    elif isinstance(checkpoint_dirs_or_files, str | os.PathLike):
        raise TypeError("checkpoint_dirs_or_files must be a sequence of checkpoints, not one path")
    else:
        pairs = [(_checkpoint_step(Path(p)), Path(p)) for p in checkpoint_dirs_or_files]
    by_step: dict[int, Path] = {}
    for step, path in pairs:
        if step in by_step:
            raise ValueError(f"{by_step[step]} and {path} are both step {step}; keep one")
        by_step[step] = path
    stable = sorted(s for s in by_step if s >= start_step and (end_step is None or s < end_step))
    if not stable:
        raise ValueError(
            f"no checkpoint lies in the stable phase [{start_step}, {end_step}); steps found: "
            f"{sorted(by_step)}"
        )
    wanted = [stable[-1] - k * interval for k in range(last_n - 1, -1, -1)]
    missing = [s for s in wanted if s not in by_step or s < start_step]
    if missing:
        raise ValueError(
            f"PMA with last_n={last_n}, interval={interval} ending at step {stable[-1]} needs "
            f"stable-phase checkpoints at steps {wanted}, but {missing} are missing (stable "
            f"steps found: {stable}); lower last_n or use a multiple of the checkpoint spacing"
        )
    return [by_step[s] for s in wanted]
