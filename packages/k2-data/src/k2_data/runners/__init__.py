"""Run one per-shard stage function over many shards: a local process pool or Ray Data.

A stage function takes a shard path and returns a result (e.g.
``functools.partial(k2_data.stages.run_cpu_tier, out_dir=...)``); it writes its own
output atomically and skips complete outputs, so both runners resume by simply being run
again. `run_local` uses ``concurrent.futures.ProcessPoolExecutor`` (one machine);
`run_ray` the same functions as Ray Data ``map_batches`` (many machines; needs the
``k2-data[ray]`` extra). No home-made cluster code. See docs/k2-data-pipeline.md.
"""

from k2_data.runners._local import StageFailedError, check_picklable, run_local
from k2_data.runners._ray import run_ray

__all__ = ["StageFailedError", "check_picklable", "run_local", "run_ray"]
