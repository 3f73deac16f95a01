"""Sweep variants of the `tiny` pretraining preset and print one table of held-out verifier scores.

Each variant is the tiny preset with a few fields replaced; variants run as separate processes
(several at once on one GPU, or one at a time on CPU). Used to find what moves the tiny demo's
score; the measured tables are in docs/benchmarks.md.

    uv run python benches/pretrain_sweep.py --device cuda --jobs 8 base steps_x3 adaln
    uv run python benches/pretrain_sweep.py --device cuda medium_only+pooled   # combined
    uv run python benches/pretrain_sweep.py --list
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from queue import Empty

from k2_data.synthetic import BACKGROUNDS
from k2_recipes.presets import PRETRAIN_PRESETS, PretrainConfig


def _steps(cfg: PretrainConfig, factor: float) -> PretrainConfig:
    return replace(
        cfg,
        low_res=replace(cfg.low_res, steps=int(cfg.low_res.steps * factor)),
        high_res=replace(cfg.high_res, steps=int(cfg.high_res.steps * factor)),
    )


def _model(cfg: PretrainConfig, **kw) -> PretrainConfig:
    return replace(cfg, model=replace(cfg.model, **kw))


def _text(cfg: PretrainConfig, **kw) -> PretrainConfig:
    return _model(cfg, text=replace(cfg.model.text, **kw))


def _stages(cfg: PretrainConfig, **kw) -> PretrainConfig:
    return replace(cfg, low_res=replace(cfg.low_res, **kw), high_res=replace(cfg.high_res, **kw))


VARIANTS: dict[str, Callable[[PretrainConfig], PretrainConfig]] = {
    "base": lambda c: c,
    "steps_x2": lambda c: _steps(c, 2),
    "steps_x4": lambda c: _steps(c, 4),
    "steps_x8": lambda c: _steps(c, 8),
    "steps_x16": lambda c: _steps(c, 16),
    "steps_x1.5": lambda c: _steps(c, 1.5),
    "batch16": lambda c: _stages(c, batch_size=16),
    "batch24": lambda c: _stages(c, batch_size=24),
    "seed1": lambda c: replace(c, seed=1),
    "one_object": lambda c: replace(c, world=replace(c.world, max_objects=1)),
    "five_backgrounds": lambda c: replace(
        c, world=replace(c.world, backgrounds=tuple(BACKGROUNDS))
    ),
    "adaln": lambda c: _model(c, timestep="adaln_mlp"),
    "dual": lambda c: _model(c, streams="dual"),
    "no_pos_embed": lambda c: _model(c, pos_embed="none"),
    "refiner0": lambda c: _text(c, refiner_layers=0),
    "refiner2": lambda c: _text(c, refiner_layers=2),
    "agg_last": lambda c: _text(c, aggregation="last"),
    "lr_5e-4": lambda c: _stages(c, lr=5e-4),
    "lr_1e-3": lambda c: _stages(c, lr=1e-3),
    "lr_4e-3": lambda c: _stages(c, lr=4e-3),
    "batch64": lambda c: _stages(c, batch_size=64),
    "no_low_res": lambda c: replace(
        c,
        low_res=replace(c.low_res, steps=0),
        high_res=replace(c.high_res, steps=c.high_res.steps + c.low_res.steps),
    ),
    "medium_only": lambda c: replace(c, world=replace(c.world, caption_mix=(0.0, 1.0, 0.0))),
    "encoder_1layer": lambda c: _text(
        replace(c, text_encoder=replace(c.text_encoder, num_layers=1)), num_layers=2
    ),
    "depth6": lambda c: _model(c, depth=6),
    "dim192": lambda c: _model(c, dim=192),
    "patch2_16px": lambda c: _model(c, patch_size=2, pos_embed_grid=16),
    "shift1": lambda c: replace(_stages(c, shift=1.0), eval=replace(c.eval, shift=1.0)),
    "pooled": lambda c: _text(c, pooled=True),
    "pooled_adaln": lambda c: _model(_text(c, pooled=True), timestep="adaln_mlp"),
    "pooled_long": lambda c: replace(
        _text(c, pooled=True), world=replace(c.world, caption_mix=(0.6, 0.2, 0.2))
    ),
    "long_mix": lambda c: replace(c, world=replace(c.world, caption_mix=(0.6, 0.2, 0.2))),
    "pooled_steps_x2": lambda c: _steps(_text(c, pooled=True), 2),
    "pooled_no_low_res": lambda c: _text(
        replace(
            c,
            low_res=replace(c.low_res, steps=0),
            high_res=replace(c.high_res, steps=c.high_res.steps + c.low_res.steps),
        ),
        pooled=True,
    ),
    "pooled_refiner0": lambda c: _text(c, pooled=True, refiner_layers=0),
    # The CPU budget with torch.compile: no 16 px stage, ~2,100 steps at 32 px (0.15 s each
    # compiled on the 2-core CPU, after ~40 s of compilation).
    "budget": lambda c: replace(
        c, low_res=replace(c.low_res, steps=0), high_res=replace(c.high_res, steps=2100)
    ),
    **{
        f"s32_{n}": (
            lambda c, n=n: replace(
                c, low_res=replace(c.low_res, steps=0), high_res=replace(c.high_res, steps=n)
            )
        )
        for n in (900, 1200, 1500)
    },
    "seed2": lambda c: replace(c, seed=2),
    "seed3": lambda c: replace(c, seed=3),
    "bf16": lambda c: replace(c, precision="bf16"),
    "decay0.2": lambda c: replace(c, high_res=replace(c.high_res, decay_fraction=0.2)),
    "muon": lambda c: replace(c, scale=replace(c.scale, optimizer="muon")),
    "decay0.7": lambda c: replace(c, high_res=replace(c.high_res, decay_fraction=0.7)),
    "lr_1.5e-3": lambda c: _stages(c, lr=1.5e-3),
    "lr_3e-3": lambda c: _stages(c, lr=3e-3),
    "shift2": lambda c: replace(c, high_res=replace(c.high_res, shift=2.0)),
    "shift4": lambda c: replace(c, high_res=replace(c.high_res, shift=4.0)),
    "tstd0.7": lambda c: _stages(c, timestep_std=0.7),
    "batch48": lambda c: _stages(c, batch_size=48),
    "warm100": lambda c: _stages(c, warmup_steps=100),
    "guidance7": lambda c: replace(c, eval=replace(c.eval, guidance_scale=7.0)),
    "guidance2": lambda c: replace(c, eval=replace(c.eval, guidance_scale=2.0)),
}


def _variant(part: str) -> Callable[[PretrainConfig], PretrainConfig]:
    """A named variant, or `sched_A_B`: A steps at the low and B at the high resolution."""
    if part.startswith("sched_"):
        low, high = (int(x) for x in part.split("_")[1:])
        return lambda c: replace(
            c, low_res=replace(c.low_res, steps=low), high_res=replace(c.high_res, steps=high)
        )
    return VARIANTS[part]


def _run(name: str, device: str, preset: str, threads: int, queue) -> None:
    try:
        _run_one(name, device, preset, threads, queue)
    except Exception as exc:  # a failed variant is a row in the table, not a hung sweep
        queue.put({"variant": name, "error": f"{type(exc).__name__}: {exc}"})


def _run_one(name: str, device: str, preset: str, threads: int, queue) -> None:
    from k2_recipes.pretrain import run_pretrain
    from k2_recipes.rundir import RunDir

    cfg = PRETRAIN_PRESETS[preset]
    for part in name.split("+"):  # "medium_only+pooled": apply left to right
        cfg = _variant(part)(cfg)
    cfg = replace(cfg, device=device, threads=threads, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(tmp)
        start = time.time()
        result = run_pretrain(cfg, run)
        run.close()
        ev = result.evals["pretrained"]
        queue.put(
            {
                "variant": name,
                "score": ev.score,
                "fully_correct": ev.fully_correct,
                "per_type": ev.per_type,
                "train_s": result.train_seconds,
                "total_s": time.time() - start,
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=["base"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="append each row to this JSON-lines file")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print("\n".join(VARIANTS))
        return
    unknown = [
        p
        for v in args.variants
        for p in v.split("+")
        if p not in VARIANTS and not re.fullmatch(r"sched_\d+_\d+", p)
    ]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; see --list")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    pending = list(args.variants)
    running: list = []
    rows = []
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            p = ctx.Process(
                target=_run, name=name, args=(name, args.device, args.preset, args.threads, queue)
            )
            p.start()
            running.append(p)
        try:
            row = queue.get(timeout=5)
        except Empty:
            crashed = [p for p in running if p.exitcode not in (None, 0)]
            for p in crashed:
                running.remove(p)
                rows.append({"variant": p.name, "error": f"exit code {p.exitcode}"})
            continue
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:  # written as rows arrive, so a sweep cut short keeps what finished
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
        for p in list(running):
            if p.name == row["variant"]:
                p.join()
                running.remove(p)
    types = sorted({t for r in rows for t in r.get("per_type", {})})
    print("\n| variant | score | fully correct | " + " | ".join(types) + " | train s |")
    print("|---|---:|---:|" + "---:|" * len(types) + "---:|")
    for r in sorted(rows, key=lambda r: args.variants.index(r["variant"])):
        if "error" in r:
            print(f"| {r['variant']} | failed: {r['error']} |")
            continue
        cells = " | ".join(f"{r['per_type'].get(t, float('nan')):.2f}" for t in types)
        print(
            f"| {r['variant']} | {r['score']:.3f} | {r['fully_correct']:.1%} | {cells} "
            f"| {r['train_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
