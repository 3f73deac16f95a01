"""Scenes: a background, a style and 1-3 objects (identical ones grouped), sampled from a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from k2_data.synthetic._config import WorldConfig
from k2_data.synthetic._vocab import (
    POSITIONS,
    SHAPE_SCALE,
    SIZES,
    position_of,
)

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in normalised canvas coordinates, y pointing down."""

MARGIN = 0.04
"""Smallest distance from a shape's box to the canvas border (room for an outline)."""
GAP = 0.09
"""Smallest gap between two shapes' boxes: the outlines (0.035 each) still do not touch and
two same-coloured shapes stay separate connected components at 32 px."""
JITTER = 0.06
"""A group's centre lies within this distance (per axis) of its cell's centre, which keeps it
>= 0.1 of the canvas (3 px at 32 px) inside the cell, so the position reads unambiguously."""
ANGLES = (0, 45, 90, 135)
"""Directions (degrees) of stripes and gradients."""

_PLACEMENT_TRIES = 30
_SCENE_TRIES = 200
_SPLITS = {"train": 0, "heldout": 1, "test": 2}


@dataclass(frozen=True, kw_only=True)
class SceneObject:
    """A group of `count` identical objects (shape, colour, size), described together.

    `position` is the 3x3 cell holding the group's centre (the mean of its members' centres),
    so "two red circles at the top" may have members in the top-left and top-right cells.

    Args:
        shape: one of `SHAPES`.
        colour: one of `COLOURS`.
        size: one of `SIZES`.
        count: number of identical members (1-3).
        position: one of `POSITIONS`: the cell of the group's centre.
        centres: (x, y) of each member's box centre, normalised to [0, 1].
    """

    shape: str
    colour: str
    size: str
    count: int
    position: str
    centres: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.centres) != self.count:
            raise ValueError(f"SceneObject has count={self.count} but {len(self.centres)} centres")

    @property
    def extent(self) -> float:
        """Side of each member's (square) bounding box, as a fraction of the canvas."""
        return SIZES[self.size] * SHAPE_SCALE[self.shape]

    @property
    def boxes(self) -> tuple[Box, ...]:
        """Each member's bounding box (x0, y0, x1, y1), normalised."""
        h = self.extent / 2
        return tuple((x - h, y - h, x + h, y + h) for x, y in self.centres)

    @property
    def centre(self) -> tuple[float, float]:
        """The group's centre: the mean of its members' centres."""
        xs, ys = zip(*self.centres, strict=True)
        return (sum(xs) / len(xs), sum(ys) / len(ys))


@dataclass(frozen=True, kw_only=True)
class Scene:
    """Everything needed to render and describe one image; fully determined by `seed` + config.

    Args:
        seed: the scene's own seed (drives layout, caption phrasing and noise).
        objects: the object groups; their (shape, colour) pairs and positions are distinct.
        background: one of `BACKGROUNDS`.
        style: one of `STYLES`.
        angle: direction in degrees of stripes (striped) or shading (gradient).
    """

    seed: int
    objects: tuple[SceneObject, ...]
    background: str
    style: str
    angle: int = 0

    @property
    def num_objects(self) -> int:
        """Total number of objects (each member of a group counts)."""
        return sum(o.count for o in self.objects)


def _separated(a: Box, b: Box) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _inside(box: Box) -> bool:
    return box[0] >= MARGIN and box[1] >= MARGIN and box[2] <= 1 - MARGIN and box[3] <= 1 - MARGIN


def _member_offsets(count: int, spacing: float, rng: random.Random) -> list[tuple[float, float]]:
    """Offsets of a group's members from its centre; they average to zero."""
    d = spacing
    if count == 1:
        return [(0.0, 0.0)]
    if count == 2:
        return rng.choice(
            [
                [(-d / 2, 0.0), (d / 2, 0.0)],
                [(0.0, -d / 2), (0.0, d / 2)],
                [(-d / 2, -d / 2), (d / 2, d / 2)],
                [(-d / 2, d / 2), (d / 2, -d / 2)],
            ]
        )
    return rng.choice(
        [
            [(-d, 0.0), (0.0, 0.0), (d, 0.0)],
            [(0.0, -d), (0.0, 0.0), (0.0, d)],
            [(-d / 2, d / 3), (d / 2, d / 3), (0.0, -2 * d / 3)],
            [(-d / 2, -d / 3), (d / 2, -d / 3), (0.0, 2 * d / 3)],
        ]
    )


