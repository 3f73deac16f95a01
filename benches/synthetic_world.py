"""Speed and honesty of the synthetic world: render and verify throughput, verifier scores on
ground-truth renders (every style), on another scene's caption, and on noise.

    uv run python benches/synthetic_world.py            # one table, a few seconds per row
"""

from __future__ import annotations

import time

import numpy as np

from k2_data.synthetic import STYLES, WorldConfig, captions, render, sample_scenes, verify_batch


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _render_all(scenes, res: int) -> list[np.ndarray]:
    return [render(s, res) for s in scenes]


def main(n: int = 1000) -> None:
    rng = np.random.default_rng(0)
    print(
        "| resolution | render scenes/s | verify images/s | GT score | other-caption score | noise score |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    scenes = sample_scenes(n, seed=123, config=WorldConfig(styles=STYLES), split="test")
    long = [captions(s).long for s in scenes]
    for res in (32, 64, 128):
        images, render_s = _timed(_render_all, scenes, res)
        results, verify_s = _timed(verify_batch, images, long)
        render_rate, verify_rate = n / render_s, n / verify_s
        gt = np.mean([r.score for r in results])
        other = np.mean([r.score for r in verify_batch(images, long[1:] + long[:1])])
        noise = [rng.integers(0, 256, (res, res, 3), dtype=np.uint8) for _ in range(n)]
        noise_score = np.mean([r.score for r in verify_batch(noise, long)])
        print(
            f"| {res} | {render_rate:,.0f} | {verify_rate:,.0f} | {gt:.3f} | {other:.3f} "
            f"| {noise_score:.3f} |"
        )


if __name__ == "__main__":
    main()
