"""Rendering a scene to pixels with analytic anti-aliasing (numpy only)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from jaxtyping import UInt8

from k2_data.synthetic._scene import Scene, SceneObject
from k2_data.synthetic._vocab import (
    BACKGROUND_GRADIENT,
    BACKGROUNDS,
    GRADIENT_SHIFT,
    NOISE_SIGMA,
    STRIPE_SHIFT,
    outline_level,
    palette_rgb,
)

MIN_RESOLUTION = 16
OUTLINE_WIDTH = 0.035
"""Outline width in the outlined style, as a fraction of the canvas (never under 1 px)."""
STRIPE_PERIOD = 0.12
"""Period of the stripes in the striped style, as a fraction of the canvas."""
GLOW_ALPHA = 0.1
"""Peak opacity of the neon glow; it stays under the verifier's chroma gate (0.125), so the
glow never joins a shape's pixels."""
GLOW_RADIUS = 0.05
"""Decay length of the neon glow, as a fraction of the canvas."""
_SQRT5 = math.sqrt(5.0)
_SQRT2 = math.sqrt(2.0)


@lru_cache(maxsize=16)
def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres in normalised coordinates; (1, W) and (H, 1) so they broadcast to (H, W).
    c = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    return c[None, :], c[:, None]


def signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Signed distance (negative inside) to a shape of half-extent `half` centred at 0.

    Exact along edges, which is what the 1-pixel anti-aliasing ramp needs; near square and
    triangle corners it is the usual max-of-half-planes bound.
    """
    if shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - half
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - half
    if shape == "diamond":
        return (np.abs(dx) + np.abs(dy) - half) / _SQRT2
    if shape == "triangle":
        # Apex at (0, -half), base corners at (+-half, +half); y points down.
        return np.maximum(dy - half, (2 * np.abs(dx) - dy - half) / _SQRT5)
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(sd: np.ndarray, pixel: float) -> np.ndarray:
    # Box-filter coverage of a straight edge: a linear ramp one pixel wide.
    return np.clip(0.5 - sd / pixel, 0.0, 1.0)


def _direction(angle: int) -> tuple[float, float]:
    a = math.radians(angle)
    return math.cos(a), math.sin(a)


def _background(scene: Scene, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    level = float(BACKGROUNDS[scene.background])
    if scene.style != "gradient":
        return np.full((ys.shape[0], xs.shape[1], 1), level, dtype=np.float32)
    cos, sin = _direction(scene.angle)
    t = np.clip(((xs - 0.5) * cos + (ys - 0.5) * sin) / 0.5, -1.0, 1.0)
    # Centre the ramp away from the ends of the grey scale so it is not clipped on one side.
    level = min(max(level, BACKGROUND_GRADIENT), 255 - BACKGROUND_GRADIENT)
    return (level + BACKGROUND_GRADIENT * t)[..., None]


def _fill(
    scene: Scene, rgb: np.ndarray, dx: np.ndarray, dy: np.ndarray, half: float, pixel: float
) -> np.ndarray:
    """Colour field of one shape; stripes and shading shift all channels by the same amount,
    which keeps hue and chroma (what the verifier reads) unchanged."""
    if scene.style == "striped":
        cos, sin = _direction(scene.angle)
        u = (dx * cos + dy * sin) / STRIPE_PERIOD
        tri = 2.0 * np.abs(u - np.round(u))  # 0 at the centre of a light stripe, 1 of a dark one
        dark = np.clip(0.5 + (tri - 0.5) * (STRIPE_PERIOD / 2) / pixel, 0.0, 1.0)
        shift = STRIPE_SHIFT * (1.0 - 2.0 * dark)
        return rgb + shift[..., None]
    if scene.style == "gradient":
        cos, sin = _direction(scene.angle + 180)
        t = np.clip((dx * cos + dy * sin) / half, -1.0, 1.0)
        return rgb + (GRADIENT_SHIFT * t)[..., None]
    return np.broadcast_to(rgb, (*dx.shape, 3))


def _draw(
    img: np.ndarray,
    scene: Scene,
    obj: SceneObject,
    xs: np.ndarray,
    ys: np.ndarray,
    pixel: float,
) -> None:
    rgb = np.asarray(palette_rgb(obj.colour, scene.style), dtype=np.float32)
    half = obj.extent / 2
    outline = max(OUTLINE_WIDTH, pixel)
    for cx, cy in obj.centres:
        dx, dy = xs - cx, ys - cy
        sd = signed_distance(obj.shape, dx, dy, half)
        if scene.style == "outlined":
            a = _coverage(sd - outline, pixel)[..., None]
            img *= 1.0 - a
            img += a * float(outline_level(scene.background))
        a = _coverage(sd, pixel)[..., None]
        img *= 1.0 - a
        img += a * _fill(scene, rgb, dx, dy, half, pixel)


def render(scene: Scene, resolution: int = 32) -> UInt8[np.ndarray, "h w 3"]:
    """Render a scene as a square uint8 RGB image of side `resolution` (>= 16).

    Shapes are drawn from signed distance functions with a one-pixel linear coverage ramp,
    i.e. analytic box-filter anti-aliasing: as smooth as heavy supersampling at a fraction of
    the cost, and identical in layout at every resolution. Noise (noisy style) is drawn per
    output pixel from the scene seed.

    Args:
        scene: what to draw.
        resolution: image side in pixels.

    Returns:
        [resolution, resolution, 3] uint8 RGB.

    References:
        Green 2007, "Improved alpha-tested magnification for vector textures and special
        effects" (anti-aliasing from a signed distance with a one-pixel ramp).
    """
    if resolution < MIN_RESOLUTION:
        raise ValueError(
            f"resolution={resolution} is below {MIN_RESOLUTION} px, where the world's shapes "
            f"are no longer recognisable; render at >= {MIN_RESOLUTION} and downsample"
        )
    xs, ys = _grid(resolution)
    pixel = 1.0 / resolution
    img = np.repeat(_background(scene, xs, ys), 3, axis=2)
    if scene.style == "neon":
        # One glow layer under all shapes, taking the strongest glow at each pixel: stacked
        # glows would add up past the verifier's chroma gate and bridge nearby shapes.
        glow = np.zeros((resolution, resolution), dtype=np.float32)
        glow_rgb = np.zeros((resolution, resolution, 3), dtype=np.float32)
        for obj in scene.objects:
            rgb = np.asarray(palette_rgb(obj.colour, scene.style), dtype=np.float32)
            for cx, cy in obj.centres:
                sd = signed_distance(obj.shape, xs - cx, ys - cy, obj.extent / 2)
                alpha = GLOW_ALPHA * np.exp(-np.maximum(sd, 0.0) / GLOW_RADIUS)
                stronger = alpha > glow
                glow = np.where(stronger, alpha, glow)
                glow_rgb[stronger] = rgb
        img = img * (1.0 - glow[..., None]) + glow[..., None] * glow_rgb
    for obj in scene.objects:
        _draw(img, scene, obj, xs, ys, pixel)
    if scene.style == "noisy":
        rng = np.random.default_rng([scene.seed, resolution])
        # The same offset on all three channels: grain in luminance, hue and chroma intact.
        img += rng.normal(0.0, NOISE_SIGMA, size=(resolution, resolution, 1)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
