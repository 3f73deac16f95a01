"""CPU tier throughput per core (issue 3, section 11, first bullet): k2's whole tier against
imagehash and against a bare JPEG draft decode, then a profile of where k2's time goes.

    uv run python benches/cpu_tier.py              # ~2 minutes on the 2-core machine
    uv run python benches/cpu_tier.py --n 100      # quicker

Inputs: 512x512 JPEGs (q=90) made by random crops, scales and flips of scikit-image's bundled
photographs when scikit-image is installed, otherwise of scikit-learn's two sample photos
(`load_sample_images`: china.jpg, flower.jpg); the header line says which. Every row decodes
the same in-memory bytes on one core (`os.sched_setaffinity`, BLAS limited to one thread);
best of 3 passes (of 7 taken in turn for the default tier and its pre-LUT colorhash variant,
so a busy machine slows both alike). Target: >= 1,500 img/s per core for the whole tier and
>= 8x imagehash.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core, one BLAS thread (before numpy)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import contextlib
import cProfile
import functools
import io
import pstats
import tarfile
import tempfile
import time
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

import k2_data.stages._cpu_tier as cpu_tier_module
from k2_data.hashing import colorhash_batch, colorhash_lut, colorhash_values, hamming, phash_batch
from k2_data.io import ShardSample
from k2_data.stages import CpuTierSettings, cpu_tier_table, run_cpu_tier

TARGET, TARGET_X = 1500, 8.0


def _photos() -> tuple[str, list[np.ndarray]]:
    try:
        from skimage import data

        names = [
            "astronaut",
            "coffee",
            "chelsea",
            "rocket",
            "immunohistochemistry",
            "hubble_deep_field",
        ]
        names += [
            "cat",
            "retina",
            "colorwheel",
            "motorcycle_left",
            "logo",
            "coins",
            "camera",
            "moon",
        ]
        photos = []
        for name in names:
            try:
                image = np.asarray(getattr(data, name)())
            except Exception:  # some need pooch downloads; the machine is offline
                continue
            photos.append(np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3])
        return f"scikit-image ({len(photos)} photos)", photos
    except ImportError:
        from sklearn.datasets import load_sample_images

        photos = list(load_sample_images().images)
        return "scikit-learn load_sample_images (2 photos; scikit-image not installed)", photos


def _jpegs(n: int, side: int = 512) -> tuple[str, list[bytes]]:
    """n JPEGs: random photo, random crop of 40-100% of its short side, flips, scaled to side."""
    source, photos = _photos()
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        photo = Image.fromarray(photos[int(rng.integers(len(photos)))])
        crop = int(min(photo.size) * rng.uniform(0.4, 1.0))
        x = int(rng.integers(0, photo.width - crop + 1))
        y = int(rng.integers(0, photo.height - crop + 1))
        image = photo.crop((x, y, x + crop, y + crop)).resize(
            (side, side), Image.Resampling.BICUBIC
        )
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < 0.2:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return source, out


def _best(fn, passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _draft_decode(blobs: list[bytes], side: int) -> None:
    for blob in blobs:
        image = Image.open(io.BytesIO(blob))
        image.draft("RGB", (side, side))
        image.load()


def _imagehash(blobs: list[bytes]) -> None:
    for blob in blobs:
        image = Image.open(io.BytesIO(blob)).convert("RGB")
        imagehash.phash(image, hash_size=12)
        imagehash.colorhash(image)


def _samples(blobs: list[bytes]) -> list[ShardSample]:
    return [
        ShardSample(key=f"{i:09d}", names=(f"{i:09d}.jpg",), members={"jpg": b}, image_ext="jpg")
        for i, b in enumerate(blobs)
    ]


def _interleaved(fns, passes: int = 7) -> list[list[float]]:
    """Times of each fn over passes taken in turn, so a busy machine slows all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(passes):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return times


def _tier(samples, **kwargs):
    settings = CpuTierSettings(**kwargs)
    return lambda: cpu_tier_table(samples, shard="bench", settings=settings)


@contextlib.contextmanager
def _pillow_colorhash():
    """The tier with colorhash values from Pillow's L + HSV conversions (the pre-LUT path)."""
    lut_path = cpu_tier_module.colorhash_values
    cpu_tier_module.colorhash_values = functools.partial(colorhash_values, method="pillow")
    try:
        yield
    finally:
        cpu_tier_module.colorhash_values = lut_path


def _with_pillow_colorhash(fn):
    def run() -> None:
        with _pillow_colorhash():
            fn()

    return run


def _drift(samples, blobs, **kwargs) -> str:
    """Mean (max) Hamming distance of the tier's hashes to k2 hashes of the full decode."""
    full = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
    ref_p, ref_c = phash_batch(full), colorhash_batch(full)
    table = cpu_tier_table(samples, shard="bench", settings=CpuTierSettings(**kwargs))
    width_p, width_c = ref_p.shape[1], ref_c.shape[1]
    p = np.frombuffer(b"".join(table["phash"].to_pylist()), np.uint8).reshape(-1, width_p)
    c = np.frombuffer(b"".join(table["colorhash"].to_pylist()), np.uint8).reshape(-1, width_c)
    dp, dc = hamming(p, ref_p), hamming(c, ref_c)
    return f"{dp.mean():.2f} ({dp.max()}) / {dc.mean():.2f} ({dc.max()})"


