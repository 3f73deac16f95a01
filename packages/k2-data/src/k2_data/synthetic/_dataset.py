"""Samples: a rendered scene with its captions and per-object ground truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from jaxtyping import UInt8

from k2_data.synthetic._captions import Captions, captions
from k2_data.synthetic._render import render
from k2_data.synthetic._scene import Box, Scene
from k2_data.synthetic._vocab import palette_rgb, position_of


@dataclass(frozen=True, kw_only=True)
class ObjectAnnotation:
    """Ground truth for one drawn object (each member of a group has its own).

    Args:
        shape: one of `SHAPES`.
        colour: colour name (one of `COLOURS`).
        rgb: the colour as drawn in the scene's style, before shading, stripes or noise.
        size: one of `SIZES`.
        position: 3x3 cell of this object's centre.
        group: index of its group in `Scene.objects`.
        group_position: 3x3 cell of the group's centre (the position captions name).
        bbox: (x0, y0, x1, y1) of the shape, normalised to [0, 1] (outline and glow excluded).
    """

    shape: str
    colour: str
    rgb: tuple[int, int, int]
    size: str
    position: str
    group: int
    group_position: str
    bbox: Box


def annotations(scene: Scene) -> tuple[ObjectAnnotation, ...]:
    """Per-object ground truth of a scene, groups in order, members in order."""
    out = []
    for g, obj in enumerate(scene.objects):
        rgb = palette_rgb(obj.colour, scene.style)
        for (x, y), box in zip(obj.centres, obj.boxes, strict=True):
            out.append(
                ObjectAnnotation(
                    shape=obj.shape,
                    colour=obj.colour,
                    rgb=rgb,
                    size=obj.size,
                    position=position_of(x, y),
                    group=g,
                    group_position=obj.position,
                    bbox=box,
                )
            )
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One training record: image, captions, ground truth and a key.

    Args:
        key: sample key (the WebDataset `__key__`).
        scene: the scene.
        image: the rendered image.
        captions: long (the training caption), medium and short variants.
        annotations: per-object ground truth.
    """

    key: str
    scene: Scene
    image: UInt8[np.ndarray, "h w 3"]
    captions: Captions
    annotations: tuple[ObjectAnnotation, ...]

    def metadata(self) -> dict:
        """img2dataset-style JSON fields plus the prompt variants, style and ground truth."""
        h, w = self.image.shape[:2]
        return {
            "key": self.key,
            "caption": self.captions.long,
            "caption_medium": self.captions.medium,
            "caption_short": self.captions.short,
            "status": "success",
            "error_message": None,
            "width": w,
            "height": h,
            "original_width": w,
            "original_height": h,
            "seed": self.scene.seed,
            "style": self.scene.style,
            "background": self.scene.background,
            "objects": [
                {
                    "shape": o.shape,
                    "colour": o.colour,
                    "size": o.size,
                    "count": o.count,
                    "position": o.position,
                }
                for o in self.scene.objects
            ],
            "annotations": [asdict(a) for a in self.annotations],
        }


def make_sample(scene: Scene, *, key: str, resolution: int = 32) -> Sample:
    """Render a scene and bundle it with its captions and annotations.

    Args:
        scene: the scene.
        key: the sample key.
        resolution: image side in pixels (>= 16).

    Returns:
        The sample.
    """
    return Sample(
        key=key,
        scene=scene,
        image=render(scene, resolution),
        captions=captions(scene),
        annotations=annotations(scene),
    )
