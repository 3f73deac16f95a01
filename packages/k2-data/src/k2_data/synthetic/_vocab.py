"""The world's closed vocabulary: shapes, colours, sizes, positions, backgrounds, styles.

Chosen to stay distinguishable at 32 px: four shapes with different fill ratios or mass
profiles, eight colours at least ~25 degrees of hue apart, achromatic backgrounds only (so an
object's hue never collides with the background, and anti-aliasing or outlines, which mix a
colour with grey, keep its hue), three sizes about a third apart, and a 3x3 position grid.
"""

from __future__ import annotations

import colorsys

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
"""Object shapes. Triangles point up and diamonds are squares turned by 45 degrees."""

SHAPE_SCALE: dict[str, float] = {"circle": 1.0, "square": 0.9, "triangle": 1.2, "diamond": 1.25}
"""Bounding-box side per unit of nominal size, so that the four shapes have similar areas
(a triangle or diamond fills half its box, a circle pi/4, a square all of it)."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 45),
    "orange": (215, 125, 40),
    "yellow": (215, 195, 40),
    "green": (50, 175, 65),
    "cyan": (40, 180, 200),
    "blue": (50, 90, 215),
    "purple": (140, 60, 210),
    "pink": (215, 60, 160),
}
"""Object colours (RGB of the flat palette). Every channel keeps >= 40 levels of headroom, so
the striped, gradient and noisy styles can shift all channels together (which keeps hue and
chroma) without clipping."""

SIZES: dict[str, float] = {"small": 0.18, "medium": 0.24, "large": 0.30}
"""Nominal object size as a fraction of the canvas side (see `SHAPE_SCALE`)."""

POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "centre": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
"""Coarse positions: (column, row) cells of a 3x3 grid over the canvas."""

BACKGROUNDS: dict[str, int] = {
    "white": 240,
    "light grey": 190,
    "grey": 128,
    "dark grey": 66,
    "black": 18,
}
"""Background colours: grey levels (R = G = B), about 0.2 apart in value."""

STYLES: tuple[str, ...] = ("flat", "outlined", "striped", "gradient", "noisy", "pastel", "neon")
"""Rendering styles. flat: solid colours; outlined: a contrasting achromatic outline around
each shape; striped: stripes of a lighter and darker shade; gradient: linear shading over the
background and each shape; noisy: grainy luminance noise over the whole image; pastel: light,
desaturated colours on a light background; neon: fully saturated colours with a faint glow on
a dark background."""

STYLE_BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "flat": tuple(BACKGROUNDS),
    "outlined": tuple(BACKGROUNDS),
    "striped": tuple(BACKGROUNDS),
    "gradient": tuple(BACKGROUNDS),
    "noisy": tuple(BACKGROUNDS),
    "pastel": ("white", "light grey"),
    "neon": ("dark grey", "black"),
}
"""Backgrounds each style may use (pastel needs a light one, neon a dark one)."""

MAX_OBJECTS = 3
"""Most objects a scene can hold (counting every member of a group)."""

STRIPE_SHIFT = 35
"""Grey levels added to / removed from the colour in the light / dark stripes."""
GRADIENT_SHIFT = 30
"""Grey levels of shading at either end of a shape in the gradient style."""
BACKGROUND_GRADIENT = 20
"""Grey levels of background shading at either end of its ramp in the gradient style."""
NOISE_SIGMA = 14.0
"""Standard deviation (grey levels) of the luminance noise in the noisy style."""


def _hue(rgb: tuple[int, int, int]) -> float:
    return 360.0 * colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]


HUES: dict[str, float] = {name: _hue(rgb) for name, rgb in COLOURS.items()}
"""Hue (degrees) of each colour; every palette keeps it, so the verifier classifies by hue."""


def palette_rgb(colour: str, style: str) -> tuple[int, int, int]:
    """The RGB an object of `colour` has in `style` before any shading, stripes or noise."""
    r, g, b = COLOURS[colour]
    if style == "pastel":
        # Mixing with white keeps the hue and halves the chroma.
        return (round((r + 255) / 2), round((g + 255) / 2), round((b + 255) / 2))
    if style == "neon":
        rr, gg, bb = colorsys.hsv_to_rgb(HUES[colour] / 360.0, 1.0, 1.0)
        return (round(rr * 255), round(gg * 255), round(bb * 255))
    return (r, g, b)


def outline_level(background: str) -> int:
    """Grey level of the outline in the outlined style: dark on light backgrounds, else light."""
    return 25 if BACKGROUNDS[background] >= 128 else 235


def position_of(x: float, y: float) -> str:
    """The coarse position (3x3 cell) that a point in normalised [0, 1] coordinates falls in."""
    col = min(max(int(x * 3.0), 0), 2)
    row = min(max(int(y * 3.0), 0), 2)
    return _CELL_NAMES[(col, row)]


_CELL_NAMES = {cell: name for name, cell in POSITIONS.items()}
