"""`run_curate`: shards with injected faults -> CPU tier -> dedup -> clusters -> kept scenes."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from k2_data.io import write_parquet_atomic
from k2_data.runners import run_local
from k2_data.stages import run_dedup
from k2_data.synthetic import Scene, WorldConfig, sample_scene
from k2_recipes.curate._accounting import (
    catch_summary,
    clean_drops,
    drop_counts,
    duplicate_groups,
    fault_table,
    near_duplicate_distances,
    reason_stage,
)
from k2_recipes.curate._clusters import ClusterBalance, cluster_kept
from k2_recipes.curate._faults import Slot, plan_layout
from k2_recipes.curate._shards import ShardJob, ShardOutcome, curate_shard, filter_shard
from k2_recipes.presets import CurateConfig, WorldSettings
from k2_recipes.rundir import RunDir
from k2_recipes.world import world_config

CURATE_STAGE = "curate"
_SHARD_FIELDS = ("world", "resolution", "jpeg_quality", "samples_per_shard", "faults", "seed")
"""Config fields that change the shards' bytes. A rerun that changes only others (thresholds,
radii, clusters, workers) reuses the shards: the CPU tier re-decides its saved statistics,
and the embeddings are redone only if the set of samples the tier keeps changed."""


@dataclass
class CurateResult:
    """The curated training set and everything the report says about how it was made.

    Attributes:
        scenes: the kept samples' scenes, in key order, redrawn from the seeds in their
            ``.json`` sidecars (a near-duplicate that slipped through brings its source's
            scene); `run_pretrain(..., scenes=...)` in `k2 demo` trains on exactly these.
        keys: the ``__key__`` of each kept sample (aligned with `scenes`).
        manifest: one row per input sample (keep, reason, stage, keeper, injected kind,
            cluster, balanced-sample flag); also `curate/manifest.parquet`.
        out_dir: the `curate/` directory of the run.
    """

    scenes: list[Scene]
    keys: list[str]
    manifest: pa.Table
    out_dir: Path
    catch: dict[str, Any]
    fault_rows: list[dict[str, Any]]
    drop_rows: list[dict[str, Any]]
    clean_drop_rows: list[dict[str, Any]]
    groups: dict[str, Any]
    distance_rows: list[dict[str, Any]]
    balance: ClusterBalance
    timings: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.timings["total"]

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers for summary.json / curate.json."""
        return {
            "samples": self.manifest.num_rows,
            "kept": len(self.keys),
            "scenes": len(self.scenes),
            "catch": self.catch,
            "faults": self.fault_rows,
            "drops": self.drop_rows,
            "clean_drops": self.clean_drop_rows,
            "duplicate_groups": self.groups,
            "near_duplicate_distances": self.distance_rows,
            "clusters": {
                "levels": self.balance.levels,
                "top": self.balance.top_rows,
                "cluster_sizes": self.balance.size_stats,
            },
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "settings": self.settings,
        }


def _fingerprint(cfg: CurateConfig) -> dict[str, Any]:
    full = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    return {k: v for k, v in full.items() if k in _SHARD_FIELDS}


def _prepare(out: Path, cfg: CurateConfig) -> None:
    """Keep `out` when its shards were made by the same settings; otherwise start afresh."""
    marker = out / "config.json"
    wanted = _fingerprint(cfg)
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) != wanted:
        shutil.rmtree(out)  # outputs of another config: stale shards must not be reused
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _injected_table(job: ShardJob) -> pa.Table:
    slots: tuple[Slot, ...] = job.slots
    return pa.table(
        {
            "__key__": [job.key(i) for i in range(len(slots))],
            "kind": [s.kind for s in slots],
            "variant": [s.variant for s in slots],
            "source": [job.key(s.source) if s.source >= 0 else None for s in slots],
            "scene_index": [s.scene for s in slots],
        }
    )


def _check_accounting(dedup: pa.Table, injected: pa.Table) -> None:
    got, wanted = dedup["__key__"].to_pylist(), injected["__key__"].to_pylist()
    if len(got) != len(set(got)) or set(got) != set(wanted):
        missing = sorted(set(wanted) - set(got))[:5]
        extra = sorted(set(got) - set(wanted))[:5]
        raise RuntimeError(
            f"curation lost track of samples: {len(wanted)} written, {len(got)} rows "
            f"(missing e.g. {missing}, unexpected e.g. {extra}); delete the run's curate/ "
            "directory and rerun"
        )


