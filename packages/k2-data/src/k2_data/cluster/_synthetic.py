"""A long-tailed Gaussian mixture with known components, to measure what a sample covers."""

from __future__ import annotations

import numpy as np
from jaxtyping import Float32, Int64


def long_tailed_mixture(
    n: int,
    *,
    dim: int = 384,
    n_components: int = 5000,
    zipf_exponent: float = 1.0,
    noise: float = 1.0,
    seed: int = 0,
) -> tuple[Float32[np.ndarray, "n d"], Int64[np.ndarray, " n"]]:
    """Points from components with Zipf weights w_j ~ 1 / j^s, labelled by component.

    Means are drawn from N(0, I/d) (norm about 1, nearly orthogonal in high dimension);
    each point adds N(0, noise^2 I/d), so its noise has norm about ``noise``. Component
    sizes are one multinomial draw, so rare components can be empty; component 0 is the
    most frequent.

    Args:
        n: number of points.
        dim: embedding width d.
        n_components: number of components.
        zipf_exponent: s.
        noise: noise norm relative to the mean's norm.
        seed: everything random.

    Returns:
        (x, component): float32 (n, d) points and each point's component id.
    """
    if n < 1 or dim < 1 or n_components < 1 or noise < 0 or zipf_exponent < 0:
        raise ValueError("need n, dim, n_components >= 1 and noise, zipf_exponent >= 0")
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_components + 1, dtype=np.float64) ** zipf_exponent
    counts = rng.multinomial(n, weights / weights.sum())
    component = np.repeat(np.arange(n_components, dtype=np.int64), counts)
    rng.shuffle(component)
    scale = np.float32(1.0 / np.sqrt(dim))
    means = rng.standard_normal((n_components, dim), dtype=np.float32) * scale
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= np.float32(noise) * scale
    x += means[component]
    return x, component


def component_coverage(
    component: Int64[np.ndarray, " n"], sample: Int64[np.ndarray, " m"], *, n_components: int
) -> tuple[int, int]:
    """(components with at least one sampled point, of which in the rarest half by weight rank).

    The rarest half is components ``n_components // 2`` and above (the smallest Zipf weights).
    """
    hit = np.zeros(n_components, bool)
    hit[np.asarray(component)[np.asarray(sample, dtype=np.int64)]] = True
    return int(hit.sum()), int(hit[n_components // 2 :].sum())
