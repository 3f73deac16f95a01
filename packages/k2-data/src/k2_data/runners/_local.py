"""Map a per-shard stage over shards with a local process pool."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

R = TypeVar("R")


def check_picklable(stage_fn: Callable) -> None:
    """Raise a clear error when `stage_fn` cannot be sent to worker processes."""
    try:
        pickle.dumps(stage_fn)
    except Exception as error:
        raise TypeError(
            f"stage_fn {stage_fn!r} cannot be pickled ({error}); pass a module-level function "
            "or functools.partial of one (e.g. partial(run_cpu_tier, out_dir=...)), not a "
            "lambda or a function defined inside another"
        ) from error


def _module_of(stage_fn: Callable) -> str | None:
    func = getattr(stage_fn, "func", stage_fn)  # functools.partial
    module = getattr(func, "__module__", None)
    return module if module not in (None, "__main__", "__mp_main__") else None


class StageFailedError(RuntimeError):
    """Some shards raised; the others finished and their outputs are saved (rerun resumes)."""


def _raise_failures(failures: list[tuple[str, BaseException]], total: int) -> None:
    lines = "\n".join(f"  {shard}: {type(e).__name__}: {e}" for shard, e in failures[:10])
    raise StageFailedError(
        f"{len(failures)} of {total} shards failed (finished shards are saved; fix the cause "
        f"and rerun to resume):\n{lines}"
    ) from failures[0][1]


def run_local(
    stage_fn: Callable[[str], R],
    shards: Sequence[str | os.PathLike],
    *,
    workers: int | None = None,
    start_method: str = "forkserver",
) -> list[R]:
    """Run ``stage_fn(shard)`` for every shard on a local process pool; results in shard order.

    Resuming is the stage's job: a stage such as `k2_data.stages.run_cpu_tier` skips
    shards whose output is complete and redoes half-written ones, so rerunning the same
    call after a crash or kill only computes what is missing. A shard that raises does not
    stop the others; after all have run, `StageFailedError` names the failed shards.

    Args:
        stage_fn: picklable callable taking a shard path (str); e.g.
            ``functools.partial(run_cpu_tier, out_dir=...)``.
        shards: shard paths.
        workers: worker processes (None: the CPUs this process may use). 1 runs in this
            process, which is easiest to debug and profile.
        start_method: multiprocessing start method of the workers. ``forkserver`` (default)
            and ``spawn`` never fork a process that holds Arrow or BLAS threads.

    Returns:
        ``stage_fn``'s results, in the order of `shards`.
    """
    paths = [os.fspath(s) for s in shards]
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if len(set(paths)) != len(paths):
        raise ValueError("shards repeat; pass each shard once")
    results: list = [None] * len(paths)
    failures: list[tuple[str, BaseException]] = []
    if workers == 1 or len(paths) <= 1:
        for i, path in enumerate(paths):
            try:
                results[i] = stage_fn(path)
            except Exception as error:
                failures.append((path, error))
    else:
        check_picklable(stage_fn)
        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Imports paid once by the fork server instead of by every worker (a no-op when
            # the server already runs: it persists for the life of this process).
            preload = ["k2_data.runners._warm", _module_of(stage_fn)]
            context.set_forkserver_preload([m for m in preload if m is not None])
        with ProcessPoolExecutor(min(workers, len(paths)), mp_context=context) as pool:
            futures = {pool.submit(stage_fn, path): i for i, path in enumerate(paths)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as error:
                    failures.append((paths[i], error))
    if failures:
        _raise_failures(failures, len(paths))
    return results
