"""Shape from a soft mask: blur-invariant normalised central moments.

With m the coverage of each pixel and A = sum(m), three scale-free features:

- the four-fold harmonic K = (mu40 + mu04 - 6 mu22) / A^3: square -1/60, circle 0,
  diamond +1/60 (turning a shape by 45 degrees flips its sign);
- the vertical skew S = mu03 / A^2.5: -16/135/2^2.5 (about -0.021) for the upward triangle,
  0 for the others;
- the anisotropy D = (mu20 - mu02) / A^2.

Under a Gaussian blur of variance s^2 the moments become mu40 + 6 s^2 mu20 + 3 s^4 A,
mu04 + 6 s^2 mu02 + 3 s^4 A, mu22 + s^2 (mu20 + mu02) + s^4 A and mu03 + 3 s^2 mu01 with
mu01 = 0, while A stays: K and S do not change. The verifier therefore tolerates the soft
images of small generative models, where fill-ratio or outline features would not.

References:
    Hu 1962, "Visual pattern recognition by moment invariants" (normalised central
    moments); cumulants add under convolution, and a Gaussian has none above the second.
"""

from __future__ import annotations

import numpy as np

from k2_data.synthetic._vocab import SHAPES

SHAPE_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "square": ((-0.035, -0.0085), (-0.009, 0.009), (-0.025, 0.025)),
    "circle": ((-0.0085, 0.0085), (-0.009, 0.009), (-0.025, 0.025)),
    "diamond": ((0.0085, 0.035), (-0.009, 0.009), (-0.025, 0.025)),
    "triangle": ((-0.015, 0.025), (-0.05, -0.011), (-0.065, -0.005)),
}
"""Accepted (K, S, D) ranges per shape; the boxes do not overlap, so at most one fits.
K splits square / circle / diamond halfway between their prototypes; S separates
triangles. Measured at 32 px: clean renders of every style sit well inside; blur (sigma
<= 0.8 px) pulls |K| and |S| in, noise and glow push |K| out, which the outer K bounds
allow for."""
FILL_RANGE = (0.45, 1.15)
"""Area over soft-box area: exact shapes give 0.5-1, blur raises the pointed ones."""
ASPECT_RANGE = (0.75, 1.33)
"""Width / height of every shape's box is 1; blobs outside this range have no shape."""


def _ideal_mask(shape: str, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact mask of a shape filling an n x n pixel box (y down), with pixel-centre coordinates."""
    x, y = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    u, v = 2.0 * x / n - 1.0, 2.0 * y / n - 1.0  # [-1, 1]^2
    inside = {
        "circle": u * u + v * v <= 1.0,
        "square": np.ones_like(u, dtype=bool),
        "diamond": np.abs(u) + np.abs(v) <= 1.0,
        "triangle": np.abs(u) <= (v + 1.0) / 2.0,  # apex (0, -1), base corners (+-1, 1)
    }[shape]
    return inside.astype(np.float64), x, y


def moment_features(m: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(K, S, D) of one soft mask m at pixel coordinates (x, y); see the module docstring.

    Scale-free: the moments are divided by powers of the area, both in pixel units.
    """
    area = m.sum()
    dx = x - (m * x).sum() / area
    dy = y - (m * y).sum() / area
    k = (m * (dx**4 + dy**4 - 6.0 * dx * dx * dy * dy)).sum() / area**3
    s = (m * dy**3).sum() / area**2.5
    d = (m * (dx * dx - dy * dy)).sum() / area**2
    return float(k), float(s), float(d)


SHAPE_PROTOTYPES: dict[str, tuple[float, float, float]] = {
    shape: moment_features(*_ideal_mask(shape)) for shape in SHAPES
}
"""(K, S, D) of each exact shape: square (-1/60, 0, 0), circle (0, 0, 0), diamond
(1/60, 0, 0), triangle (~0.002, ~-0.022, ~-0.028)."""


def moments(
    comp: np.ndarray, x: np.ndarray, y: np.ndarray, m: np.ndarray, area: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`moment_features` of every component at once (pixels labelled by `comp`)."""
    n = len(area)

    def total(w: np.ndarray) -> np.ndarray:
        return np.bincount(comp, weights=m * w, minlength=n)

    safe = np.maximum(area, 1e-9)
    dx = x - (total(x) / safe)[comp]
    dy = y - (total(y) / safe)[comp]
    dx2, dy2 = dx * dx, dy * dy
    k = (total(dx2 * dx2) + total(dy2 * dy2) - 6.0 * total(dx2 * dy2)) / safe**3
    s = total(dy2 * dy) / safe**2.5
    d = (total(dx2) - total(dy2)) / safe**2
    return k, s, d


def classify_shapes(
    k: np.ndarray, s: np.ndarray, d: np.ndarray, fill: np.ndarray, aspect: np.ndarray
) -> np.ndarray:
    """Index into `SHAPES` of the shape whose `SHAPE_RANGES` box holds each component's
    (K, S, D), or -1 when none does or its fill or aspect ratio is implausible."""
    feats = np.stack([k, s, d], axis=1)
    ranges = np.array([SHAPE_RANGES[name] for name in SHAPES])  # (shape, feature, lo/hi)
    inside = (feats[:, None, :] >= ranges[None, :, :, 0]) & (
        feats[:, None, :] <= ranges[None, :, :, 1]
    )
    fits = inside.all(axis=2)
    ok = fits.any(axis=1)
    ok &= (fill >= FILL_RANGE[0]) & (fill <= FILL_RANGE[1])
    ok &= (aspect >= ASPECT_RANGE[0]) & (aspect <= ASPECT_RANGE[1])
    return np.where(ok, np.argmax(fits, axis=1), -1)
