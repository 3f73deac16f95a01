"""Rubric rewards on the synthetic world: a rule-based decomposer and a deterministic verifier
that adapt `k2_data.synthetic` to the `k2_rl.rewards` rubric interfaces.

k2_rl never imports k2_data, so this adapter lives in the recipe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from k2_data.synthetic import parse_prompt, verify_batch
from k2_rl.rewards import Requirement, Rubric, RubricReward

_ID = {"style": "style", "background": "background"}


def _requirement_id(req: Any) -> str:
    return _ID.get(req.type) or f"g{req.group}.{req.type}"


class WorldDecomposer:
    """Rule-based decomposer: parse a world prompt into a rubric with dependency edges.

    Requirements follow `k2_data.synthetic.PromptSpec.requirements` (per object group:
    object, count, then position if named; then style and background). Count and position
    depend on their group's object being present; all weights are 1, so with no failed
    dependency the rubric score equals the verifier's fraction passed.

    Args:
        weights: optional weight per requirement type (others weigh 1).
    """

    def __init__(self, *, weights: dict[str, float] | None = None) -> None:
        self.weights = dict(weights or {})

    def __call__(self, prompt: str) -> Rubric:
        spec = parse_prompt(prompt)
        reqs = []
        for index, req in enumerate(spec.requirements):
            deps = (f"g{req.group}.object",) if req.type in ("count", "position") else ()
            reqs.append(
                Requirement(
                    id=_requirement_id(req),
                    type=req.type,
                    text=req.text,
                    weight=self.weights.get(req.type, 1.0),
                    depends_on=deps,
                    # The verifier re-runs `verify` on the prompt and reads requirement `index`.
                    params={"prompt": prompt, "index": index},
                )
            )
        return Rubric(prompt=prompt, requirements=tuple(reqs))


def _as_uint8_hwc(image: Any) -> np.ndarray | Image.Image:
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(
                f"expected a uint8 image tensor of shape (3, H, W), got {image.dtype} "
                f"{tuple(image.shape)}; convert with ((x + 1) * 127.5).round().clamp(0, 255)"
                ".to(torch.uint8) for samples in [-1, 1]"
            )
        return image.permute(1, 2, 0).cpu().numpy()
    return image


class WorldVerifier:
    """Deterministic verifier: each (image, requirement) pair scores 1 if
    `k2_data.synthetic.verify` passes the requirement, else 0.

    Images may be uint8 (H, W, 3) arrays, PIL images or uint8 (3, H, W) tensors. Each
    distinct (image, prompt) pair is verified once, in one `verify_batch` call.
    """

    def __call__(self, images: Sequence[Any], requirements: Sequence[Requirement]) -> torch.Tensor:
        if len(images) != len(requirements):
            raise ValueError(f"got {len(images)} images but {len(requirements)} requirements")
        keys: dict[tuple[int, str], int] = {}
        unique_images, unique_prompts, slots = [], [], []
        for image, req in zip(images, requirements, strict=True):
            if "prompt" not in req.params or "index" not in req.params:
                raise ValueError(
                    f"requirement {req.id!r} lacks params 'prompt' and 'index'; build rubrics "
                    "for WorldVerifier with WorldDecomposer"
                )
            key = (id(image), req.params["prompt"])
            if key not in keys:
                keys[key] = len(unique_images)
                unique_images.append(_as_uint8_hwc(image))
                unique_prompts.append(req.params["prompt"])
            slots.append((keys[key], req.params["index"]))
        results = verify_batch(unique_images, unique_prompts)
        passed = [bool(results[u].requirements[i].passed) for u, i in slots]
        return torch.tensor(passed, dtype=torch.float32)


def world_rubric_reward(**kwargs: Any) -> RubricReward:
    """A cached `RubricReward` (images, prompts) -> scores for the synthetic world.

    Args:
        **kwargs: passed to `RubricReward` (gating, threshold).

    Returns:
        The reward, built from `WorldDecomposer` and `WorldVerifier`.
    """
    return RubricReward(WorldDecomposer(), WorldVerifier(), **kwargs)
