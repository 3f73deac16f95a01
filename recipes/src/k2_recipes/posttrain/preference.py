"""Preference optimisation: on-policy pairs scored by the rubric reward, then STPO and Flow-DPO.

Pairs follow the report's delta-learning recipe: each prompt gets a group of samples from
the current (SFT) model and a few from a weaker generator (fewer Euler steps, no CFG); the
synthetic world's rubric reward judges them and `k2_rl.preference.build_preference_pairs`
keeps within-group best-vs-worst and on-policy-vs-weak pairs whose margin clears δ, so
every pair holds an on-policy sample. Each loss then trains a copy of the SFT model
against a frozen reference copy, logging Δ_w, Δ_l, implicit accuracy and margin per step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from k2_dit.flow import interpolate, shifted_logit_normal_timesteps
from k2_dit.train import save_checkpoint
from k2_recipes.posttrain.common import PromptBank, from_uint8, frozen_copy, generate, to_uint8
from k2_recipes.posttrain.presets import PreferenceConfig
from k2_recipes.presets import PretrainConfig
from k2_recipes.progress import progress as bar
from k2_recipes.rubric_world import world_rubric_reward
from k2_recipes.rundir import RunDir
from k2_rl.preference import build_preference_pairs, flow_matching_errors, preference_loss

STAGE_NAMES = {"stpo_a": "stpo", "dpo": "dpo"}
"""Run-directory stage name of each preference loss (others keep the loss name)."""

_CHUNK = 64  # samples per sampler call


@dataclass
class PairSet:
    """Kept pairs as training tensors, plus what the builder saw."""

    winner: Tensor
    """[p, 3, H, W] in [-1, 1]: the images the judge scored (uint8 round trip)."""
    loser: Tensor
    prompt_index: Tensor
    """[p] index into the prompt bank."""
    kinds: tuple[str, ...]
    margin: Tensor
    rejected: dict[str, int]
    mean_reward: dict[str, float]
    """Mean rubric reward of each candidate source (on_policy, weak, curated)."""

    def __len__(self) -> int:
        return len(self.kinds)

    def summary(self) -> dict[str, object]:
        return {
            "pairs": len(self),
            "by_kind": {k: self.kinds.count(k) for k in sorted(set(self.kinds))},
            "rejected": self.rejected,
            "mean_reward": self.mean_reward,
            "mean_margin": float(self.margin.mean()) if len(self) else 0.0,
        }


@dataclass
class PreferenceRun:
    loss_type: str
    model: nn.Module
    curve: list[dict[str, float]] = field(default_factory=list)
    """Batch means per step: loss, delta_w, delta_l, accuracy, margin."""


def _sample(model, bank, rows, *, steps, shift, guidance, gen, channels, res) -> list[Tensor]:
    out = []
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        hidden, mask = bank.get(chunk)
        noise = torch.randn(len(chunk), channels, res, res, generator=gen).to(hidden.device)
        out.append(
            generate(
                model, hidden, mask, noise, steps=steps, shift=shift, guidance_scale=guidance
            ).cpu()
        )
    return out


def build_pairs(
    model: nn.Module,
    bank: PromptBank,
    cfg: PreferenceConfig,
    pretrain: PretrainConfig,
    *,
    curated: np.ndarray | None = None,
    seed: int,
) -> PairSet:
    """Sample on-policy and weak candidates for every prompt, judge them, keep confident pairs.

    Args:
        model: the current policy (the SFT model).
        bank: the prompts, encoded.
        cfg: preference settings (group size, weak generator, δ).
        pretrain: for the resolution, channels and inference shift.
        curated: optional uint8 [n_prompts, H, W, 3] curated image per prompt (the world's
            ground-truth render); each becomes a "vs_curated" candidate.
        seed: sampling seed.

    Returns:
        The kept pairs with what was rejected and the mean reward of each source.
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(bank)
    kw = dict(gen=gen, channels=pretrain.model.in_channels, res=pretrain.eval.resolution)
    on_rows = [i for i in range(n) for _ in range(cfg.group_size)]
    weak_rows = [i for i in range(n) for _ in range(cfg.weak_per_prompt)]
    shift = pretrain.eval.shift
    on = _sample(
        model, bank, on_rows, steps=cfg.sample_steps, shift=shift, guidance=cfg.guidance_scale, **kw
    )
    weak = _sample(model, bank, weak_rows, steps=cfg.weak_steps, shift=shift, guidance=1.0, **kw)
    images = to_uint8(torch.cat(on + weak))
    rows = on_rows + weak_rows
    sources = ["on_policy"] * len(on_rows) + ["weak"] * len(weak_rows)
    if curated is not None:
        if curated.shape[:1] != (n,) or curated.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"curated has shape {curated.shape}; pass one uint8 {images.shape[1:]} image "
                f"per prompt ({n})"
            )
        images = np.concatenate([images, curated])
        rows, sources = rows + list(range(n)), sources + ["curated"] * n
    rewards = world_rubric_reward()(list(images), [bank.prompts[i] for i in rows]).double()
    pairs = build_preference_pairs(
        rewards[:, None],
        sources,
        rows,
        thresholds=torch.tensor([cfg.margin_threshold], dtype=torch.float64),
    )
    x = from_uint8(images).to(pretrain.device)
    src = np.array(sources)
    return PairSet(
        winner=x[pairs.winner],
        loser=x[pairs.loser],
        prompt_index=pairs.group,
        kinds=pairs.kind,
        margin=pairs.margin,
        rejected=dict(pairs.rejected),
        mean_reward={
            k: float(rewards[torch.from_numpy(src == k)].mean()) for k in sorted(set(sources))
        },
    )