def _manifest(dedup: pa.Table, injected: pa.Table, embeds: pa.Table) -> pa.Table:
    def aligned(table: pa.Table, column: str) -> list[Any]:
        by_key = dict(zip(table["__key__"].to_pylist(), table[column].to_pylist(), strict=True))
        return [by_key.get(k) for k in dedup["__key__"].to_pylist()]

    reasons = dedup["reason"].to_pylist()
    columns: dict[str, Any] = {
        "__key__": dedup["__key__"],
        "__shard__": dedup["__shard__"],
        "keep": dedup["keep"],
        "reason": dedup["reason"],
        "stage": pa.array([reason_stage(r) for r in reasons], pa.string()),
        "keeper": dedup["keeper"],
    }
    for name in ("kind", "variant", "source"):
        columns[name] = pa.array(aligned(injected, name), pa.string())
    columns["scene_seed"] = pa.array(aligned(embeds, "scene_seed"), pa.int64())
    columns["layout"] = pa.array(aligned(embeds, "layout"), pa.string())
    return pa.table(columns)


def _kept_embeddings(manifest: pa.Table, embeds: pa.Table, dim: int) -> np.ndarray:
    by_key = dict(zip(embeds["__key__"].to_pylist(), embeds["embedding"].to_pylist(), strict=True))
    kept = [
        k
        for k, keep in zip(
            manifest["__key__"].to_pylist(), manifest["keep"].to_pylist(), strict=True
        )
        if keep
    ]
    out = np.zeros((len(kept), dim), np.float32)
    for i, key in enumerate(kept):
        vector = by_key.get(key)
        if vector is None:
            raise RuntimeError(f"kept sample {key} has no embedding; its image did not decode")
        out[i] = vector
    return out


def kept_scenes(manifest: pa.Table, world: WorldConfig) -> tuple[list[str], list[Scene]]:
    """The kept samples' keys and scenes, re-drawn from the seeds in their ``.json`` sidecars.

    Args:
        manifest: a curation manifest (`CurateResult.manifest` or `curate/manifest.parquet`).
        world: the world the shards were rendered from.

    Returns:
        (keys, scenes) of the kept rows, in manifest order.
    """
    keys, scenes = [], []
    rows = zip(
        manifest["__key__"].to_pylist(),
        manifest["keep"].to_pylist(),
        manifest["scene_seed"].to_pylist(),
        strict=True,
    )
    for key, keep, seed in rows:
        if not keep:
            continue
        if seed is None:
            raise RuntimeError(f"kept sample {key} has no scene seed in its .json sidecar")
        keys.append(key)
        scenes.append(sample_scene(seed, config=world))
    return keys, scenes


def load_curated_scenes(run_dir: str | Path, world: WorldSettings) -> list[Scene]:
    """The scenes a finished `k2 curate` run kept (from its `curate/manifest.parquet`)."""
    path = Path(run_dir) / "curate" / "manifest.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `k2 curate` with --run-dir {run_dir}")
    return kept_scenes(pq.read_table(path), world_config(world))[1]


