"""Hash throughput (k2 vs imagehash on the same decoded images) and near-duplicate search time.

    uv run python benches/hashing_dedup.py                 # ~3 minutes on 2 cores
    uv run python benches/hashing_dedup.py --quick         # 100 images, 1e4 and 1e5 hashes

Hashing runs on one thread over the same decoded PIL images for every row (best of 3).
Search rows index n random 144-bit codes of which 1% are planted copies with 0-15 flipped
bits; faiss uses every core. "check" compares against imagehash or the brute-force pairs.
"""

from __future__ import annotations

import argparse
import io
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # hashing rows: one thread (before numpy)

import faiss
import imagehash
import numpy as np
from PIL import Image

from k2_data.dedup import banded_lsh_pairs, flat_pairs, multihash_pairs
from k2_data.hashing import (
    colorhash_batch,
    colorhash_values,
    hamming,
    md5_batch,
    pack_bits,
    phash_batch,
)
from k2_data.synthetic import STYLES, WorldConfig, render, sample_scenes


def _jpegs(count: int) -> list[bytes]:
    """512 px JPEGs (q=90): half synthetic scenes, half smooth textures with noise."""
    rng = np.random.default_rng(0)
    scenes = sample_scenes(count // 2, seed=0, config=WorldConfig(styles=STYLES))
    images = [Image.fromarray(render(s, 512)) for s in scenes]
    for _ in range(count - len(images)):
        side = int(rng.integers(4, 40))
        base = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        smooth = np.asarray(base.resize((512, 512), Image.Resampling.BICUBIC), np.int16)
        noisy = smooth + rng.integers(-12, 13, smooth.shape)
        images.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    out = []
    for img in images:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _best(fn, repeats: int = 3):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def _row(task: str, n: int, method: str, seconds: float, check: str) -> None:
    print(f"| {task} | {n:,} | {method} | {seconds:.3f} | {n / seconds:,.0f} | {check} |")


def _hash_rows(count: int) -> None:
    blobs = _jpegs(count)
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]  # one full decode
    _, t = _best(lambda: md5_batch(blobs))
    _row("md5 of bytes", count, "k2 (hashlib)", t, "")
    ref, t = _best(lambda: [imagehash.phash(img, hash_size=12) for img in images])
    _row("phash 12x12", count, "imagehash 4.3", t, "reference")
    ref_codes = pack_bits(np.stack([h.hash.ravel() for h in ref]))
    for label, kwargs in (
        ("k2 imagehash_compatible", {"imagehash_compatible": True}),
        ("k2 (default)", {}),
        ("k2 reducing_gap=2", {"reducing_gap": 2.0}),
    ):
        codes, t = _best(lambda kwargs=kwargs: phash_batch(images, **kwargs))
        d = hamming(codes, ref_codes)
        _row(
            "phash 12x12",
            count,
            label,
            t,
            f"{(d == 0).sum()}/{count} equal, mean {d.mean():.2f} bits",
        )
    ref, t = _best(lambda: [imagehash.colorhash(img, binbits=3) for img in images])
    _row("colorhash b=3", count, "imagehash 4.3", t, "reference")
    ref_codes = pack_bits(np.stack([h.hash.ravel() for h in ref]))
    codes, t = _best(lambda: colorhash_batch(images, imagehash_compatible=True))
    same = (hamming(codes, ref_codes) == 0).sum()
    _row("colorhash b=3", count, "k2 imagehash_compatible", t, f"{same}/{count} bit-exact")
    codes, t = _best(lambda: colorhash_batch(images))
    values = np.stack([colorhash_values(img) for img in images])
    ones = np.unpackbits(codes, axis=1)[:, :98].reshape(count, 14, 7).sum(-1)
    agree = (ones == values).all(axis=1).sum()
    _row("colorhash b=3", count, "k2 thermometer (98 bits)", t, f"{agree}/{count} same values")


def _planted_codes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = rng.random((n, 144)) < 0.5
    src, dst = rng.integers(0, n, (2, n // 100))
    bits[dst] = bits[src]
    flips = rng.integers(0, 16, len(dst))
    for row, count in zip(dst, flips, strict=True):
        bits[row, rng.choice(144, count, replace=False)] ^= True
    return np.packbits(bits, axis=1)


def _search_rows(sizes: list[int], flat_max: int) -> None:
    for n in sizes:
        codes = _planted_codes(n, n)
        for radius in (8, 12):
            task = f"near-dup r={radius}"
            truth = None
            if n <= flat_max:
                truth, t = _best(lambda r=radius, c=codes: flat_pairs(c, radius=r), 1)
                _row(task, n, "faiss IndexBinaryFlat (brute force)", t, f"{len(truth):,} pairs")
            pairs, t = _best(lambda r=radius, c=codes: multihash_pairs(c, radius=r), 1)
            check = f"{len(pairs):,} pairs" + (
                "" if truth is None else f", == flat: {np.array_equal(pairs, truth)}"
            )
            _row(task, n, "faiss IndexBinaryMultiHash", t, check)
            truth = pairs if truth is None else truth
            if radius == 12 and n > 10**5:
                print(
                    f"| {task} | {n:,} | banded LSH (13 bands) | - | - | skipped: ~3e9 candidates |"
                )
                continue
            lsh, t = _best(lambda r=radius, c=codes: banded_lsh_pairs(c, radius=r), 1)
            ref = "flat" if n <= flat_max else "multihash"
            _row(
                task,
                n,
                f"banded LSH ({radius + 1} bands)",
                t,
                f"{len(lsh):,} pairs, == {ref}: {np.array_equal(lsh, truth)}",
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    print(f"faiss threads: {faiss.omp_get_max_threads()}\n")
    print("| task | n | method | seconds | items/s | check |")
    print("|---|---:|---|---:|---:|---|")
    _hash_rows(100 if args.quick else 400)
    _search_rows([10**4, 10**5] if args.quick else [10**5, 10**6], flat_max=10**5)


if __name__ == "__main__":
    main()
