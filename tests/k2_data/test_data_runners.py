"""k2_data.stages + k2_data.runners: the CPU tier per shard, resuming, dedup, local and Ray."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from k2_data.filters import FilterThresholds, compute_stats, decide, decode
from k2_data.hashing import colorhash, phash
from k2_data.io import iter_shard, write_filtered_shard
from k2_data.runners import StageFailedError, run_local, run_ray
from k2_data.stages import (
    DEDUP_OUTPUT_SCHEMA,
    CpuTierSettings,
    cpu_tier_table,
    run_cpu_tier,
    run_dedup,
)

LOOSE = FilterThresholds(min_short_side=32)  # small test images pass the size rule


@functools.cache
def _sample_photos() -> tuple[Image.Image, ...]:
    """scikit-learn's two bundled photos, read with Pillow (importing sklearn takes seconds)."""
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.submodule_search_locations, "scikit-learn is a dependency"
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "images"
    return tuple(Image.open(folder / name).convert("RGB") for name in ("china.jpg", "flower.jpg"))


def _photo(seed: int, side: int = 96) -> Image.Image:
    """A 256 px crop of a real photo, resized to side: hashes behave as on web images
    (smooth synthetic patterns have near-tied DCT coefficients, so their phash is fragile)."""
    rng = np.random.default_rng(seed)
    photo = _sample_photos()[seed % 2]
    x, y = int(rng.integers(0, photo.width - 256)), int(rng.integers(0, photo.height - 256))
    return photo.crop((x, y, x + 256, y + 256)).resize((side, side), Image.Resampling.BOX)


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _write_tar(path, samples):
    """samples: (key, {ext: bytes})."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _shards(directory, n_shards=4, per_shard=3, side=96):
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for s in range(n_shards):
        samples = []
        for i in range(per_shard):
            image = _photo(10 * s + i, side)
            flat = Image.new("RGB", (side, side), (200, 30, 30))  # dropped: entropy
            data = _jpeg(flat if i == per_shard - 1 else image)
            samples.append((f"{s:05d}{i:04d}", {"jpg": data, "txt": f"caption {i}".encode()}))
        out.append(_write_tar(directory / f"{s:05d}.tar", samples))
    return out


def test_cpu_tier_rows_match_the_building_blocks(tmp_path):
    (shard,) = _shards(tmp_path / "in", n_shards=1, per_shard=4, side=128)
    result = run_cpu_tier(shard, tmp_path / "out", max_side=64, thresholds=LOOSE)
    table = pq.read_table(result.output)
    assert (result.status, result.rows, table.num_rows) == ("done", 4, 4)
    for row, sample in zip(table.to_pylist(), iter_shard(shard), strict=True):
        data = sample.image
        assert (row["__key__"], row["__shard__"], row["members"]) == (
            sample.key,
            "00000",
            "jpg,txt",
        )
        assert row["md5"] == hashlib.md5(data).digest() and row["file_size"] == len(data)
        decoded = decode(data, max_side=64)
        stats = compute_stats(decoded)
        assert {k: row[k] for k in stats} == stats
        assert row["decode_path"] == "jpeg_draft_1/2"  # 128 px, libjpeg-scaled to 64
        assert row["phash"] == phash(decoded.pixels).tobytes()
        assert row["colorhash"] == colorhash(decoded.pixels).tobytes()
        assert (row["keep"], row["reason"]) == decide(stats, LOOSE)
    assert [r["reason"] for r in table.to_pylist()][-1].startswith("entropy<")
    assert result.kept == 3

    # Hashes on the decoded pixels box-reduced to hash_side; statistics stay at max_side.
    settings = CpuTierSettings(max_side=128, hash_side=32)
    small = cpu_tier_table(iter_shard(shard), shard="s", settings=settings, thresholds=LOOSE)
    for row, sample in zip(small.to_pylist(), iter_shard(shard), strict=True):
        decoded = decode(sample.image, max_side=128)
        assert row["stat_width"] == 128 and row["decode_path"] == "full"
        view = Image.fromarray(decoded.pixels).reduce(4)  # 128 -> 32 px
        assert row["phash"] == phash(view).tobytes()
        assert row["colorhash"] == colorhash(view).tobytes()
    with pytest.raises(ValueError, match="hash_side=8 is below phash_size=12"):
        CpuTierSettings(hash_side=8)


def test_cpu_tier_skips_redecides_and_recomputes(tmp_path, monkeypatch):
    (shard,) = _shards(tmp_path / "in", n_shards=1)
    out = tmp_path / "out"
    first = run_cpu_tier(shard, out, thresholds=LOOSE)
    before = (out / "00000.parquet").read_bytes()

    def no_decoding(*args, **kwargs):
        raise AssertionError("a finished shard must not be decoded again")

    monkeypatch.setattr("k2_data.stages._cpu_tier.decode", no_decoding)
    again = run_cpu_tier(shard, out, thresholds=LOOSE)
    assert (again.status, again.rows, again.kept) == ("skipped", first.rows, first.kept)
    assert (out / "00000.parquet").read_bytes() == before
    strict = FilterThresholds(min_short_side=200)
    redo = run_cpu_tier(shard, out, thresholds=strict)
    assert (redo.status, redo.kept) == ("redecided", 0)
    reasons = pq.read_table(redo.output, columns=["reason"])["reason"].to_pylist()
    assert reasons == ["short_side<200"] * 3
    monkeypatch.undo()
    fresh = run_cpu_tier(shard, tmp_path / "fresh", thresholds=strict)
    assert pq.read_table(fresh.output).equals(pq.read_table(redo.output))
    changed = run_cpu_tier(shard, out, thresholds=strict, max_side=128)  # new statistics
    assert changed.status == "done"


def test_half_written_output_is_redone(tmp_path):
    (shard,) = _shards(tmp_path / "in", n_shards=1)
    good = run_cpu_tier(shard, tmp_path / "ref", thresholds=LOOSE)
    out = tmp_path / "out"
    out.mkdir()
    whole = (tmp_path / "ref" / "00000.parquet").read_bytes()
    (out / "00000.parquet").write_bytes(whole[: len(whole) // 2])  # e.g. a killed copy
    (out / ".00000.parquet.abc.tmp").write_bytes(whole[:100])  # a killed writer's temp file
    redo = run_cpu_tier(shard, out, thresholds=LOOSE)
    assert redo.status == "done" and redo.rows == good.rows
    assert (out / "00000.parquet").read_bytes() == whole


def test_run_local_pool_equals_inline_and_resumes(tmp_path):
    shards = _shards(tmp_path / "in")
    inline = run_local(
        functools.partial(run_cpu_tier, out_dir=tmp_path / "a", thresholds=LOOSE), shards, workers=1
    )
    stage = functools.partial(run_cpu_tier, out_dir=tmp_path / "b", thresholds=LOOSE)
    pooled = run_local(stage, shards, workers=2)
    assert [r.shard for r in pooled] == [str(s) for s in shards]
    assert [(r.rows, r.kept, r.status) for r in pooled] == [
        (r.rows, r.kept, r.status) for r in inline
    ]
    for a, b in zip(inline, pooled, strict=True):
        with open(a.output, "rb") as fa, open(b.output, "rb") as fb:
            assert fa.read() == fb.read()
    assert {r.status for r in run_local(stage, shards, workers=2)} == {"skipped"}


def test_run_local_errors_are_clear(tmp_path):
    shards = _shards(tmp_path / "in", n_shards=2)
    stage = functools.partial(run_cpu_tier, out_dir=tmp_path / "out")
    with pytest.raises(
        StageFailedError, match=r"(?s)1 of 3 shards failed.*missing\.tar: FileNotFoundError"
    ) as info:
        run_local(stage, [shards[0], tmp_path / "missing.tar", shards[1]], workers=1)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "00000.parquet",
        "00001.parquet",
    ]
    with pytest.raises(TypeError, match=r"cannot be pickled.*module-level function"):
        run_local(lambda shard: shard, shards, workers=2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_local(stage, shards, workers=0)


def _dedup_shards(directory):
    directory.mkdir()
    a, b, c = _photo(1, 128), _photo(2, 128), _photo(3, 128)
    a_bytes = _jpeg(a, 95)
    first = [
        ("k00", {"jpg": a_bytes}),
        ("k01", {"jpg": _jpeg(b)}),
        ("k02", {"jpg": _jpeg(Image.new("RGB", (128, 128), "white"))}),  # filtered out
    ]
    second = [
        ("k10", {"jpg": a_bytes}),  # byte copy of k00
        ("k11", {"jpg": _jpeg(b.resize((96, 96), Image.Resampling.BOX), 70)}),  # smaller re-encode
        ("k12", {"jpg": _jpeg(c)}),
    ]
    return [_write_tar(directory / "00000.tar", first), _write_tar(directory / "00001.tar", second)]


def test_dedup_over_gathered_parquets(tmp_path):
    shards = _dedup_shards(tmp_path / "in")
    stage = functools.partial(run_cpu_tier, out_dir=tmp_path / "stats", thresholds=LOOSE)
    outputs = [r.output for r in run_local(stage, shards, workers=1)]
    table = run_dedup(outputs, tmp_path / "dedup.parquet")
    assert table.schema.equals(DEDUP_OUTPUT_SCHEMA)
    assert pq.read_table(tmp_path / "dedup.parquet").equals(table)
    rows = {r["__key__"]: (r["keep"], r["reason"], r["keeper"]) for r in table.to_pylist()}
    assert rows["k00"] == (True, "", "k00")  # equal pixels and bytes: the smaller key wins
    assert rows["k10"] == (False, "md5_duplicate_of:k00", "k00")
    assert rows["k01"] == (True, "", "k01")  # more pixels than its 96 px copy
    assert rows["k11"] == (False, "duplicate_of:k01", "k01")
    assert rows["k12"] == (True, "", "k12")
    assert rows["k02"][0] is False and rows["k02"][1].startswith("entropy<")
    assert rows["k02"][2] is None  # filtered rows never take part in dedup
    redecided = run_dedup(
        outputs, tmp_path / "d2.parquet", thresholds=FilterThresholds(min_short_side=100)
    )
    small = {r["__key__"]: r["reason"] for r in redecided.to_pylist()}
    assert small["k11"] == "short_side<100"  # re-decided from saved stats, before dedup

    with pytest.raises(ValueError, match="not a complete CPU-tier output"):
        run_dedup([*outputs, tmp_path / "dedup.parquet"], tmp_path / "x.parquet")
    other = run_cpu_tier(shards[1], tmp_path / "other", max_side=128, thresholds=LOOSE)
    with pytest.raises(ValueError, match="not comparable"):
        run_dedup([outputs[0], other.output], tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="repeat across shards"):
        run_dedup([outputs[0], outputs[0]], tmp_path / "x.parquet")

    kept = {k for k, (keep, _, _) in rows.items() if keep}
    for shard in shards:
        write_filtered_shard(shard, tmp_path / "final" / shard.name, kept)
    final = [s for shard in shards for s in iter_shard(tmp_path / "final" / shard.name)]
    assert sorted(s.key for s in final) == sorted(kept)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="k2-data[ray] extra not installed")
    with pytest.MonkeyPatch.context() as patch:
        # Under `uv run`, Ray would package the whole workspace as a runtime env for workers.
        patch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
        )
        yield ray
        ray.shutdown()


@pytest.mark.slow  # ~25 s on the 2-core machine: starting Ray and its workers
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
def test_run_ray_equals_run_local(tmp_path, local_ray):
    shards = _shards(tmp_path / "in", n_shards=3)
    local = run_local(
        functools.partial(run_cpu_tier, out_dir=tmp_path / "local", thresholds=LOOSE),
        shards,
        workers=1,
    )
    stage = functools.partial(run_cpu_tier, out_dir=tmp_path / "ray", thresholds=LOOSE)
    remote = run_ray(stage, shards)
    assert [(r.shard, r.rows, r.kept, r.status) for r in remote] == [
        (r.shard, r.rows, r.kept, r.status) for r in local
    ]
    for a, b in zip(local, remote, strict=True):
        with open(a.output, "rb") as fa, open(b.output, "rb") as fb:
            assert fa.read() == fb.read()
    assert {r.status for r in run_ray(stage, shards)} == {"skipped"}
