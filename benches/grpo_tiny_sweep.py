"""CFG-free GRPO variants from one post-training checkpoint of a tiny run, scored on held-out prompts.

Loads `<run>/checkpoints/<start>` (the STPO checkpoint of `k2 demo` by default), runs the
recipe's `train_grpo` once per variant (`key=value` overrides of `GRPOConfig`, joined by `,`),
and prints the CFG-free held-out verifier score before and after. Used to find what makes the
tiny GRPO stage learn; the measured table is in docs/benchmarks.md.

    uv run python benches/grpo_tiny_sweep.py --run runs/demo-tiny base shared_noise=False \\
        lr=3e-5,iterations=80
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import fields, replace

import torch

from k2_dit.model import DiT
from k2_dit.train import load_checkpoint
from k2_recipes.posttrain.command import load_pretrain_config
from k2_recipes.posttrain.common import PromptBank, evaluate, heldout_prompts, train_scenes
from k2_recipes.posttrain.grpo import train_grpo
from k2_recipes.posttrain.pipeline import _POOL_OFFSET, load_pretrained
from k2_recipes.posttrain.presets import POSTTRAIN_PRESETS, GRPOConfig
from k2_recipes.rundir import RunDir


def _variant(spec: str, base: GRPOConfig) -> GRPOConfig:
    if spec == "base":
        return base
    types = {f.name: f.type for f in fields(GRPOConfig)}
    changes = {}
    for item in spec.split(","):
        key, value = item.split("=")
        if key not in types:
            raise SystemExit(f"unknown GRPOConfig field {key!r}")
        changes[key] = (value == "True") if value in ("True", "False") else type_of(value)
    return replace(base, **changes)


def type_of(value: str):
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=["base"])
    parser.add_argument("--run", default="runs/demo-tiny")
    parser.add_argument("--start", default="stpo")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--eval-steps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pre = load_pretrain_config(args.run)
    _, encoder = load_pretrained(args.run, device=pre.device)
    start, _, _ = load_checkpoint(f"{args.run}/checkpoints/{args.start}", DiT)
    start.eval()
    pre = replace(pre, model=start.config)
    heldout = heldout_prompts(pre, args.prompts)

    def score(model) -> float:
        ev = evaluate(model, encoder, heldout, pre, steps=args.eval_steps, guidance=1.0, seed=1)
        return ev["no_cfg"].score

    before = score(start)
    print(f"start ({args.start}): CFG-free score {before:.3f} on {args.prompts} prompts")
    base = POSTTRAIN_PRESETS["tiny"].grpo
    for spec in args.variants:
        cfg = _variant(spec, base)
        _, pool = train_scenes(pre, cfg.pool_prompts, offset=_POOL_OFFSET)
        bank = PromptBank(encoder, pool, max_tokens=pre.text_encoder.max_tokens, device="cpu")
        torch.manual_seed(args.seed)
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            run = RunDir(tmp)
            out = train_grpo(start, bank, cfg, pre, run, seed=args.seed + 4, progress=args.progress)
            run.close()
        seconds = time.time() - t0
        after = score(out.model)
        rewards = [r["reward_mean"] for r in out.curve]
        q = max(1, len(rewards) // 4)
        row = {
            "variant": spec,
            "before": before,
            "after": after,
            "delta": after - before,
            "reward_first_quarter": sum(rewards[:q]) / q,
            "reward_last_quarter": sum(rewards[-q:]) / q,
            "kl_last": out.curve[-1]["kl"],
            "grad_half_cosine": (
                sum(r["grad_half_cosine"] for r in out.curve) / len(out.curve)
                if "grad_half_cosine" in out.curve[0]
                else None
            ),
            "seconds": seconds,
        }
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
