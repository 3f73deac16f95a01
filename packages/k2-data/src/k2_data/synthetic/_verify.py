"""The verifier: score an image against a prompt of the synthetic world, requirement by
requirement."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Shaped
from PIL import Image

from k2_data.synthetic._detect import DetectedObject, Detection, _analyse
from k2_data.synthetic._parse import REQUIREMENT_TYPES, PromptSpec, Requirement, parse_prompt
from k2_data.synthetic._vocab import position_of

MIN_SIDE = 16
_PIXEL_BUDGET = 1 << 20
"""Pixels analysed per vectorised chunk (bounds memory at large resolutions)."""

ImageLike = Shaped[np.ndarray, "_h _w *_c"] | Image.Image
"""uint8 (H, W, 3) RGB array or PIL image; dtype and channels are checked with a clear error."""


@dataclass(frozen=True, kw_only=True)
class VerificationResult:
    """The verdict on one (image, prompt) pair.

    Args:
        prompt: the prompt as given.
        requirements: every requirement of the prompt, with `passed` filled in.
        detection: what was read from the image (objects, background, style).
    """

    prompt: str
    requirements: tuple[Requirement, ...]
    detection: Detection

    @property
    def score(self) -> float:
        """Fraction of requirements passed (each requirement weighs the same)."""
        return sum(bool(r.passed) for r in self.requirements) / len(self.requirements)

    @property
    def all_passed(self) -> bool:
        """True when every requirement passed."""
        return all(r.passed for r in self.requirements)

    def scores_by_type(self) -> dict[str, float]:
        """Fraction passed per requirement type, for the types the prompt has."""
        out: dict[str, float] = {}
        for kind in REQUIREMENT_TYPES:
            got = [bool(r.passed) for r in self.requirements if r.type == kind]
            if got:
                out[kind] = sum(got) / len(got)
        return out


def _as_array(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 RGB image of shape (H, W, 3), got {image.dtype} {image.shape}; "
            "convert with np.asarray(pil_image.convert('RGB')) or (x * 255).round().astype(uint8)"
        )
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"image of {image.shape[1]}x{image.shape[0]} px is below the verifier's minimum "
            f"side of {MIN_SIDE} px; upsample it (nearest) first"
        )
    return image


def detect_batch(images: Sequence[ImageLike] | Shaped[np.ndarray, "b h w *c"]) -> list[Detection]:
    """Read objects, background and style from each image (vectorised per image size).

    Args:
        images: uint8 (H, W, 3) arrays or PIL images, any sizes with a side >= 16, or one
            (B, H, W, 3) array.

    Returns:
        One `Detection` per image, in order.
    """
    arrays = [_as_array(im) for im in images]
    out: list[Detection | None] = [None] * len(arrays)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, a in enumerate(arrays):
        by_size.setdefault(a.shape[:2], []).append(i)
    for (h, w), idx in by_size.items():
        chunk = max(1, _PIXEL_BUDGET // (h * w))
        for start in range(0, len(idx), chunk):
            part = idx[start : start + chunk]
            for i, det in zip(part, _analyse(np.stack([arrays[i] for i in part])), strict=True):
                out[i] = det
    return [d for d in out if d is not None]


def detect(image: ImageLike) -> Detection:
    """`detect_batch` for one image."""
    return detect_batch([image])[0]


def _group_position(found: list[DetectedObject]) -> str:
    x = sum(o.centre[0] for o in found) / len(found)
    y = sum(o.centre[1] for o in found) / len(found)
    return position_of(x, y)


def check(spec: PromptSpec, detection: Detection) -> tuple[Requirement, ...]:
    """Decide each requirement of `spec` against what was detected.

    Rule per group (colour c, shape s, count n, position p): let F be the detected objects
    with colour c and shape s. `object` passes if F is non-empty; `count` if |F| == n;
    `position` if F is non-empty and the mean of their centres lies in cell p. `style` and
    `background` pass if the detected one equals the named one (a detection needs >= 30% of
    the image at one background grey level, and style also needs at least one object).

    Args:
        spec: the parsed prompt.
        detection: the image's detection.

    Returns:
        The requirements with `passed` set.
    """
    found: dict[int, list[DetectedObject]] = {}
    for i, o in enumerate(spec.objects):
        found[i] = [d for d in detection.objects if d.colour == o.colour and d.shape == o.shape]
    out = []
    for req in spec.requirements:
        if req.type == "object":
            ok = bool(found[req.group])
        elif req.type == "count":
            ok = len(found[req.group]) == req.count
        elif req.type == "position":
            f = found[req.group]
            ok = bool(f) and _group_position(f) == req.position
        elif req.type == "style":
            ok = detection.style == req.style
        else:
            ok = detection.background == req.background
        out.append(dataclasses.replace(req, passed=ok))
    return tuple(out)


def verify_batch(
    images: Sequence[ImageLike] | Shaped[np.ndarray, "b h w *c"], prompts: Sequence[str]
) -> list[VerificationResult]:
    """Score each image against its prompt (see `check` for the rule); vectorised numpy.

    Args:
        images: uint8 (H, W, 3) arrays or PIL images (side >= 16), or one (B, H, W, 3) array.
        prompts: one prompt per image, in the world's grammar (any caption variant).

    Returns:
        One `VerificationResult` per pair; `.score` is the fraction of requirements passed.

    Raises:
        ValueError: on a prompt outside the grammar (naming the unparsed text), a count
            mismatch, or an image that is not uint8 RGB with a side >= 16.

    References:
        Ghosh et al. 2023, GenEval (per-requirement object / count / position / colour
        checks); Krea 2 report, post-training (rubric rewards scored per requirement).
    """
    if len(images) != len(prompts):
        raise ValueError(f"verify_batch got {len(images)} images but {len(prompts)} prompts")
    specs = [parse_prompt(p) for p in prompts]
    detections = detect_batch(images)
    return [
        VerificationResult(prompt=p, requirements=check(s, d), detection=d)
        for p, s, d in zip(prompts, specs, detections, strict=True)
    ]


def verify(image: ImageLike, prompt: str) -> VerificationResult:
    """Score one image against one prompt; see `verify_batch`.

    Args:
        image: uint8 (H, W, 3) array or PIL image with a side >= 16.
        prompt: a prompt in the world's grammar.

    Returns:
        The verdict per requirement and the mean score.
    """
    return verify_batch([image], [prompt])[0]