def _profile(samples: list[ShardSample]) -> None:
    """Cumulative time of the tier's parts under cProfile (inflates small calls a little)."""
    profiler = cProfile.Profile()
    profiler.enable()
    cpu_tier_table(samples, shard="bench")
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, name), (_, _, _, ct, _) in stats.items() if name == "cpu_tier_table")
    parts = {
        "decode": "decode() (one open, header + structure check, draft load, RGB)",
        "load": "  Image.load (libjpeg entropy decode + IDCT)",
        "compute_stats": "compute_stats total (one fused pixel_stats pass)",
        "complexity_from_gray": "  complexity (modelled JPEG bits, block DCT)",
        "laplacian_variance": "  laplacian_variance",
        "entropy": "  entropy (Pillow pooled histogram)",
        "border_runs": "  border runs",
        "_hash_image": "box-reduce to hash_side",
        "resize": "phash thumbnail (Pillow LANCZOS 48)",
        "phash_from_thumbnails": "phash DCT + median (batched)",
        "colorhash_values": "colorhash values (RGB LUT gather + bincount)",
        "openssl_md5": "md5 of bytes",
        "stats_table": "Arrow table of stats",
        "decide_cpu_tier": "decide (Arrow compute)",
    }
    print("\nWhere the default tier's time goes (cProfile, cumulative, one pass):\n")
    print("| part | ms/img | share |")
    print("|---|---:|---:|")
    n = len(samples)
    for func, label in parts.items():
        # Built-ins are named like "<built-in method _hashlib.openssl_md5>".
        cum = max(
            (
                ct
                for (_, _, name), (_, _, _, ct, _) in stats.items()
                if name == func or name.endswith(f".{func}>")
            ),
            default=0.0,
        )
        print(f"| {label} | {1000 * cum / n:.3f} | {100 * cum / total:.0f}% |")
    print(f"| **total** | **{1000 * total / n:.3f}** | 100% |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    start = time.perf_counter()
    colorhash_lut()  # built once per process; kept out of the timed rows
    lut_build = time.perf_counter() - start
    source, blobs = _jpegs(args.n)
    samples = _samples(blobs)
    kib = np.mean([len(b) for b in blobs]) / 1024
    print(
        f"{args.n} JPEGs 512x512 q=90, mean {kib:.0f} KiB, from {source}; one pinned core, best of 3"
    )
    print(f"colorhash LUT (2^24 colours through Pillow L + HSV) built in {lut_build:.2f} s")
    variants = {
        "k2 tier, stats at 128 px (libjpeg 1/4), hashes at 64 px": {"max_side": 128},
        "k2 tier, stats at 256 px (libjpeg 1/2), hashes at 64 px": {"max_side": 256},
        "k2 tier, stats at 128 px, hashes at 128 px": {"max_side": 128, "hash_side": 128},
        "k2 tier, phash reducing_gap=2": {"phash_reducing_gap": 2.0},
    }
    rows: list[tuple[str, float, str]] = [
        (
            "bare JPEG draft decode to 256 px (libjpeg 1/2)",
            _best(lambda: _draft_decode(blobs, 256)),
            "",
        ),
        (
            "bare JPEG draft decode to 64 px (libjpeg 1/8)",
            _best(lambda: _draft_decode(blobs, 64)),
            "",
        ),
        ("imagehash: full decode + phash(12) + colorhash", _best(lambda: _imagehash(blobs)), ""),
    ]
    # The default row and the same tier with the pre-LUT colorhash, measured in turn (7 passes).
    default, pillow = _interleaved([_tier(samples), _with_pillow_colorhash(_tier(samples))])
    drift = _drift(samples, blobs)
    rows.append(("k2 tier (default: stats and hashes at 64 px, libjpeg 1/8)", min(default), drift))
    task = "k2 tier (default), colorhash by Pillow HSV instead of the LUT (old path)"
    rows.append((task, min(pillow), drift))
    for task, kwargs in variants.items():
        rows.append((task, _best(_tier(samples, **kwargs)), _drift(samples, blobs, **kwargs)))
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "00000.tar"
        with tarfile.open(shard, "w") as tar:
            for sample in samples:
                info = tarfile.TarInfo(sample.names[0])
                info.size = len(sample.image)
                tar.addfile(info, io.BytesIO(sample.image))

        def end_to_end() -> None:
            for old in Path(tmp).glob("out/*"):
                old.unlink()
            run_cpu_tier(shard, Path(tmp) / "out")

        rows.append(("k2 run_cpu_tier: tar -> Parquet (default)", _best(end_to_end), ""))
    reference = args.n / rows[2][1]
    print(
        "\n| task (per image) | img/s per core | ms/img | vs imagehash | target met | "
        "phash / colorhash drift, bits: mean (max) |"
    )
    print("|---|---:|---:|---:|---|---|")
    for task, seconds, drift in rows:
        rate = args.n / seconds
        meets = "yes" if rate >= TARGET and rate / reference >= TARGET_X else "no"
        meets = meets if task.startswith("k2") else ""
        print(
            f"| {task} | {rate:,.0f} | {1000 / rate:.2f} | {rate / reference:.1f}x | {meets} | {drift} |"
        )
    ms = [1000 * float(np.median(t)) / args.n for t in (default, pillow)]
    print(
        f"\ndefault tier, median of the 7 interleaved passes: {ms[0]:.3f} ms/img with the "
        f"colorhash LUT, {ms[1]:.3f} ms/img with Pillow HSV (old path)."
    )
    print(
        "\ndrift: Hamming distance to k2's hashes of the same JPEG decoded in full (144-bit "
        "phash, 98-bit colorhash); the near-duplicate radii are 12 and 4."
    )
    _profile(samples)


if __name__ == "__main__":
    main()
