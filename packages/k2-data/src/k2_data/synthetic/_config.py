"""`WorldConfig`: which part of the synthetic world scenes are drawn from."""

from __future__ import annotations

from dataclasses import dataclass

from k2_data.synthetic._vocab import (
    BACKGROUNDS,
    COLOURS,
    MAX_OBJECTS,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLE_BACKGROUNDS,
    STYLES,
)


def _check_names(field: str, given: tuple[str, ...], allowed) -> None:
    if not given:
        raise ValueError(f"WorldConfig.{field} is empty; allow at least one of {list(allowed)}")
    unknown = [name for name in given if name not in allowed]
    if unknown:
        raise ValueError(
            f"WorldConfig.{field} has unknown name(s) {unknown}; choose from {list(allowed)}"
        )
    if len(set(given)) != len(given):
        raise ValueError(f"WorldConfig.{field}={given} repeats a name; list each once")


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Restricts the synthetic world; every field only narrows the full vocabulary.

    Args:
        min_objects: fewest objects in a scene (members of a group each count).
        max_objects: most objects in a scene (at most 3).
        max_count: most identical objects in one group ("three red circles" needs 3).
        shapes: allowed shapes (subset of `SHAPES`).
        colours: allowed object colours (subset of `COLOURS`).
        sizes: allowed sizes (subset of `SIZES`).
        positions: allowed coarse positions of a group (subset of `POSITIONS`).
        styles: allowed rendering styles (subset of `STYLES`).
        backgrounds: allowed background colours (subset of `BACKGROUNDS`); each style uses
            those of them it supports (`STYLE_BACKGROUNDS`).
    """

    min_objects: int = 1
    max_objects: int = MAX_OBJECTS
    max_count: int = MAX_OBJECTS
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    sizes: tuple[str, ...] = tuple(SIZES)
    positions: tuple[str, ...] = tuple(POSITIONS)
    styles: tuple[str, ...] = STYLES
    backgrounds: tuple[str, ...] = tuple(BACKGROUNDS)

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(
                f"WorldConfig needs 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got "
                f"min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        if not 1 <= self.max_count <= MAX_OBJECTS:
            raise ValueError(f"WorldConfig.max_count={self.max_count} must be in 1..{MAX_OBJECTS}")
        _check_names("shapes", self.shapes, SHAPES)
        _check_names("colours", self.colours, COLOURS)
        _check_names("sizes", self.sizes, SIZES)
        _check_names("positions", self.positions, POSITIONS)
        _check_names("styles", self.styles, STYLES)
        _check_names("backgrounds", self.backgrounds, BACKGROUNDS)
        for style in self.styles:
            if not set(STYLE_BACKGROUNDS[style]) & set(self.backgrounds):
                raise ValueError(
                    f"WorldConfig allows style {style!r} but none of its backgrounds "
                    f"{list(STYLE_BACKGROUNDS[style])}; add one to `backgrounds`"
                )
        # Groups in a scene have distinct (shape, colour) pairs and distinct positions.
        min_groups = -(-self.min_objects // self.max_count)
        pairs = len(self.shapes) * len(self.colours)
        if min(pairs, len(self.positions)) < min_groups:
            raise ValueError(
                f"WorldConfig needs {min_groups} distinct groups for min_objects="
                f"{self.min_objects} with max_count={self.max_count}, but only allows "
                f"{pairs} (shape, colour) pairs and {len(self.positions)} positions"
            )

    def backgrounds_for(self, style: str) -> tuple[str, ...]:
        """The allowed backgrounds that `style` can be drawn on."""
        return tuple(b for b in self.backgrounds if b in STYLE_BACKGROUNDS[style])