def run_curate(cfg: CurateConfig, run: RunDir) -> CurateResult:
    """Render the world into JPEG shards with injected faults and curate them.

    Steps: plan which slots hold faults -> per shard on a process pool (`run_local`): write
    the shard (img2dataset layout, scene JSON sidecar), run the CPU tier, embed the pixels ->
    md5 + phash + colorhash dedup over all shards -> hierarchical k-means of the kept
    samples and a balanced sample -> manifest, curated list, filtered shards (byte copies).
    Every input sample ends up in the manifest, kept or dropped with a reason; the injected
    ground truth is only joined in afterwards, to score the catching.

    Args:
        cfg: the curation config.
        run: the run directory (outputs go to ``run.path / "curate"``).

    Returns:
        The `CurateResult`; its `scenes` are what pretraining trains on.
    """
    t0 = time.perf_counter()
    out = run.path / "curate"
    _prepare(out, cfg)
    world = world_config(cfg.world)
    slots = plan_layout(cfg.world.train_scenes, cfg.faults, seed=cfg.seed)
    job = ShardJob(
        world=world,
        world_seed=cfg.world.seed,
        resolution=cfg.resolution,
        quality=cfg.jpeg_quality,
        slots=slots,
        samples_per_shard=cfg.samples_per_shard,
        tier_dir=str(out / "cpu_tier"),
        embed_dir=str(out / "embed"),
        thresholds=cfg.thresholds,
        embed_side=cfg.cluster.embed_side,
        embed_dim=cfg.cluster.embed_dim,
        embed_seed=cfg.seed,
    )
    injected = _injected_table(job)
    write_parquet_atomic(injected, out / "injected.parquet", metadata={"stage": "curate_inject"})
    shards = [out / "shards" / f"{i:05d}.tar" for i in range(job.n_shards)]
    (out / "shards").mkdir(exist_ok=True)
    t1 = time.perf_counter()
    outcomes: list[ShardOutcome] = run_local(
        functools.partial(curate_shard, job=job), shards, workers=cfg.workers
    )
    t2 = time.perf_counter()
    dedup = run_dedup(
        [o.tier.output for o in outcomes],
        out / "dedup.parquet",
        phash_radius=cfg.phash_radius,
        colorhash_radius=cfg.colorhash_radius,
    )
    _check_accounting(dedup, injected)
    t3 = time.perf_counter()
    embeds = pa.concat_tables([pq.read_table(o.embed) for o in outcomes])
    manifest = _manifest(dedup, injected, embeds)
    kept_layouts = manifest.filter(manifest["keep"])["layout"].to_pylist()
    balance = cluster_kept(
        _kept_embeddings(manifest, embeds, cfg.cluster.embed_dim),
        kept_layouts,
        cfg.cluster,
        seed=cfg.seed,
    )
    t4 = time.perf_counter()
    keys, scenes = kept_scenes(manifest, world)
    leaf = np.full(manifest.num_rows, -1, np.int64)
    top = np.full(manifest.num_rows, -1, np.int64)
    balanced = np.zeros(manifest.num_rows, bool)
    kept_rows = np.flatnonzero(manifest["keep"].to_numpy(zero_copy_only=False))
    leaf[kept_rows], top[kept_rows], balanced[kept_rows] = (
        balance.leaf,
        balance.top,
        balance.balanced,
    )
    manifest = manifest.append_column("leaf_cluster", pa.array(leaf))
    manifest = manifest.append_column("top_cluster", pa.array(top))
    manifest = manifest.append_column("balanced_sample", pa.array(balanced))
    meta = {"stage": CURATE_STAGE, "config": json.loads(json.dumps(dataclasses.asdict(cfg)))}
    write_parquet_atomic(manifest, out / "manifest.parquet", metadata=meta)
    curated = manifest.filter(manifest["keep"]).select(
        [
            "__key__",
            "__shard__",
            "scene_seed",
            "layout",
            "leaf_cluster",
            "top_cluster",
            "balanced_sample",
        ]
    )
    write_parquet_atomic(curated, out / "curated.parquet", metadata=meta)
    t_filtered = time.perf_counter()
    if cfg.write_filtered_shards:
        # The fork server from the first pass is still up: a second pass starts in no time.
        copy = functools.partial(filter_shard, out_dir=str(out / "filtered"), keep=frozenset(keys))
        run_local(copy, shards, workers=cfg.workers)
    t5 = time.perf_counter()
    hashes = pa.concat_tables(
        [pq.read_table(o.tier.output, columns=["__key__", "phash", "colorhash"]) for o in outcomes]
    )
    accounting = {
        "catch": catch_summary(manifest),
        "fault_rows": fault_table(manifest),
        "drop_rows": drop_counts(manifest),
        "clean_drop_rows": clean_drops(manifest),
        "groups": duplicate_groups(manifest),
        "distance_rows": near_duplicate_distances(manifest, hashes),
    }
    t6 = time.perf_counter()
    timings = {
        "plan": t1 - t0,
        "shards (pool)": t2 - t1,
        "  write + inject (sum over shards)": sum(o.write_s for o in outcomes),
        "  cpu tier (sum over shards)": sum(o.tier_s for o in outcomes),
        "  embed (sum over shards)": sum(o.embed_s for o in outcomes),
        "  CPU seconds of the shard workers": sum(o.cpu_s for o in outcomes),
        "dedup": t3 - t2,
        "cluster + balance": t4 - t3,
        "scenes + manifest": t_filtered - t4,
        "filtered shards (pool)": t5 - t_filtered,
        "fault accounting": t6 - t5,
        "total": t6 - t0,
    }
    result = CurateResult(
        scenes=scenes,
        keys=keys,
        manifest=manifest,
        out_dir=out,
        **accounting,
        balance=balance,
        timings=timings,
        settings={
            "resolution": cfg.resolution,
            "jpeg_quality": cfg.jpeg_quality,
            "shards": len(shards),
            "workers": cfg.workers,
            "phash_radius": cfg.phash_radius,
            "colorhash_radius": cfg.colorhash_radius,
            "thresholds": dataclasses.asdict(cfg.thresholds),
        },
    )
    run.log(
        stage="curate",
        samples=manifest.num_rows,
        kept=len(keys),
        seconds=round(timings["total"], 2),
        **{k: v for k, v in result.catch.items()},
    )
    run.write_json("curate.json", result.summary())
    return result
