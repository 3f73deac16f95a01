"""Per-shard stage functions and the global steps that gather their outputs.

`run_cpu_tier(shard, out_dir, ...)` is the report's cheap CPU tier on one WebDataset shard:
decode each image once (JPEG draft when the statistic size allows), compute every filter
statistic, md5 of the bytes, 12x12 phash and colorhash from those same pixels, decide keep /
drop, and write one Parquet per shard keyed by ``__key__`` (atomically; finished shards are
skipped, changed thresholds re-decided without decoding). `run_dedup` gathers those Parquets
into one keep/drop table. Stage functions take a shard path and return a `StageResult`, so
`k2_data.runners` can map them over shards locally or on Ray Data. See
docs/k2-data-pipeline.md.
"""

from k2_data.stages._cpu_tier import (
    CPU_TIER_STAGE,
    cpu_tier_schema,
    cpu_tier_table,
    decide_cpu_tier,
    run_cpu_tier,
)
from k2_data.stages._dedup import DEDUP_OUTPUT_SCHEMA, DEDUP_STAGE, run_dedup
from k2_data.stages._result import StageResult, StageStatus
from k2_data.stages._settings import DEFAULT_MAX_PIXELS, CpuTierSettings

__all__ = [
    "CPU_TIER_STAGE",
    "DEDUP_OUTPUT_SCHEMA",
    "DEDUP_STAGE",
    "DEFAULT_MAX_PIXELS",
    "CpuTierSettings",
    "StageResult",
    "StageStatus",
    "cpu_tier_schema",
    "cpu_tier_table",
    "decide_cpu_tier",
    "run_cpu_tier",
    "run_dedup",
]
