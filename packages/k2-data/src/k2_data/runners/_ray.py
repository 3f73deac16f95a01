"""Map a per-shard stage over shards with Ray Data ``map_batches``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

R = TypeVar("R")


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError(
            "run_ray needs Ray Data; install it with `pip install 'k2-data[ray]'`"
        ) from error
    return ray


class _ApplyStage:
    """The map_batches function: calls the stage on each shard of a batch (picklable)."""

    def __init__(self, stage_fn: Callable[[str], Any]) -> None:
        self.stage_fn = stage_fn

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = np.empty(len(batch["shard"]), dtype=object)
        results[:] = [self.stage_fn(str(shard)) for shard in batch["shard"]]
        return {"index": batch["index"], "result": results}


def run_ray(
    stage_fn: Callable[[str], R],
    shards: Sequence[str | os.PathLike],
    *,
    num_cpus: float = 1.0,
    concurrency: int | None = None,
) -> list[R]:
    """Run ``stage_fn(shard)`` for every shard as a Ray Data ``map_batches``; results in order.

    The same stage functions as `run_local`, so outputs are identical; each shard is one
    Ray Data row (one block per shard, batch size 1) and one task, so Ray schedules shards
    across the cluster and retries failed tasks; stages write atomically and skip complete
    outputs, so a retried or resumed shard is safe. Shard paths must be readable from every
    node (shared filesystem or object store mount). Connects to the running Ray instance
    (``ray.init(address=...)`` first for a cluster), or starts a local one.

    Args:
        stage_fn: a callable taking a shard path (str), serialisable by Ray (cloudpickle).
        shards: shard paths.
        num_cpus: CPUs reserved per shard task.
        concurrency: cap on concurrent tasks (None: as many as the cluster's CPUs allow).

    Returns:
        ``stage_fn``'s results, in the order of `shards`.
    """
    ray = _import_ray()
    paths = [os.fspath(s) for s in shards]
    if not paths:
        return []
    if len(set(paths)) != len(paths):
        raise ValueError("shards repeat; pass each shard once")
    items = [{"index": i, "shard": path} for i, path in enumerate(paths)]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    mapped = dataset.map_batches(
        _ApplyStage(stage_fn),
        batch_size=1,
        batch_format="numpy",
        num_cpus=num_cpus,
        concurrency=concurrency,
    )
    results: list = [None] * len(paths)
    for row in mapped.take_all():
        results[int(row["index"])] = row["result"]
    return results
