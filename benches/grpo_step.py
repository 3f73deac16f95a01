"""Flow-GRPO iteration cost per sample: rollout, reward and training vs pure sampling.

The default k2 model at about 1.2B parameters (width 2048, 24 blocks, 16 query / 4 KV heads),
bf16, 1024 image tokens (a 32x32 latent of 128 channels) + 256 text tokens; one iteration is
`groups x group_size` samples. Rows, all per sample:

- `sampling (ODE, eval steps)`: plain Euler sampling with the evaluation step count, no
  log-probs: what generating an image costs;
- `rollout (training steps)`: `k2_rl.grpo.sample_with_logprobs` with the shorter training
  grid and an SDE window (log-probs in fp32);
- `reward`: the synthetic world's rubric reward on uint8 images of the eval resolution (CPU;
  it can overlap with training through `k2_rl.rewards.AsyncRewardScorer`);
- `training`: for every SDE step of the window, the policy's `transition_log_prob` forward
  + backward, the frozen reference's forward for the velocity KL, and `grpo_loss`; then the
  optimiser step (AdamW).

The target is training time <= 2x the pure sampling cost. On an H200:

    python benches/grpo_step.py --json grpo_step.json
    python benches/grpo_step.py --tiny           # CPU smoke run, seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
from dit_step import k2_config, sync  # benches/ is on sys.path when run as a script

from k2_data.synthetic import WorldConfig, captions, render, sample_scenes
from k2_dit.model import DiT
from k2_recipes.rubric_world import world_rubric_reward
from k2_rl.grpo import (
    grpo_loss,
    rollout_timesteps,
    sample_with_logprobs,
    sliding_sde_window,
    transition_log_prob,
    velocity_kl,
)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Seconds per call: the best of `repeats` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--eval-steps", type=int, default=28)
    p.add_argument("--rollout-steps", type=int, default=10)
    p.add_argument("--sde-window", type=int, default=2)
    p.add_argument("--image-side", type=int, help="latent side (default 32: 1024 tokens)")
    p.add_argument("--text-tokens", type=int)
    p.add_argument("--reward-resolution", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile each block")
    p.add_argument("--json")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = k2_config(args.tiny)  # the same model as benches/dit_step.py
    side = args.image_side or (4 if args.tiny else 32)
    n_txt = args.text_tokens or (8 if args.tiny else 256)
    b = args.groups * args.group_size

    torch.manual_seed(0)
    policy = DiT(cfg).to(device, dtype).eval()
    ref = copy.deepcopy(policy).requires_grad_(False)
    if args.compile:
        for model in (policy, ref):
            for blk in model.blocks:
                blk.compile()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6, weight_decay=0.0)
    gen = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(b, n_txt, cfg.text.num_layers, cfg.text.encoder_dim, generator=gen)
    hidden, mask = hidden.to(device, dtype), torch.ones(b, n_txt, dtype=torch.bool, device=device)
    x_T = torch.randn(b, cfg.in_channels, side, side, generator=gen).to(device, dtype)

    def policy_fn(x, t):
        return policy(x, t, hidden, mask)

    def ref_fn(x, t):
        return ref(x, t, hidden, mask)

    eval_grid = rollout_timesteps(args.eval_steps, shift=3.0, device=device)
    train_grid = rollout_timesteps(args.rollout_steps, shift=3.0, device=device)
    window = sliding_sde_window(
        args.rollout_steps, size=args.sde_window, iteration=0, shift_every=1
    )
    state: dict = {}

    @torch.no_grad()
    def sample_ode():
        x = x_T.float()
        for i in range(args.eval_steps):
            t = eval_grid[i].expand(b)
            x = x + (eval_grid[i + 1] - eval_grid[i]) * policy_fn(x.to(dtype), t).float()
        return x

    def rollout():
        state["traj"] = sample_with_logprobs(
            policy_fn, x_T, train_grid, noise_level=0.7, sde_window=window, generator=gen
        )

    rollout()
    adv = torch.randn(b, generator=gen).to(device)

    def train():
        traj = state["traj"]
        opt.zero_grad(set_to_none=True)
        k = len(traj.sde_steps)
        for j in range(k):
            new = transition_log_prob(policy_fn, traj, j)
            x, t, t_next, _ = traj.transition(j)
            with torch.no_grad():
                v_ref = ref_fn(x.to(dtype), t)
            kl = velocity_kl(new.velocity, v_ref, t, t_next, noise_level=0.7)
            out = grpo_loss(
                new.log_prob, traj.log_probs[:, j], adv, clip_range=1e-4, kl=kl, kl_coef=0.01
            )
            (out.loss.mean() / k).backward()
        opt.step()

    # The reward scores real renders of the world (the verifier's work does not depend on
    # the model, only on image size and prompt), so the row is meaningful without a VAE.
    world = WorldConfig(max_objects=3)
    scenes = sample_scenes(b, seed=0, config=world, split="heldout")
    images = [np.asarray(render(s, args.reward_resolution)) for s in scenes]
    prompts = [captions(s).medium for s in scenes]
    reward_fn = world_rubric_reward()

    def reward():
        reward_fn(images, prompts)

    rows = {}
    rows["sampling (ODE, eval steps)"] = timed(sample_ode, device, args.repeats)
    rows["rollout (training steps)"] = timed(rollout, device, args.repeats)
    rows["reward"] = timed(reward, device, args.repeats)
    rows["training"] = timed(train, device, args.repeats)
    per_sample = {k: v / b for k, v in rows.items()}
    sampling = per_sample["sampling (ODE, eval steps)"]
    ratio = per_sample["training"] / sampling
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {name}, torch {torch.__version__}, {sum(p.numel() for p in policy.parameters()) / 1e9:.3f}B "
        f"params, {dtype}, batch {b} ({args.groups} groups x {args.group_size}), "
        f"{side * side} image + {n_txt} text tokens, eval {args.eval_steps} steps, rollout "
        f"{args.rollout_steps} steps, SDE window {args.sde_window}, compile {args.compile}"
    )
    print("| phase | ms per iteration | ms per sample | x pure sampling |")
    print("|---|---:|---:|---:|")
    for k, v in rows.items():
        print(
            f"| {k} | {1e3 * v:.1f} | {1e3 * per_sample[k]:.2f} | {per_sample[k] / sampling:.2f} |"
        )
    print(f"training / pure sampling = {ratio:.2f} (target <= 2)")
    if args.json:
        meta = {k: v for k, v in vars(args).items() if k != "json"}
        meta |= {"device": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "seconds_per_iteration": rows, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
