"""Precomputed teacher features: one safetensors file per data shard, keyed by sample."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from k2_dit.repa._teacher import PatchTeacher


def cache_teacher_features(
    teacher: PatchTeacher,
    batches: Iterable[tuple[Sequence[str], Tensor]],
    path: str | os.PathLike[str],
    *,
    grid: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> int:
    """Run the teacher once over `(keys, images)` batches and store the tokens in safetensors.

    Each sample is stored under its key as [rows, cols, e], so the grid travels with the
    tensor. The file is written to a temporary name and renamed, so a crash never leaves a
    half-written cache. Meant for one data shard per file (all of it is held in memory).

    Args:
        teacher: the frozen encoder.
        batches: pairs of sample keys and RGB images [b, 3, h, w] in [0, 1].
        path: output `.safetensors` file.
        grid: resize every image onto this patch grid (see `PatchTeacher.forward`).
        dtype: storage dtype.

    Returns:
        Number of samples written.
    """
    from safetensors.torch import save_file

    out: dict[str, Tensor] = {}
    for keys, images in batches:
        tokens, (gh, gw) = teacher(images, grid=grid)
        if len(keys) != tokens.shape[0]:
            raise ValueError(f"{len(keys)} keys for a batch of {tokens.shape[0]} images")
        for key, sample in zip(keys, tokens, strict=True):
            if key in out:
                raise ValueError(f"sample key {key!r} appears twice: keys must be unique")
            out[key] = sample.reshape(gh, gw, -1).to(dtype).contiguous().cpu()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(out, tmp)
    os.replace(tmp, path)
    return len(out)


def load_teacher_features(
    path: str | os.PathLike[str], keys: Sequence[str], *, device: torch.device | str = "cpu"
) -> tuple[Float[Tensor, "b n e"], tuple[int, int]]:
    """Read cached teacher tokens for `keys` (one aspect bucket: all on one grid).

    Args:
        path: a file written by `cache_teacher_features`.
        keys: sample keys, in batch order.
        device: where to put the tokens.

    Returns:
        (tokens [b, rows·cols, e], (rows, cols)).
    """
    from safetensors import safe_open

    if not keys:
        raise ValueError("keys is empty: pass the sample keys of the batch")
    rows: list[Tensor] = []
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        stored = set(f.keys())
        for key in keys:
            if key not in stored:
                raise KeyError(f"{key!r} is not in the teacher cache {path}: re-run the cache")
            rows.append(f.get_tensor(key))
    grids = {tuple(r.shape[:2]) for r in rows}
    if len(grids) != 1:
        raise ValueError(f"keys span several grids {sorted(grids)}: batch one aspect bucket")
    (gh, gw) = grids.pop()
    return torch.stack([r.reshape(gh * gw, -1) for r in rows]), (gh, gw)