def train_preference(
    sft_model: nn.Module,
    pairs: PairSet,
    bank: PromptBank,
    cfg: PreferenceConfig,
    pretrain: PretrainConfig,
    run: RunDir,
    *,
    loss_type: str,
    seed: int,
    progress: bool = True,
) -> PreferenceRun:
    """Train a copy of the SFT model on the pairs with one preference loss; save it.

    Winner and loser of a pair share t and ε (the losses compare their errors). Runs with
    the same seed see the same batches, timesteps and noise, so DPO and STPO differ only
    in the loss.
    """
    if len(pairs) == 0:
        raise ValueError(
            "no preference pairs were kept; lower preference.margin_threshold or sample more "
            "prompts (preference.num_prompts, preference.group_size)"
        )
    name = STAGE_NAMES.get(loss_type, loss_type)
    policy = copy.deepcopy(sft_model).eval()  # eval mode: the DiT has no dropout
    policy.requires_grad_(True)
    ref = frozen_copy(sft_model)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=pretrain.betas, weight_decay=0)
    gen = torch.Generator().manual_seed(seed)
    device = pretrain.device
    result = PreferenceRun(loss_type=loss_type, model=policy)
    b = cfg.batch_size
    for step in bar(range(cfg.steps), desc=name, enable=progress):
        idx = torch.randint(len(pairs), (b,), generator=gen)
        hidden, mask = bank.get(pairs.prompt_index[idx])
        t = shifted_logit_normal_timesteps(b, shift=cfg.shift, generator=gen).to(device)
        x_w, x_l = pairs.winner[idx.to(device)], pairs.loser[idx.to(device)]
        noise = torch.randn(x_w.shape, generator=gen).to(device)
        x_t = torch.cat([interpolate(x_w, noise, t), interpolate(x_l, noise, t)])
        target = torch.cat([noise - x_w, noise - x_l])
        args = (x_t, torch.cat([t, t]), torch.cat([hidden, hidden]), torch.cat([mask, mask]))
        err = flow_matching_errors(policy(*args), target)
        with torch.no_grad():
            ref_err = flow_matching_errors(ref(*args), target)
        out = preference_loss(
            err[:b], err[b:], ref_err[:b], ref_err[b:], loss_type=loss_type, beta=cfg.beta
        )
        opt.zero_grad(set_to_none=True)
        out.loss.mean().backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), pretrain.grad_clip)
        opt.step()
        row = {k: float(v) for k, v in out.metrics().items()}
        row["step"] = step + 1
        result.curve.append(row)
        run.log(stage=name, loss_type=loss_type, grad_norm=float(grad_norm), **row)
    policy.eval()
    save_checkpoint(
        run.path / "checkpoints" / name,
        policy,
        pretrain.model,
        step=cfg.steps,
        extra={"loss_type": loss_type, "beta": cfg.beta, "pairs": len(pairs)},
    )
    return result
