"""Synthetic-data launcher: `torchrun --nproc_per_node=N -m k2_dit.distributed --preset tiny`.

For checking the trainer on new hardware (2-GPU vs 1-GPU loss, step time, resume, float8,
PMA); the recipes build real runs. Prints one summary line on rank 0 and writes metrics.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
from pathlib import Path

from k2_dit.buckets import ResolutionStage
from k2_dit.config import AttentionConfig, DiTConfig, TextConfig
from k2_dit.distributed._guard import GuardConfig
from k2_dit.distributed._setup import shutdown
from k2_dit.distributed._synthetic import SyntheticConfig
from k2_dit.distributed._trainer import TrainConfig, train


def preset(name: str, steps: int) -> TrainConfig:
    """`tiny` (CPU seconds) or `k2-1b` (width 2048, 24 blocks, 16/4 heads: the benchmark model)."""
    half = max(1, steps // 2)
    if name == "tiny":
        text = TextConfig(encoder_dim=16, num_layers=3, aggregation_heads=4, refiner_layers=1)
        model = DiTConfig(
            in_channels=4,
            dim=32,
            depth=2,
            attention=AttentionConfig(num_heads=4, num_kv_heads=2),
            text=text,
            timestep_freq_dim=16,
        )
        stages = (
            ResolutionStage(resolution=32, train_shift=1.0, steps=half, latent_factor=8),
            ResolutionStage(resolution=64, train_shift=2.0, steps=steps - half, latent_factor=8),
        )
        return TrainConfig(
            model=model,
            stages=stages,
            lr=1e-3,
            data=SyntheticConfig(num_samples=128, text_tokens=8),
        )
    if name == "k2-1b":
        model = DiTConfig(
            dim=2048, depth=24, attention=AttentionConfig(num_heads=16, num_kv_heads=4)
        )
        stages = (
            ResolutionStage(resolution=256, train_shift=1.0, steps=half),
            ResolutionStage(resolution=512, train_shift=2.0, steps=steps - half),
        )
        return TrainConfig(
            model=model,
            stages=stages,
            global_batch_size=16,
            lr=1e-4,
            data=SyntheticConfig(num_samples=4096, text_tokens=64),
        )
    raise SystemExit(f"unknown preset {name!r}: use 'tiny' or 'k2-1b'")


def _float8(text: str):
    """`tensorwise`, `rowwise` or `none`; comma-separated for one recipe per stage."""
    parts = [p.strip() for p in text.split(",")]
    bad = [p for p in parts if p not in ("tensorwise", "rowwise", "none")]
    if bad:
        raise argparse.ArgumentTypeError(
            f"{bad} are not float8 recipes: use tensorwise, rowwise or none (comma-separated "
            "for one per stage, e.g. tensorwise,rowwise)"
        )
    recipes = tuple(None if p == "none" else p for p in parts)
    return recipes[0] if len(recipes) == 1 else recipes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m k2_dit.distributed", description=__doc__)
    p.add_argument("--preset", default="tiny", choices=["tiny", "k2-1b"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--global-batch-size", type=int)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--precision", default="bf16", choices=["bf16", "none"])
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "muon"])
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--checkpoint-dir", help="save/resume here (resumes when a checkpoint exists)")
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--stop-after", type=int, help="checkpoint and stop after this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--float8",
        type=_float8,
        default=None,
        help="tensorwise | rowwise | none, or one per stage: tensorwise,rowwise",
    )
    p.add_argument("--pma-every", type=int, default=0, help="PMA snapshot interval (0: off)")
    p.add_argument("--pma-keep", type=int, default=4, help="snapshots averaged at the end")
    p.add_argument("--pma-weighting", default="uniform", choices=["uniform", "ema"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = preset(args.preset, args.steps)
    out = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    cfg = dataclasses.replace(
        cfg,
        global_batch_size=args.global_batch_size or cfg.global_batch_size,
        device=args.device,
        mixed_precision=args.precision,
        optimizer=args.optimizer,
        activation_checkpointing=args.activation_checkpointing,
        compile=args.compile,
        checkpoint_dir=str(out) if out else None,
        checkpoint_every=args.checkpoint_every,
        stop_after=args.stop_after,
        seed=args.seed,
        guard=GuardConfig(),
        metrics_path=str(out / "metrics.jsonl") if out else None,
        float8=args.float8,
        pma_every=args.pma_every,
        pma_keep=args.pma_keep,
        pma_weighting=args.pma_weighting,
    )
    if out:
        out.mkdir(parents=True, exist_ok=True)
    result = train(cfg)
    if result.info.is_main and result.records:
        # The first steps pay for compilation and allocator warm-up.
        times = [r["seconds"] for r in result.records[2:]] or [r["seconds"] for r in result.records]
        summary = {
            "world_size": result.info.world_size,
            "steps": [result.start_step + 1, result.end_step],
            "first_loss": result.records[0]["loss"],
            "last_loss": result.records[-1]["loss"],
            "losses": [round(r["loss"], 6) for r in result.records],
            "median_step_s": statistics.median(times),
            "skipped": sum(r["skipped"] is not None for r in result.records),
            "float8": sorted({str(r["float8"]) for r in result.records}),
            "pma_snapshots": [r["step"] for r in result.records if r["pma"]],
            "pma_checkpoint": str(result.pma_checkpoint) if result.pma_checkpoint else None,
        }
        print(json.dumps(summary))
    shutdown(result.info)


if __name__ == "__main__":
    main()
