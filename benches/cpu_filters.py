"""Throughput of the CPU filter tier (decode + every statistic) on synthetic 1024 px JPEGs,
full decode against libjpeg draft (DCT-scaled) decode, on one core.

    uv run python benches/cpu_filters.py            # one table, ~1 minute

Images: 1024x1024 RGB with a 1/f^1.5 amplitude spectrum (natural-image-like detail), JPEG
q=90, ~170 KiB each; decoded from in-memory bytes; best of 3 passes.
"""

from __future__ import annotations

import io
import os
import time

import numpy as np
from PIL import Image

from k2_data.filters import compute_stats, decode


def _photo_like(rng: np.random.Generator, side: int) -> np.ndarray:
    freq = np.hypot(np.fft.fftfreq(side)[:, None], np.fft.fftfreq(side)[None, :])
    freq[0, 0] = 1.0
    planes = [
        np.fft.ifft2(np.fft.fft2(rng.standard_normal((side, side))) / freq**1.5).real
        for _ in range(3)
    ]
    x = np.stack(planes, axis=-1)
    x = (x - x.mean()) / x.std() * 40 + 128
    return np.clip(x, 0, 255).astype(np.uint8)


def _encode(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _best_rate(fn, items, passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main(n: int = 64, side: int = 1024) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: per-core numbers
    rng = np.random.default_rng(0)
    blobs = [_encode(_photo_like(rng, side)) for _ in range(n)]
    kib = np.mean([len(b) for b in blobs]) / 1024
    print(f"{n} JPEGs {side}x{side}, mean {kib:.0f} KiB, one core, best of 3 passes")
    print("| max_side | decode path | stat size | decode img/s | decode+stats img/s | ms/img |")
    print("|---:|---|---:|---:|---:|---:|")
    for max_side, allow_draft in [
        (None, True),
        (512, False),
        (512, True),
        (256, False),
        (256, True),
        (128, True),
    ]:
        first = decode(blobs[0], max_side=max_side, allow_draft=allow_draft)
        assert first.ok and first.pixels is not None, first.reason
        decode_rate = _best_rate(
            lambda b, m=max_side, a=allow_draft: decode(b, max_side=m, allow_draft=a), blobs
        )
        full_rate = _best_rate(
            lambda b, m=max_side, a=allow_draft: compute_stats(
                decode(b, max_side=m, allow_draft=a)
            ),
            blobs,
        )
        size = f"{first.pixels.shape[1]}x{first.pixels.shape[0]}"
        path = first.decode_path
        if path == "full" and max_side is not None:
            path += ", box to size"
        print(
            f"| {max_side or 'none'} | {path} | {size} | {decode_rate:,.0f} | "
            f"{full_rate:,.0f} | {1000 / full_rate:.2f} |"
        )


if __name__ == "__main__":
    main()