def _partitions(n: int, max_count: int) -> list[tuple[int, ...]]:
    """Ways to split n objects into groups of identical objects (non-increasing sizes)."""
    out: list[tuple[int, ...]] = []

    def rec(left: int, cap: int, acc: tuple[int, ...]) -> None:
        if left == 0:
            out.append(acc)
            return
        for k in range(min(left, cap), 0, -1):
            rec(left - k, k, (*acc, k))

    rec(n, max_count, ())
    return out


def _try_scene(rng: random.Random, config: WorldConfig) -> list[SceneObject] | None:
    n = rng.randint(config.min_objects, config.max_objects)
    counts = list(rng.choice(_partitions(n, config.max_count)))
    rng.shuffle(counts)
    pairs: set[tuple[str, str]] = set()
    cells: set[str] = set()
    placed: list[Box] = []
    groups: list[SceneObject] = []
    for count in counts:
        for _ in range(_PLACEMENT_TRIES):
            shape, colour = rng.choice(config.shapes), rng.choice(config.colours)
            position = rng.choice(config.positions)
            if (shape, colour) in pairs or position in cells:
                continue
            size = rng.choice(config.sizes)
            extent = SIZES[size] * SHAPE_SCALE[shape]
            col, row = POSITIONS[position]
            cx = (col + 0.5) / 3 + rng.uniform(-JITTER, JITTER)
            cy = (row + 0.5) / 3 + rng.uniform(-JITTER, JITTER)
            offsets = _member_offsets(count, extent + GAP, rng)
            centres = tuple((cx + dx, cy + dy) for dx, dy in offsets)
            h = extent / 2
            boxes = [(x - h, y - h, x + h, y + h) for x, y in centres]
            if not all(_inside(b) for b in boxes):
                continue
            if not all(_separated(b, p) for b in boxes for p in placed):
                continue
            # Members of one group are spaced by construction; the centre stays in its cell.
            if position_of(cx, cy) != position:
                continue
            pairs.add((shape, colour))
            cells.add(position)
            placed.extend(boxes)
            groups.append(
                SceneObject(
                    shape=shape,
                    colour=colour,
                    size=size,
                    count=count,
                    position=position,
                    centres=centres,
                )
            )
            break
        else:
            return None
    return groups


def sample_scene(seed: int, *, config: WorldConfig | None = None) -> Scene:
    """Sample one scene deterministically from `seed` (rejection-sampled, non-overlapping).

    Args:
        seed: any non-negative integer; the same seed and config give the same scene.
        config: restrictions of the world (default: the whole world).

    Returns:
        The scene.
    """
    if seed < 0:
        raise ValueError(f"scene seed must be >= 0, got {seed}")
    config = config or WorldConfig()
    rng = random.Random(seed)
    style = rng.choice(config.styles)
    background = rng.choice(config.backgrounds_for(style))
    angle = rng.choice(ANGLES)
    for _ in range(_SCENE_TRIES):
        groups = _try_scene(rng, config)
        if groups is not None:
            return Scene(
                seed=seed, objects=tuple(groups), background=background, style=style, angle=angle
            )
    raise RuntimeError(
        f"could not place a scene for seed {seed} with {config} after {_SCENE_TRIES} tries; "
        "allow more positions or sizes, or fewer objects"
    )


def scene_seed(seed: int, index: int, *, split: str) -> int:
    """The seed of scene `index` in `split`; different splits never share a scene seed.

    The split is stored in the two lowest bits, and the rest is drawn from an independent
    `numpy.random.SeedSequence` stream per (seed, split, index).
    """
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(_SPLITS)}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    state = np.random.SeedSequence([seed, _SPLITS[split], index]).generate_state(2, np.uint32)
    high = (int(state[0]) << 32 | int(state[1])) >> 3
    return high << 2 | _SPLITS[split]


def sample_scenes(
    n: int,
    *,
    seed: int,
    config: WorldConfig | None = None,
    split: str = "train",
    start: int = 0,
) -> list[Scene]:
    """Sample scenes `start .. start + n - 1` of a split (seeds from `scene_seed`).

    Args:
        n: number of scenes.
        seed: dataset seed.
        config: restrictions of the world.
        split: "train", "heldout" or "test"; splits are disjoint by scene seed.
        start: index of the first scene (to extend a dataset without redrawing it).

    Returns:
        The scenes, in index order.
    """
    if n < 0:
        raise ValueError(f"number of scenes must be >= 0, got {n}")
    config = config or WorldConfig()
    return [sample_scene(scene_seed(seed, start + i, split=split), config=config) for i in range(n)]
