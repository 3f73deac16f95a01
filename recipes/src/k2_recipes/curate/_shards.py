"""The per-shard stage of `k2 curate`: render + inject -> CPU tier -> pixel embeddings.

One picklable function (`curate_shard`) per shard, mapped by `k2_data.runners.run_local`, so
rendering, filtering and embedding share one process pool. It imports neither torch nor
`k2_recipes.presets` (which does): the fork server preloads this module for every worker.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from k2_data.filters import FilterThresholds
from k2_data.io import (
    atomic_path,
    filtered_shard_path,
    iter_shard,
    read_complete_metadata,
    write_filtered_shard,
    write_parquet_atomic,
)
from k2_data.stages import StageResult, run_cpu_tier
from k2_data.synthetic import WorldConfig, make_sample, sample_scene, scene_seed
from k2_recipes.curate._faults import Slot, encode_jpeg, make_fault

EMBED_STAGE = "curate_embed"
EMBED_SCHEMA_FIELDS = [
    pa.field("__key__", pa.string(), nullable=False),
    pa.field("scene_seed", pa.int64()),
    pa.field("layout", pa.string()),
]


@dataclass(frozen=True, kw_only=True)
class ShardJob:
    """Everything a worker needs to produce, filter and embed its shards (picklable)."""

    world: WorldConfig
    world_seed: int
    resolution: int
    quality: int
    slots: tuple[Slot, ...]
    samples_per_shard: int
    tier_dir: str
    embed_dir: str
    thresholds: FilterThresholds
    embed_side: int
    embed_dim: int
    embed_seed: int

    @property
    def n_shards(self) -> int:
        return math.ceil(len(self.slots) / self.samples_per_shard)

    @property
    def key_digits(self) -> int:
        return max(1, math.ceil(math.log10(self.samples_per_shard)))

    def key(self, slot: int) -> str:
        """img2dataset key of a slot: shard number (5 digits), then index in the shard."""
        shard, index = divmod(slot, self.samples_per_shard)
        return f"{shard:05d}{index:0{self.key_digits}d}"


@dataclass(frozen=True)
class ShardOutcome:
    """What `curate_shard` did to one shard (seconds per phase, for the timing table)."""

    shard: str
    tier: StageResult
    embed: str
    write_s: float
    tier_s: float
    embed_s: float
    cpu_s: float
    """CPU seconds of the worker on this shard (wall seconds inflate on a shared machine)."""


def _scene_sample(job: ShardJob, scene: int, key: str):
    seed = scene_seed(job.world_seed, scene, split="train")
    return make_sample(sample_scene(seed, config=job.world), key=key, resolution=job.resolution)


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # broken on purpose: the sidecar keeps the scene's size
        return None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # bytes depend on content only
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | Path, index: int, job: ShardJob) -> int:
    """Render the clean slots of shard `index` and build its faults into one tar, atomically.

    Members per sample, in img2dataset order: ``<key>.jpg``, ``<key>.txt`` (long caption),
    ``<key>.json`` (the scene's metadata, see `k2_data.synthetic.Sample.metadata`). A
    near-duplicate carries its source's caption and metadata; other faults carry those of a
    scene outside the clean set. Nothing in the shard says which samples are faults.

    Returns:
        Samples written.
    """
    lo = index * job.samples_per_shard
    hi = min(lo + job.samples_per_shard, len(job.slots))
    with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for s in range(lo, hi):
            slot, key = job.slots[s], job.key(s)
            sample = _scene_sample(job, slot.scene, key)
            jpeg = encode_jpeg(sample.image, job.quality)
            meta = sample.metadata()
            if slot.kind != "clean":
                # A near-duplicate's source was encoded from the same render: the same bytes.
                source = jpeg if slot.kind == "near_duplicate" else None
                jpeg = make_fault(
                    slot,
                    scene_pixels=sample.image,
                    scene_jpeg=jpeg,
                    source_jpeg=source,
                    quality=job.quality,
                )
                size = _image_size(jpeg)
                if size is not None:
                    meta.update(width=size[0], height=size[1])
            meta["sha256"] = hashlib.sha256(jpeg).hexdigest()
            _add(tar, f"{key}.jpg", jpeg)
            _add(tar, f"{key}.txt", sample.captions.long.encode())
            _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
    return hi - lo


def projection(side: int, dim: int, seed: int) -> np.ndarray:
    """The fixed Gaussian random projection (side*side*3 -> dim) of the pixel embedding."""
    rng = np.random.default_rng([seed, 0xE3B])
    return (rng.standard_normal((side * side * 3, dim)) / math.sqrt(dim)).astype(np.float32)


def pixel_embedding(pixels: np.ndarray, proj: np.ndarray, side: int) -> np.ndarray:
    """Unit-norm embedding of an image: its `side` px thumbnail minus its median colour, projected.

    Subtracting the median colour (the background, in this world) keeps the shared background
    from dominating every cosine; the random projection (Johnson-Lindenstrauss) keeps
    distances between thumbnails while being free, deterministic and download-free.
    """
    if pixels.shape[:2] != (side, side):
        pixels = np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BOX))
    x = pixels.astype(np.float32) / 255.0
    x -= np.median(x.reshape(-1, 3), axis=0)
    v = x.reshape(-1) @ proj
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-8 else v


LAYOUT_FIELDS = ("count", "size", "colour", "shape", "position")


def scene_layout(meta: dict) -> str | None:
    """What a caption can say about a scene, from its sidecar: sorted ``count|size|colour|shape|
    position`` groups joined by ``;`` (None without an ``objects`` list)."""
    objects = meta.get("objects")
    if not isinstance(objects, list):
        return None
    groups = [
        "|".join(str(o.get(f)) for f in LAYOUT_FIELDS) for o in objects if isinstance(o, dict)
    ]
    return ";".join(sorted(groups))


def thumbnail(data: bytes, side: int) -> np.ndarray:
    """RGB pixels of an encoded image at `side` x `side` (JPEG DCT scaling, then a box filter).

    Only called on images the CPU tier decoded without error, so it needs none of
    `k2_data.filters.decode`'s care for broken files (and costs half as much).
    """
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (side, side))
        rgb = image.convert("RGB")
    if rgb.size != (side, side):
        rgb = rgb.resize((side, side), Image.Resampling.BOX)
    return np.asarray(rgb)


def embed_shard(
    shard: str | Path, out_dir: str | Path, job: ShardJob, *, decoded: Collection[str]
) -> str:
    """Per-sample pixel embedding and scene seed (from the ``.json`` sidecar) of one shard.

    Rows cover every sample `iter_shard` yields; the embedding is null for samples outside
    `decoded` (the keys the CPU tier kept: only they can survive curation and be clustered).
    Written atomically; a complete output with the same settings is kept.
    """
    out = Path(out_dir) / f"{Path(shard).stem}.parquet"
    meta = {
        "stage": EMBED_STAGE,
        "shard": Path(shard).stem,
        "side": job.embed_side,
        "dim": job.embed_dim,
        "seed": job.embed_seed,
        "embedded": hashlib.sha1("\n".join(sorted(decoded)).encode()).hexdigest(),
    }
    found = read_complete_metadata(out)
    if found is not None and all(found.get(k) == v for k, v in meta.items()):
        return str(out)
    proj = projection(job.embed_side, job.embed_dim, job.embed_seed)
    keys, seeds, layouts, vectors, valid = [], [], [], [], []
    for sample in iter_shard(shard):
        keys.append(sample.key)
        try:
            sidecar = json.loads(sample.members.get("json", b"null"))
        except ValueError:
            sidecar = None
        sidecar = sidecar if isinstance(sidecar, dict) else {}
        seed = sidecar.get("seed")
        seeds.append(seed if isinstance(seed, int) else None)
        layouts.append(scene_layout(sidecar))
        ok = sample.error is None and sample.image is not None and sample.key in decoded
        pixels = thumbnail(sample.image, job.embed_side) if ok else None  # type: ignore[arg-type]
        vectors.append(
            np.zeros(job.embed_dim, np.float32)
            if pixels is None
            else pixel_embedding(pixels, proj, job.embed_side)
        )
        valid.append(ok)
    flat = pa.array(np.concatenate(vectors) if vectors else np.zeros(0, np.float32))
    mask = pa.array(~np.array(valid, dtype=bool))
    embedding = pa.FixedSizeListArray.from_arrays(flat, job.embed_dim, mask=mask)
    fields = [*EMBED_SCHEMA_FIELDS, pa.field("embedding", embedding.type)]
    columns = zip([keys, seeds, layouts], EMBED_SCHEMA_FIELDS, strict=True)
    arrays = [pa.array(c, type=f.type) for c, f in columns]
    table = pa.Table.from_arrays([*arrays, embedding], schema=pa.schema(fields))
    write_parquet_atomic(table, out, metadata=meta)
    return str(out)


def curate_shard(shard_path: str, *, job: ShardJob) -> ShardOutcome:
    """Write shard `shard_path` (named ``<index>.tar``) if missing, then run the CPU tier on it
    and embed it. Each step skips its complete output, so a rerun resumes."""
    path = Path(shard_path)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if not path.is_file():  # written atomically: a shard under its final name is complete
        write_shard(path, int(path.stem), job)
    t1 = time.perf_counter()
    tier = run_cpu_tier(path, job.tier_dir, thresholds=job.thresholds)
    t2 = time.perf_counter()
    rows = pq.read_table(tier.output, columns=["__key__", "keep"])
    decoded = set(rows.filter(rows["keep"])["__key__"].to_pylist())
    embed = embed_shard(path, job.embed_dir, job, decoded=decoded)
    t3 = time.perf_counter()
    cpu = time.process_time() - cpu0
    return ShardOutcome(str(path), tier, embed, t1 - t0, t2 - t1, t3 - t2, cpu)


def filter_shard(shard_path: str, *, out_dir: str, keep: frozenset[str]) -> int:
    """Copy the kept samples of one shard into ``<out_dir>/<stem>.tar``, byte for byte."""
    return write_filtered_shard(shard_path, filtered_shard_path(shard_path, out_dir), keep)
