"""Hierarchical k-means + balanced sampling: time on 1M x 384 and coverage of a long tail.

    uv run python benches/hierarchical_kmeans.py             # 1M x 384, 5,000 components (~6 min)
    uv run python benches/hierarchical_kmeans.py --quick     # 200k x 384, 1,000 components
    uv run python benches/hierarchical_kmeans.py --ablation  # add the one-change-at-a-time rows

Data: `long_tailed_mixture` (Zipf s = 1 weights, means ~ N(0, I/d), noise norm = mean
norm). Every row samples 10% of the points. "default" is the library configuration
(cosine k-means, AFK-MC2 init, resampling); "naive" is Euclidean k-means with random
init and no resampling, the prototype that built a catch-all cluster. "uniform" is a
uniform random sample of the same size. Timings cover clustering and sampling (not data
generation); faiss uses every core. "CPU s" is the process CPU time of clustering plus
sampling (all threads), a figure that a machine shared with other jobs inflates less than
wall time. "load 1 min" is the machine's load average when the row finished.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np

from k2_data.cluster import (
    HierarchicalKMeansConfig,
    LevelConfig,
    balanced_sample,
    component_coverage,
    hierarchical_kmeans,
    long_tailed_mixture,
)


def _config(
    k1: int, k2: int, *, spherical: bool, init: str, resample: bool
) -> HierarchicalKMeansConfig:
    return HierarchicalKMeansConfig(
        levels=(
            LevelConfig(n_clusters=k1, n_resampling_steps=int(resample), sample_size=10),
            LevelConfig(n_clusters=k2, n_resampling_steps=10 * int(resample), sample_size=5),
        ),
        spherical=spherical,
        init=init,  # type: ignore[arg-type]
        max_points_per_centroid=64,  # faiss trains level 1 on 64 points per centroid
        seed=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="200k points, 1,000 components")
    parser.add_argument("--ablation", action="store_true", help="one-change-at-a-time rows")
    args = parser.parse_args()
    n, comps, k1, k2 = (200_000, 1_000, 400, 40) if args.quick else (1_000_000, 5_000, 2_000, 200)
    target = n // 10
    start = time.perf_counter()
    x, component = long_tailed_mixture(n, dim=384, n_components=comps, seed=0)
    gen_s = time.perf_counter() - start
    rows = [("default", True, "afkmc2", True), ("naive", False, "random", False)]
    if args.ablation:
        rows += [
            ("cosine only", True, "random", False),
            ("L2 + afkmc2 + resampling", False, "afkmc2", True),
            ("cosine, no resampling", True, "afkmc2", False),
        ]
    table: list[tuple] = []
    uniform = np.random.default_rng(0).choice(n, target, replace=False)
    covered = component_coverage(component, uniform, n_components=comps)
    table.append(("uniform random", *["-"] * 9, *covered, "-"))
    for name, spherical, init, resample in rows:
        t0, c0 = time.perf_counter(), time.process_time()
        config = _config(k1, k2, spherical=spherical, init=init, resample=resample)
        hierarchy = hierarchical_kmeans(x, config)
        t1 = time.perf_counter()
        sample = balanced_sample(hierarchy, target, seed=0)
        t2, c2 = time.perf_counter(), time.process_time()
        top = hierarchy.sizes(-1)
        in_largest = component[hierarchy.labels(-1) == top.argmax()]
        table.append(
            (
                name,
                "cosine" if spherical else "L2",
                init,
                "yes" if resample else "no",
                f"{t1 - t0:.1f}",
                f"{t2 - t1:.2f}",
                f"{c2 - c0:.0f}",
                f"{len(hierarchy.centroids[0])}/{len(top)}",
                f"{top.max():,}",
                f"{len(np.unique(in_largest)):,}",
                *component_coverage(component, sample, n_components=comps),
                f"{os.getloadavg()[0]:.1f}",
            )
        )
        print(f"  {name}: {t1 - t0:.1f} s", flush=True)
    load = os.getloadavg()
    print(
        f"\n{datetime.date.today()}  {platform.processor() or platform.machine()}  "
        f"{os.cpu_count()} cores  load {load[0]:.1f}/{load[1]:.1f}  "
        f"{n:,} x 384 from {comps:,} Zipf components (generated in {gen_s:.0f} s), "
        f"levels {k1}/{k2}, sample {target:,}\n"
    )
    head = ("method", "k-means", "init", "resampling", "cluster s", "sample s", "CPU s", "leaves/top",
            "largest top cluster", "its components", "covered", f"rarest {comps // 2:,}", "load 1 min")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in table:
        print("| " + " | ".join(f"{c:,}" if isinstance(c, int) else c for c in row) + " |")


if __name__ == "__main__":
    main()
