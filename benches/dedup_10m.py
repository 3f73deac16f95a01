"""Joint phash + colorhash near-duplicate search over 10M hashes: time, peak memory, exactness.

    uv run python benches/dedup_10m.py                   # 10M codes (about 4 GB free RAM needed)
    uv run python benches/dedup_10m.py --quick           # 1M codes
    uv run python benches/dedup_10m.py --n 300000 --faiss-n 300000 --json out.json

Data: n random 144-bit phashes and 98-bit k2 colorhashes (thermometer code of 14 values in
0..7). ``--colour photo`` (default) draws the values like photographs do: black and grey
fractions from Beta laws and 12 hue fractions from a sparse Dirichlet that sum to at most
8, so colour bands carry few bits; ``--colour uniform`` draws i.i.d. values. 1% of rows
are planted copies of another row with 0-10 phash bits flipped and 0-6 unit steps of the
colour values (so some are beyond the radii). Each method runs in its own process on the
same saved arrays, so its peak RSS (``ru_maxrss``, including the 31 bytes per row of input)
is its own. Checks: every returned pair is verified on both codes (precision), every
planted pair within the radii is returned (planted recall), and on a 100k-row subset (the
ends of planted pairs plus random rows) the pairs equal a brute force (faiss
``IndexBinaryFlat`` range search on phash, then the colorhash filter).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PHASH_BITS, NBINS, TOP = 144, 14, 7


def _encode(values: np.ndarray) -> np.ndarray:
    """k2 thermometer colorhash bytes of (rows, 14) values in 0..7."""
    return np.packbits((values[..., None] > np.arange(TOP)).reshape(len(values), -1), axis=1)


def _colour_values(rng: np.random.Generator, rows: int, model: str) -> np.ndarray:
    if model == "uniform":
        return rng.integers(0, TOP + 1, (rows, NBINS), dtype=np.uint8)
    out = np.empty((rows, NBINS), np.uint8)
    out[:, 0] = np.minimum(8 * rng.beta(0.5, 3.0, rows), TOP)  # black
    out[:, 1] = np.minimum(8 * rng.beta(0.7, 1.5, rows), TOP)  # grey
    out[:, 2:] = np.minimum(8 * rng.dirichlet(np.full(12, 0.25), rows), TOP)  # hues, sum 1
    return out


def make_data(n: int, seed: int, colour: str) -> dict[str, np.ndarray]:
    """Codes with planted near-duplicates, and the planted (src, dst) pairs."""
    rng = np.random.default_rng(seed)
    phash = rng.integers(0, 256, (n, PHASH_BITS // 8), dtype=np.uint8)
    values = np.concatenate(
        [_colour_values(rng, min(1 << 20, n - s), colour) for s in range(0, n, 1 << 20)]
    )
    m = n // 100
    dst = rng.choice(n, m, replace=False)
    src = rng.integers(0, n, m)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    phash[dst] = phash[src]
    values[dst] = values[src]
    flips = rng.integers(0, 11, len(dst))
    rank = rng.random((len(dst), PHASH_BITS)).argsort(axis=1).argsort(axis=1)
    phash[dst] ^= np.packbits(rank < flips[:, None], axis=1)
    steps = rng.integers(0, 7, len(dst))
    for t in range(int(steps.max(initial=0))):
        rows = dst[steps > t]
        bins = rng.integers(0, NBINS, len(rows))
        v = values[rows, bins].astype(np.int16)
        move = np.where(rng.random(len(rows)) < 0.5, -1, 1)
        move = np.where((v + move < 0) | (v + move > TOP), -move, move)
        values[rows, bins] = v + move
    colorhash = np.concatenate(
        [_encode(values[s : s + (1 << 20)]) for s in range(0, n, 1 << 20)]
    ).astype(np.uint8)
    return {"phash": phash, "colorhash": colorhash, "src": src, "dst": dst}


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(method: str, data: Path, r1: int, r2: int, rows: int | None, key_bands) -> dict:
    """One method in this process: load, search, save the pairs; time and peak RSS."""
    from k2_data.dedup import filter_pairs, joint_hamming_pairs, multihash_pairs

    phash = np.load(data / "phash.npy")
    colorhash = np.load(data / "colorhash.npy")
    if rows is not None:
        phash, colorhash = phash[:rows].copy(), colorhash[:rows].copy()
    loaded = _rss_now_mb()
    start = time.perf_counter()
    cpu0 = time.process_time()
    if method == "joint":
        pairs = joint_hamming_pairs(
            phash,
            colorhash,
            phash_radius=r1,
            colorhash_radius=r2,
            key_bands=key_bands,
            workers=2,
        )
    else:
        pairs = filter_pairs(multihash_pairs(phash, radius=r1), colorhash, radius=r2)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    np.save(data / f"pairs_{method}.npy", pairs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "n": len(phash),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak,
        "input_rss_mb": loaded,
        "pairs": len(pairs),
    }


def _run_worker(method: str, data: Path, args, rows: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--data", str(data)]
    cmd += [
        "--phash-radius",
        str(args.phash_radius),
        "--colorhash-radius",
        str(args.colorhash_radius),
    ]
    if rows is not None:
        cmd += ["--rows", str(rows)]
    if args.key_bands is not None:
        cmd += ["--key-bands", *map(str, args.key_bands)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(a ^ b).sum(axis=1)


def _as_set(pairs: np.ndarray, n: int) -> np.ndarray:
    return np.unique(pairs[:, 0].astype(np.int64) * n + pairs[:, 1])


def check(pairs: np.ndarray, data: dict, r1: int, r2: int, subset_n: int, seed: int) -> dict:
    """Precision (every pair verified), planted recall, and brute force on a subset."""
    from k2_data.dedup import filter_pairs, flat_pairs

    phash, colorhash = data["phash"], data["colorhash"]
    n = len(phash)
    ok = np.ones(len(pairs), bool)
    for s in range(0, len(pairs), 1 << 22):
        a, b = pairs[s : s + (1 << 22), 0], pairs[s : s + (1 << 22), 1]
        ok[s : s + (1 << 22)] = (_hamming(phash[a], phash[b]) <= r1) & (
            _hamming(colorhash[a], colorhash[b]) <= r2
        )
    src, dst = data["src"], data["dst"]
    inside = (_hamming(phash[src], phash[dst]) <= r1) & (
        _hamming(colorhash[src], colorhash[dst]) <= r2
    )
    planted = np.stack([np.minimum(src, dst), np.maximum(src, dst)], 1)[inside]
    planted_found = np.isin(_as_set(planted, n), _as_set(pairs, n)).mean() if len(planted) else 1.0

    rng = np.random.default_rng(seed + 1)
    ends = np.unique(np.stack([src, dst], 1)[: subset_n // 4].ravel())
    rest = rng.choice(n, min(n, subset_n + len(ends)), replace=False)
    subset = np.unique(np.concatenate([ends, rest]))
    subset = np.concatenate([ends, np.setdiff1d(subset, ends)])[: min(n, subset_n)]
    subset.sort()
    start = time.perf_counter()
    sub_p = np.ascontiguousarray(phash[subset])
    truth = filter_pairs(flat_pairs(sub_p, radius=r1), colorhash[subset], radius=r2)
    brute_s = time.perf_counter() - start
    member = np.zeros(n, bool)
    member[subset] = True
    local = np.searchsorted(subset, pairs[member[pairs[:, 0]] & member[pairs[:, 1]]])
    got, ref = _as_set(local, len(subset)), _as_set(truth, len(subset))
    hit = np.isin(ref, got).sum()
    return {
        "precision_all": float(ok.mean()) if len(ok) else 1.0,
        "planted_within_radii": len(planted),
        "planted_recall": float(planted_found),
        "subset_n": len(subset),
        "subset_truth_pairs": len(ref),
        "subset_found_pairs": len(got),
        "subset_recall": float(hit / len(ref)) if len(ref) else 1.0,
        "subset_precision": float(hit / len(got)) if len(got) else 1.0,
        "brute_force_seconds": brute_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="number of hashes")
    parser.add_argument("--quick", action="store_true", help="1M hashes")
    parser.add_argument("--faiss-n", type=int, default=None, help="rows for faiss (default n)")
    parser.add_argument("--no-faiss", action="store_true", help="skip the faiss comparison")
    parser.add_argument("--colour", choices=("photo", "uniform"), default="photo")
    parser.add_argument("--phash-radius", type=int, default=8)
    parser.add_argument("--colorhash-radius", type=int, default=4)
    parser.add_argument(
        "--key-bands",
        type=int,
        nargs=2,
        default=None,
        metavar=("TP", "TC"),
        help="force the joint key layout (default: chosen by its cost model)",
    )
    parser.add_argument("--subset", type=int, default=100_000, help="brute-force subset rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--keep-data", type=Path, default=None, help="save the arrays here")
    parser.add_argument("--worker", choices=("joint", "faiss"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    r1, r2 = args.phash_radius, args.colorhash_radius
    if args.worker:  # child process: one method, one JSON line
        kb = None if args.key_bands is None else tuple(args.key_bands)
        print(json.dumps(worker(args.worker, args.data, r1, r2, args.rows, kb)))
        return

    n = 1_000_000 if args.quick else args.n
    start = time.perf_counter()
    data = make_data(n, args.seed, args.colour)
    gen_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep_data or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "phash.npy", data["phash"])
        np.save(folder / "colorhash.npy", data["colorhash"])
        runs = [_run_worker("joint", folder, args, None)]
        joint = np.load(folder / "pairs_joint.npy")
        faiss_n = None if args.no_faiss else min(n, args.faiss_n or n)
        same = None
        if faiss_n is not None:
            runs.append(_run_worker("faiss", folder, args, faiss_n))
            other = np.load(folder / "pairs_faiss.npy")
            mine = joint[joint[:, 1] < faiss_n]
            same = bool(np.array_equal(mine, other))
    checks = check(joint, data, r1, r2, args.subset, args.seed)

    cpus = len(os.sched_getaffinity(0))
    print(
        f"n = {n:,} ({args.colour} colour), phash <= {r1} of 144, colorhash <= {r2} of 98; "
        f"{cpus} CPUs, load average {os.getloadavg()[0]:.1f}; data generated in {gen_s:.0f} s\n"
    )
    print("| method | n | wall s | CPU s | peak RSS MB | input RSS MB | pairs | check |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for run in runs:
        label = (
            f"k2 joint_hamming_pairs (2 threads, key_bands={args.key_bands or 'auto'})"
            if run["method"] == "joint"
            else "faiss IndexBinaryMultiHash + colour filter"
        )
        check_text = (
            f"precision {checks['precision_all']:.4f}, planted recall "
            f"{checks['planted_recall']:.4f} of {checks['planted_within_radii']:,}"
            if run["method"] == "joint"
            else f"== joint pairs (first {run['n']:,} rows): {same}"
        )
        print(
            f"| {label} | {run['n']:,} | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} | "
            f"{run['peak_rss_mb']:,.0f} | {run['input_rss_mb']:,.0f} | {run['pairs']:,} | "
            f"{check_text} |"
        )
    print(
        f"\nBrute force on a {checks['subset_n']:,}-row subset ({checks['brute_force_seconds']:.0f} s):"
        f" {checks['subset_truth_pairs']:,} pairs; joint search restricted to the subset: "
        f"{checks['subset_found_pairs']:,}; recall {checks['subset_recall']:.4f}, "
        f"precision {checks['subset_precision']:.4f}"
    )
    if args.json:
        result = {"n": n, "colour": args.colour, "radii": [r1, r2], "runs": runs}
        result.update(checks, faiss_equal=same, cpus=cpus, generate_seconds=gen_s)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
