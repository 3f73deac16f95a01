"""Training data from the embedded synthetic world: rendered images and cached text features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from k2_data.synthetic import Scene, WorldConfig, captions, render, sample_scenes
from k2_dit.text import TextEncoder, build_tiny_text_encoder
from k2_recipes.presets import PretrainConfig, TextEncoderSettings, WorldSettings
from k2_recipes.progress import progress

VARIANTS = ("long", "medium", "short")


def world_config(settings: WorldSettings) -> WorldConfig:
    return WorldConfig(
        min_objects=settings.min_objects,
        max_objects=settings.max_objects,
        styles=settings.styles,
        sizes=settings.sizes,
        backgrounds=settings.backgrounds,
    )


def scene_prompts(scene) -> tuple[str, str, str]:
    c = captions(scene)
    return (c.long, c.medium, c.short)


@dataclass
class TrainingSet:
    """Images per resolution (uint8, N x 3 x H x W) and text features per caption variant."""

    images: dict[int, torch.Tensor]
    hidden: torch.Tensor
    """[N, 3 variants, L, K hidden states, E] in bfloat16: the frozen encoder ran once per prompt."""
    mask: torch.Tensor
    """[N, 3, L] True on real tokens."""
    prompts: list[tuple[str, str, str]]

    def __len__(self) -> int:
        return len(self.prompts)


def render_images(scenes, resolution: int, *, show: bool = True) -> torch.Tensor:
    out = np.empty((len(scenes), resolution, resolution, 3), dtype=np.uint8)
    for i, scene in enumerate(progress(scenes, desc=f"render {resolution}px", enable=show)):
        out[i] = np.asarray(render(scene, resolution))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def make_text_encoder(
    settings: TextEncoderSettings, corpus: list[str], *, seed: int
) -> TextEncoder:
    """The production path (a local transformers checkpoint) or the tiny path built from a config.

    Both go through the same `TextEncoder` class, so the DiT sees the same kind of input.
    """
    if settings.path is not None:
        return TextEncoder.from_pretrained(settings.path, dtype=torch.float32)
    return build_tiny_text_encoder(
        corpus,
        hidden_size=settings.hidden_size,
        num_layers=settings.num_layers,
        num_heads=settings.num_heads,
        vocab_size=settings.vocab_size,
        seed=seed,
    )


@torch.no_grad()
def encode_prompts(
    encoder: TextEncoder,
    prompts: list[str],
    *,
    max_length: int,
    batch_size: int = 512,
    show: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts in batches; returns bf16 hidden states [N, L, K, E] and masks [N, L]."""
    chunks = []
    for start in progress(range(0, len(prompts), batch_size), desc="encode captions", enable=show):
        hidden, mask = encoder.encode(prompts[start : start + batch_size], max_length=max_length)
        chunks.append((hidden.to(torch.bfloat16), mask))
    length = max(h.shape[1] for h, _ in chunks)
    k, e = chunks[0][0].shape[2:]
    hidden = torch.zeros(len(prompts), length, k, e, dtype=torch.bfloat16)
    mask = torch.zeros(len(prompts), length, dtype=torch.bool)
    row = 0
    for h, m in chunks:
        hidden[row : row + h.shape[0], : h.shape[1]] = h
        mask[row : row + m.shape[0], : m.shape[1]] = m
        row += h.shape[0]
    return hidden, mask


def build_training_set(
    cfg: PretrainConfig, *, show: bool = True, scenes: Sequence[Scene] | None = None
) -> tuple[TrainingSet, TextEncoder]:
    """Render the training scenes at every stage resolution and encode all caption variants.

    `scenes` (e.g. `k2_recipes.curate.CurateResult.scenes`, the curated set) replaces the
    `cfg.world.train_scenes` scenes drawn from the world; the tokenizer of the tiny encoder
    is trained on their captions, as it would be on the drawn ones.
    """
    if scenes is None:
        world = world_config(cfg.world)
        scenes = sample_scenes(
            cfg.world.train_scenes, seed=cfg.world.seed, config=world, split="train"
        )
    elif len(scenes) == 0:
        raise ValueError("build_training_set got scenes=[]; pass None to draw cfg.world's scenes")
    prompts = [scene_prompts(s) for s in scenes]
    flat = [p for triple in prompts for p in triple]
    encoder = make_text_encoder(cfg.text_encoder, flat, seed=cfg.seed)
    resolutions = sorted(
        {s.resolution for s in (cfg.low_res, cfg.high_res) if s.steps > 0} | {cfg.eval.resolution}
    )
    images = {r: render_images(scenes, r, show=show) for r in resolutions}
    hidden, mask = encode_prompts(encoder, flat, max_length=cfg.text_encoder.max_tokens, show=show)
    n = len(scenes)
    hidden = hidden.view(n, len(VARIANTS), *hidden.shape[1:])
    mask = mask.view(n, len(VARIANTS), -1)
    return TrainingSet(images=images, hidden=hidden, mask=mask, prompts=prompts), encoder


def heldout_scenes(cfg: PretrainConfig, n: int):
    return sample_scenes(n, seed=cfg.world.seed, config=world_config(cfg.world), split="heldout")
