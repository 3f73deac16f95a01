"""Bad input through the CPU tier (issue 3, section 12): a generated fault corpus, and a
kill-and-resume run whose outputs must equal an uninterrupted run's, byte for byte."""

from __future__ import annotations

import functools
import io
import os
import signal
import struct
import subprocess
import sys
import tarfile
import textwrap
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from k2_data.filters import FilterThresholds
from k2_data.io import iter_shard, split_member_name
from k2_data.runners import run_local
from k2_data.stages import CpuTierSettings, cpu_tier_table, run_cpu_tier


def _rgb(side: int = 320, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    noisy = np.asarray(small.resize((side, side), Image.Resampling.BICUBIC), np.int16)
    noisy = noisy + rng.integers(-20, 21, noisy.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG that declares width x height but holds one row: a decompression bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _corpus() -> list[tuple[str, bytes, str]]:
    """(member name, bytes, expected reason prefix; "" means decodes fine) of every fault."""
    good = _rgb()
    jpeg, png = _save(good, "JPEG", quality=90), _save(good, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    palette = good.convert("P", palette=Image.Palette.ADAPTIVE)
    deep = Image.fromarray(np.asarray(good.convert("L"), np.uint16) * 257)
    return [
        ("000.jpg", jpeg, ""),
        ("000.txt", b"caption", ""),
        ("001.jpg", jpeg[: len(jpeg) // 2], "broken_file: truncated"),
        ("002.png", png[: len(png) // 2], "broken_file: truncated"),
        ("003.jpg", b"", "broken_file: empty"),
        ("004.jpg", b"<html>404 not found</html>", "broken_file: not_an_image"),
        ("005.png", b"plain text, not a picture" * 3, "broken_file: not_an_image"),
        ("006.webp", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 28, "broken_file: not_an_image"),
        ("007.jpg", _save(good.convert("CMYK"), "JPEG"), ""),
        ("008.png", _save(deep, "PNG"), ""),
        ("009.png", _save(palette, "PNG", transparency=0), ""),
        ("010.jpg", _save(good, "JPEG", exif=exif), ""),
        (
            "011.png",
            _png_header_only(100_000, 100_000),
            "broken_file: too_large: decompression_bomb",
        ),
        ("012.png", _png_header_only(12_000, 8_000), "broken_file: too_large: decompression_bomb"),
        ("../../etc/evil.jpg", jpeg, "unsafe_name: path traversal"),
        ("/tmp/abs.png", png, "unsafe_name: absolute path"),
        ("013.txt", b"caption without an image", "no_image"),
    ]


def _tar(path, members):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def corpus_shard(tmp_path_factory):
    members = [(name, data) for name, data, _ in _corpus()]
    return _tar(tmp_path_factory.mktemp("faults") / "00000.tar", members)


def test_fault_corpus_every_member_accounted_for(corpus_shard, tmp_path):
    result = run_cpu_tier(
        corpus_shard, tmp_path, thresholds=FilterThresholds(max_border_fraction=None)
    )
    table = pq.read_table(result.output)
    rows = {r["__key__"]: r for r in table.to_pylist()}
    expected: dict[str, str] = {}
    for name, _, reason in _corpus():
        split = split_member_name(name)
        key = name if reason.startswith("unsafe_name") else split[0]
        expected[key] = expected.get(key) or reason
    assert sorted(rows) == sorted(expected) and table.num_rows == len(expected)
    for key, reason in expected.items():
        row = rows[key]
        if reason:
            assert row["keep"] is False and row["reason"].startswith(reason), (key, row["reason"])
            assert row["phash"] is None and row["colorhash"] is None
        else:  # odd but valid files decode, hash and pass the filters
            assert row["decode_error"] is None, (key, row["decode_error"])
            assert len(row["phash"]) == 18 and len(row["colorhash"]) == 13
            assert row["keep"] is True, (key, row["reason"])
    modes = {k: rows[k]["mode"] for k in ("007", "008", "009", "010")}
    assert modes == {"007": "CMYK", "008": "I;16", "009": "P", "010": "RGB"}
    assert (rows["010"]["width"], rows["010"]["height"]) == (320, 320)  # header size, unrotated
    assert "../../etc/evil.jpg" in rows and "path traversal" in rows["../../etc/evil.jpg"]["reason"]
    assert not (tmp_path.parent / "etc").exists()  # nothing is ever extracted


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path):
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    shard = _tar(tmp_path / "deep.tar", [("000.png", _save(Image.fromarray(levels * 257), "PNG"))])
    settings = CpuTierSettings(max_side=16, hash_side=None)
    table = cpu_tier_table(iter_shard(shard), shard="deep", settings=settings)
    # 256 distinct grey levels, each once: 8 bits of entropy per channel when scaled.
    assert table["entropy"][0].as_py() == pytest.approx(8.0)


def test_pixel_limit_is_configurable(corpus_shard):
    samples = [s for s in iter_shard(corpus_shard) if s.key in {"000", "012"}]
    table = cpu_tier_table(samples, shard="x", settings=CpuTierSettings(max_pixels=320 * 320 - 1))
    reasons = table["reason"].to_pylist()
    assert (
        reasons[0]
        == "broken_file: too_large: decompression_bomb: 320x320 = 102400 pixels > max_pixels=102399"
    )
    assert reasons[1].startswith("broken_file: too_large: decompression_bomb: 12000x8000")
    with pytest.raises(ValueError, match="max_pixels must be >= 1"):
        CpuTierSettings(max_pixels=0)


_KILLER = textwrap.dedent(
    """
    import functools, os, signal, sys
    from pathlib import Path

    from k2_data.runners import run_local
    from k2_data.stages import run_cpu_tier


    def stage(shard, out_dir, kill_after):
        result = run_cpu_tier(shard, out_dir, max_side=64)
        if len(list(Path(out_dir).glob("*.parquet"))) >= kill_after:
            os.killpg(0, signal.SIGKILL)  # this run's own process group: driver and workers
        return result


    if __name__ == "__main__":
        out_dir, kill_after, *shards = sys.argv[1:]
        stage_fn = functools.partial(stage, out_dir=out_dir, kill_after=int(kill_after))
        run_local(stage_fn, shards, workers=2, start_method="fork")
    """
)


def test_kill_and_resume_gives_identical_outputs(tmp_path):
    shards = [
        _tar(
            tmp_path / "in" / f"{s:05d}.tar",
            [(f"{s:05d}{i:04d}.jpg", _save(_rgb(96, seed=10 * s + i), "JPEG")) for i in range(3)],
        )
        for s in range(6)
    ]
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    killed_dir = tmp_path / "killed"
    run = subprocess.run(
        [sys.executable, str(script), str(killed_dir), "2", *map(str, shards)],
        start_new_session=True,  # its own process group, so the kill cannot reach pytest
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    finished = sorted(p.name for p in killed_dir.glob("*.parquet"))
    assert 2 <= len(finished) < len(shards)

    stage = functools.partial(run_cpu_tier, max_side=64)
    resumed = run_local(functools.partial(stage, out_dir=killed_dir), shards, workers=1)
    statuses = {os.path.basename(r.output): r.status for r in resumed}
    assert sorted(k for k, v in statuses.items() if v == "skipped") == finished
    assert sum(v == "done" for v in statuses.values()) == len(shards) - len(finished)
    clean = run_local(functools.partial(stage, out_dir=tmp_path / "clean"), shards, workers=1)
    for a, b in zip(resumed, clean, strict=True):
        with open(a.output, "rb") as fa, open(b.output, "rb") as fb:
            assert fa.read() == fb.read(), a.output
