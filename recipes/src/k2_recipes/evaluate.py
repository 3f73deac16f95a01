"""Held-out evaluation: sample prompts with the Euler sampler, score them with the world's verifier."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from k2_data.synthetic import verify_batch
from k2_dit.flow import euler_sample
from k2_dit.text import TextEncoder
from k2_recipes.presets import EvalSettings

SCORED_TYPES = ("object", "count", "position")
"""Requirement types behind the headline score: colour and shape (`object`), count, position."""


@dataclass
class EvalResult:
    score: float
    """Mean over samples of the fraction of colour/shape, count and position requirements met."""
    fully_correct: float
    """Fraction of samples meeting every colour/shape, count and position requirement."""
    per_type: dict[str, float]
    """Pass rate per requirement type (all types, style and background included)."""
    num_prompts: int
    images: np.ndarray = field(repr=False)
    prompts: list[str] = field(repr=False)
    sample_scores: list[float] = field(repr=False)

    def summary(self) -> dict[str, float | int | dict[str, float]]:
        return {
            "score": round(self.score, 4),
            "fully_correct": round(self.fully_correct, 4),
            "per_type": {k: round(v, 4) for k, v in self.per_type.items()},
            "num_prompts": self.num_prompts,
        }


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float images [B, 3, H, W] to uint8 [B, H, W, 3]."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def score_images(images: np.ndarray, prompts: list[str]) -> EvalResult:
    results = verify_batch(list(images), prompts)
    sample_scores, full, per_type = [], [], {}
    for res in results:
        scored = [r.passed for r in res.requirements if r.type in SCORED_TYPES]
        sample_scores.append(float(np.mean(scored)) if scored else 1.0)
        full.append(all(scored))
        for r in res.requirements:
            per_type.setdefault(r.type, []).append(r.passed)
    return EvalResult(
        score=float(np.mean(sample_scores)),
        fully_correct=float(np.mean(full)),
        per_type={k: float(np.mean(v)) for k, v in sorted(per_type.items())},
        num_prompts=len(prompts),
        images=images,
        prompts=prompts,
        sample_scores=sample_scores,
    )


@torch.no_grad()
def sample_images(
    model: torch.nn.Module,
    encoder: TextEncoder,
    prompts: list[str],
    settings: EvalSettings,
    *,
    max_tokens: int,
    in_channels: int,
    seed: int,
    device: str = "cpu",
) -> np.ndarray:
    """Generate one image per prompt (CFG with an empty-prompt branch), as uint8 arrays."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    res = settings.resolution
    for start in range(0, len(prompts), settings.batch_size):
        batch = prompts[start : start + settings.batch_size]
        hidden, mask = encoder.encode(batch, max_length=max_tokens)
        hidden, mask = hidden.float().to(device), mask.to(device)
        noise = torch.randn(len(batch), in_channels, res, res, generator=gen).to(device)

        def velocity(x, t, cond):
            h, m = cond
            return model(x, t, h, m)

        uncond = (torch.zeros_like(hidden), torch.zeros_like(mask))
        x0 = euler_sample(
            velocity,
            noise,
            steps=settings.steps,
            shift=settings.shift,
            guidance_scale=settings.guidance_scale,
            cond=(hidden, mask),
            uncond=uncond,
        )
        out.append(to_uint8(x0))
    model.train()
    return np.concatenate(out)


def image_grid(images: np.ndarray, *, side: int, scale: int = 4) -> Image.Image:
    """Tile the first side x side images into one PNG, upscaled with nearest neighbour."""
    n = min(len(images), side * side)
    h, w = images.shape[1:3]
    grid = np.full((side * (h + 1) + 1, side * (w + 1) + 1, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, side)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = images[
            i
        ]
    img = Image.fromarray(grid)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
