"""What every post-training stage shares: prompt sets, cached text features, sampling, evaluation."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor, nn

from k2_data.synthetic import sample_scenes
from k2_dit.flow import euler_sample
from k2_dit.text import TextEncoder
from k2_recipes.evaluate import EvalResult, sample_images, score_images
from k2_recipes.presets import PretrainConfig
from k2_recipes.world import VARIANTS, heldout_scenes, scene_prompts, world_config

EVAL_MODES = ("no_cfg", "cfg")
"""Every checkpoint is scored CFG-free (guidance 1) and with the guided sampler."""


def heldout_prompts(pretrain: PretrainConfig, n: int) -> list[str]:
    """The first n held-out prompts of the pretraining evaluation (same caption variant)."""
    which = VARIANTS.index(pretrain.eval.caption)
    return [scene_prompts(s)[which] for s in heldout_scenes(pretrain, n)]


def train_scenes(pretrain: PretrainConfig, n: int, *, offset: int) -> tuple[list, list[str]]:
    """n training-split scenes of the pretraining world from scene index `offset` on, and
    their prompts (the evaluation's caption variant).

    Post-training prompts come from the train split (never the held-out one), past the
    scenes pretraining rendered when `offset` >= `world.train_scenes`.
    """
    which = VARIANTS.index(pretrain.eval.caption)
    scenes = sample_scenes(
        n, seed=pretrain.world.seed, config=world_config(pretrain.world), start=offset
    )
    return scenes, [scene_prompts(s)[which] for s in scenes]


class PromptBank:
    """Text features of a fixed prompt list, encoded once by the frozen encoder."""

    def __init__(
        self, encoder: TextEncoder, prompts: list[str], *, max_tokens: int, device: str
    ) -> None:
        self.prompts = list(prompts)
        with torch.no_grad():
            hidden, mask = encoder.encode(self.prompts, max_length=max_tokens)
        self.hidden, self.mask = hidden.float().to(device), mask.to(device)

    def __len__(self) -> int:
        return len(self.prompts)

    def get(self, index: Tensor | list[int]) -> tuple[Tensor, Tensor]:
        """Hidden states and masks of the given prompts, trimmed to the longest of them."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.mask.device)
        mask = self.mask[idx]
        length = max(int(mask.sum(1).max()), 1)
        return self.hidden[idx, :length], mask[:, :length]


def frozen_copy(model: nn.Module) -> nn.Module:
    """A detached copy for the reference model (no gradients, eval mode)."""
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def velocity(model: nn.Module, hidden: Tensor, mask: Tensor):
    """`(x, t) -> v` of the DiT conditioned on one batch of prompts (the k2_rl convention)."""

    def fn(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t, hidden, mask)

    return fn


@torch.no_grad()
def generate(
    model: nn.Module,
    hidden: Tensor,
    mask: Tensor,
    noise: Tensor,
    *,
    steps: int,
    shift: float,
    guidance_scale: float,
) -> Tensor:
    """Euler samples in [-1, 1] (clamped), with CFG against an empty prompt when scale != 1."""

    def fn(x, t, cond):
        return model(x, t, *cond)

    uncond = (torch.zeros_like(hidden), torch.zeros_like(mask))
    x0 = euler_sample(
        fn,
        noise,
        steps=steps,
        shift=shift,
        guidance_scale=guidance_scale,
        cond=(hidden, mask),
        uncond=uncond,
    )
    return x0.clamp(-1, 1)


def to_uint8(images: Tensor) -> np.ndarray:
    """[-1, 1] float [B, 3, H, W] to uint8 [B, H, W, 3] (what the verifier reads)."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> Tensor:
    """uint8 [B, H, W, 3] back to float [B, 3, H, W] in [-1, 1] (the training target)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def evaluate(
    model: nn.Module,
    encoder: TextEncoder,
    prompts: list[str],
    pretrain: PretrainConfig,
    *,
    steps: int,
    guidance: float,
    seed: int,
) -> dict[str, EvalResult]:
    """Held-out verifier scores CFG-free and guided (same noise for every checkpoint)."""
    out = {}
    for mode, scale in zip(EVAL_MODES, (1.0, guidance), strict=True):
        settings = replace(pretrain.eval, steps=steps, guidance_scale=scale)
        images = sample_images(
            model,
            encoder,
            prompts,
            settings,
            max_tokens=pretrain.text_encoder.max_tokens,
            in_channels=pretrain.model.in_channels,
            seed=seed,
            device=pretrain.device,
        )
        out[mode] = score_images(images, prompts)
    model.eval()  # sample_images leaves train mode on; post-training runs in eval mode
    return out
