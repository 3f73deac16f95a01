"""Reading objects, background and style back from pixels (vectorised numpy, no learning).

Pipeline per batch of same-sized images:
1. Chroma (max - min channel) and hue per pixel. Backgrounds and outlines are grey, so a
   pixel mixing an object colour with them (anti-aliasing, outlines, shading by a common
   offset, luminance noise) keeps the colour's hue and scales its chroma by the coverage.
2. Chromatic pixels (chroma >= 32/255 and saturation >= 0.15) get the nearest colour hue;
   4-connected pixels of one colour form a component (label propagation with pointer jumping).
3. Each component also takes its 1-pixel ring of sub-gate pixels. A soft mask
   m = (chroma - floor) / (reference - floor) estimates each pixel's coverage; the floor is
   the median chroma just outside the rings (0 for renders; glow or colour noise
   otherwise), the reference the median chroma of the component's interior.
4. Shape from blur-invariant central moments of m (see `_shape_features`); position from
   the centre of the soft bounding box (edges moved into the first and last lines by
   their coverage).
5. Background: the grey level nearest the median of the pixels away from any chromatic
   pixel. Style: a decision list over background noise and slope, the saturation and value
   of object cores, the contrast of the halo around objects (outlines) and the value
   spread inside objects (stripes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from k2_data.synthetic._shape_features import classify_shapes, moments
from k2_data.synthetic._vocab import BACKGROUNDS, HUES, SHAPE_SCALE, SHAPES, SIZES, position_of

MIN_CHROMA = 32
"""Chroma gate (grey levels): the neon glow (<= 25.5) and grey pixels stay below it."""
MIN_SATURATION = 0.15
"""Saturation gate: pastel colours (~0.36) pass, near-grey pixels do not."""
MIN_AREA = 0.4 * min(0.5 * (SIZES["small"] * SHAPE_SCALE[s]) ** 2 for s in ("triangle", "diamond"))
"""Smallest component (fraction of the canvas) counted as an object: 40% of the smallest
shape the world draws; specks of noise stay below it."""
CORE = 0.85
"""Pixels with coverage >= this are a component's core (used for palette and stripes)."""
BACKGROUND_TOLERANCE = 30
"""Grey levels around the named background that count as background."""
MIN_BACKGROUND = 0.3
"""Share of the image that must be background-coloured for a background or style verdict."""
NOISE_THRESHOLD = 6.0
"""Mean |difference| (grey levels) between neighbouring background pixels above which the
image is noisy (the noisy style gives ~15, flat backgrounds 0, gradients < 3)."""
SLOPE_THRESHOLD = 20.0
"""Background grey-level change across the canvas above which it is a gradient (the
gradient style gives ~40)."""
NEON_SV = 0.92
"""Object cores with saturation and value both above this are neon."""
PASTEL_SATURATION = 0.55
"""Object cores with saturation below this (and value above 0.8) are pastel."""
OUTLINE_CONTRAST = 35
"""Grey levels between a ring pixel and the background that make it an outline pixel."""
OUTLINE_SHARE = 0.35
"""Share of outline pixels in the ring around objects above which the image is outlined."""
STRIPE_STD = 15.0
"""Value spread (grey levels) inside object cores above which the image is striped."""

_SHAPE_NAMES: dict[int, str | None] = dict(enumerate(SHAPES)) | {-1: None}
_HUE_NAMES = tuple(HUES)
_BG_NAMES = tuple(BACKGROUNDS)
_BG_LEVELS = np.array([BACKGROUNDS[n] for n in _BG_NAMES], dtype=np.float64)


def _hue_lut() -> np.ndarray:
    # Class of each 0.1-degree hue bin: the nearest colour hue on the circle.
    h = (np.arange(3600) + 0.5) / 10.0
    centres = np.array([HUES[n] for n in _HUE_NAMES])
    d = np.abs(h[:, None] - centres[None, :])
    return np.argmin(np.minimum(d, 360.0 - d), axis=1).astype(np.int8)


_HUE_LUT = _hue_lut()


@dataclass(frozen=True, kw_only=True)
class DetectedObject:
    """One component found in an image.

    Args:
        colour: nearest colour by hue.
        shape: the shape whose feature box holds the component, or None.
        centre: (x, y) of the soft bounding box's centre, normalised.
        box: soft bounding box (x0, y0, x1, y1), normalised.
        area: soft area as a fraction of the canvas.
        fill: area / soft-box area.
        harmonic: four-fold moment harmonic K (square < 0 < diamond).
        skew: vertical third moment S (negative for an upward triangle).
        anisotropy: second-moment difference D.
    """

    colour: str
    shape: str | None
    centre: tuple[float, float]
    box: tuple[float, float, float, float]
    area: float
    fill: float
    harmonic: float
    skew: float
    anisotropy: float

    @property
    def position(self) -> str:
        """The 3x3 cell of the centre."""
        return position_of(*self.centre)


@dataclass(frozen=True, kw_only=True)
class Detection:
    """What the verifier reads from one image.

    Args:
        objects: components large enough to be objects.
        background: nearest background, or None when too little of the image is background.
        style: detected style, or None without objects or background.
        stats: the measurements behind the background and style verdicts.
    """

    objects: tuple[DetectedObject, ...]
    background: str | None
    style: str | None
    stats: dict[str, float]


def _shift_or(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of (B, H, W) masks by a (2r+1) square, via shifted ORs."""
    out = mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[:, :, 1:] |= grown[:, :, :-1].copy()
        grown[:, :, :-1] |= grown[:, :, 1:].copy()
        out = grown
    return out


def _label(chromatic: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """4-connected components of equal class; returns per-pixel root (smallest flat index in
    the component) for chromatic pixels and B*H*W elsewhere."""
    n = chromatic.size
    sentinel = np.int64(n)
    lab = np.where(chromatic, np.arange(n, dtype=np.int64).reshape(chromatic.shape), sentinel)
    same_x = chromatic[:, :, 1:] & chromatic[:, :, :-1] & (cls[:, :, 1:] == cls[:, :, :-1])
    same_y = chromatic[:, 1:] & chromatic[:, :-1] & (cls[:, 1:] == cls[:, :-1])
    flat = lab.reshape(-1)
    fg = np.flatnonzero(chromatic.reshape(-1))
    while True:
        before = lab.copy()
        np.minimum(lab[:, :, 1:], np.where(same_x, lab[:, :, :-1], sentinel), out=lab[:, :, 1:])
        np.minimum(lab[:, :, :-1], np.where(same_x, lab[:, :, 1:], sentinel), out=lab[:, :, :-1])
        np.minimum(lab[:, 1:], np.where(same_y, lab[:, :-1], sentinel), out=lab[:, 1:])
        np.minimum(lab[:, :-1], np.where(same_y, lab[:, 1:], sentinel), out=lab[:, :-1])
        # Pointer jumping: a label is a pixel of the same component, so take its label.
        for _ in range(2):
            flat[fg] = flat[flat[fg]]
        if np.array_equal(lab, before):
            return lab


def _neighbour_min(lab: np.ndarray, sentinel: int) -> np.ndarray:
    """Smallest label among each pixel's 8 neighbours (sentinel outside the image)."""
    padded = np.pad(lab, ((0, 0), (1, 1), (1, 1)), constant_values=sentinel)
    h, w = lab.shape[1:]
    out = np.full_like(lab, sentinel)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                np.minimum(out, padded[:, dy : dy + h, dx : dx + w], out=out)
    return out


def _hist_median(hist: np.ndarray) -> np.ndarray:
    """Median bin of each row of a (B, bins) histogram (0 for empty rows)."""
    total = hist.sum(axis=1, keepdims=True)
    return np.argmax(np.cumsum(hist, axis=1) * 2 >= np.maximum(total, 1), axis=1)


def _segments(keys: np.ndarray) -> np.ndarray:
    """Start indices of runs of equal values in a sorted key array."""
    return np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))


def _profile(
    comp: np.ndarray, coord: np.ndarray, m: np.ndarray, extent: int, ncomp: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft extent of each component along one axis: (length, start edge, end edge).

    `comp`, `coord` and `m` are sorted by (comp, coord). The length sums each line's largest
    coverage (an area-like measure, short at pointed ends); the edges move into the first
    and last lines by their coverage, symmetrically, which keeps the box centred.
    """
    if ncomp == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    key = comp * extent + coord
    starts = _segments(key)
    line_max = np.maximum.reduceat(m, starts)
    line_comp = comp[starts]
    length = np.bincount(line_comp, weights=line_max, minlength=ncomp)
    first = _segments(line_comp)
    last = np.concatenate((first[1:], [len(line_comp)])) - 1
    start_edge = coord[starts[first]] + 1.0 - line_max[first]
    end_edge = coord[starts[last]] + line_max[last]
    return length, start_edge, end_edge


@dataclass
class _Components:
    """Per-pixel rows (sorted by component, raster order inside) and per-component arrays."""

    comp: np.ndarray
    fg: np.ndarray
    is_ring: np.ndarray
    m: np.ndarray
    chroma: np.ndarray
    value: np.ndarray
    image: np.ndarray  # per component
    colour: np.ndarray  # per component
    area: np.ndarray
    box: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # left, top, right, bottom
    fill: np.ndarray
    features: tuple[np.ndarray, np.ndarray, np.ndarray]  # K, S, D
    shape: np.ndarray


def _pixels(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Value (max channel), chroma, the chromatic gate and the colour class per pixel."""
    x = images.astype(np.int16)
    mx = x.max(axis=3)
    chroma = mx - x.min(axis=3)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    c = np.maximum(chroma, 1).astype(np.float32)
    hue = np.where(mx == r, (g - b) / c, np.where(mx == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
    hue_bin = ((hue * 600.0).astype(np.int32)) % 3600
    chromatic = (chroma >= MIN_CHROMA) & (chroma >= MIN_SATURATION * mx)
    cls = np.where(chromatic, _HUE_LUT[hue_bin], -1)
    return mx, chroma, chromatic, cls


def _components(
    mx: np.ndarray, chroma: np.ndarray, chromatic: np.ndarray, cls: np.ndarray
) -> _Components:
    b_n, h_n, w_n = chromatic.shape
    n_pix = h_n * w_n
    lab = _label(chromatic, cls)
    sentinel = lab.size
    core_fg = np.flatnonzero(chromatic.reshape(-1))
    roots = np.unique(lab.reshape(-1)[core_fg])
    ncomp = len(roots)
    # Each component also takes its 1-pixel ring of sub-gate pixels: their coverage is low
    # but not zero, and dropping them would bias the shape features (pale colours most).
    ring_lab = _neighbour_min(lab, sentinel)
    ring_fg = np.flatnonzero((~chromatic & (ring_lab < sentinel)).reshape(-1))
    fg = np.concatenate([core_fg, ring_fg])
    is_ring = np.concatenate([np.zeros(len(core_fg), bool), np.ones(len(ring_fg), bool)])
    comp = np.searchsorted(
        roots, np.concatenate([lab.reshape(-1)[core_fg], ring_lab.reshape(-1)[ring_fg]])
    )
    order = np.lexsort((fg, comp))  # by component, raster order inside
    fg, comp, is_ring = fg[order], comp[order], is_ring[order]
    img_of_pixel = fg // n_pix
    y = (fg // w_n) % h_n
    xx = fg % w_n
    ch = chroma.reshape(-1)[fg].astype(np.float64)

    # Floor: the median chroma of the grey pixels just outside the rings (0 for clean
    # renders; the glow of neon shapes or the colour noise of generated images otherwise).
    taken = chromatic | (ring_lab < sentinel)
    outside = (_neighbour_min(np.where(taken, 0, 1), 1) == 0) & ~taken
    near_hist = np.bincount(
        (np.arange(b_n)[:, None, None] * 256 + chroma)[outside], minlength=b_n * 256
    ).reshape(b_n, 256)
    floor = _hist_median(near_hist).astype(np.float64)[img_of_pixel]
    # Reference: the median chroma of the gated pixels above 3/4 of their 90th percentile,
    # i.e. of the fully covered interior (noise averages out, edges do not count).
    gated_comp = comp[~is_ring]  # sorted
    counts = np.bincount(gated_comp, minlength=ncomp)
    first = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    ranked = ch[~is_ring][np.lexsort((ch[~is_ring], gated_comp))]
    p90 = ranked[first + (0.9 * (counts - 1)).astype(np.int64)] if ncomp else np.zeros(0)
    high = ranked >= 0.75 * np.repeat(p90, counts)
    n_high = np.bincount(gated_comp[high], minlength=ncomp)
    high_first = np.concatenate(([0], np.cumsum(n_high)[:-1])).astype(np.int64)
    ref = ranked[high][high_first + (n_high - 1) // 2] if ncomp else np.zeros(0)
    m = np.clip((ch - floor) / np.maximum(ref[comp] - floor, 1.0), 0.0, 1.0)

    area = np.bincount(comp, weights=m, minlength=ncomp)
    height, top, bottom = _profile(comp, y, m, h_n, ncomp)
    by_x = np.lexsort((xx, comp))
    width, left, right = _profile(comp[by_x], xx[by_x], m[by_x], w_n, ncomp)
    fill = area / np.maximum(width * height, 1e-9)
    features = moments(comp, xx + 0.5, y + 0.5, m, area)
    aspect = width / np.maximum(height, 1e-9)
    return _Components(
        comp=comp,
        fg=fg,
        is_ring=is_ring,
        m=m,
        chroma=ch,
        value=mx.reshape(-1)[fg].astype(np.float64),
        image=roots // n_pix,
        colour=cls.reshape(-1)[roots],
        area=area,
        box=(left, top, right, bottom),
        fill=fill,
        features=features,
        shape=classify_shapes(*features, fill, aspect),
    )


def _core_stats(c: _Components, valid: np.ndarray, b_n: int) -> dict[str, np.ndarray]:
    """Per image: pixel count, mean saturation and value of object cores, and the pooled
    value spread inside each object (stripes)."""
    core = (c.m >= CORE) & valid[c.comp]
    img = c.image[c.comp][core]
    ch, val, comp = c.chroma[core], c.value[core], c.comp[core]
    n = np.bincount(img, minlength=b_n).astype(np.float64)
    k = np.bincount(comp, minlength=len(valid))
    mean_v = np.bincount(comp, weights=val, minlength=len(valid)) / np.maximum(k, 1)
    spread = np.bincount(img, weights=(val - mean_v[comp]) ** 2, minlength=b_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "n": n,
            "saturation": np.bincount(img, weights=ch / val, minlength=b_n) / n,
            "value": np.bincount(img, weights=val, minlength=b_n) / n / 255.0,
            "stripe_std": np.sqrt(spread / n),
        }


def _background_stats(
    mx: np.ndarray, chromatic: np.ndarray, objects: np.ndarray
) -> dict[str, np.ndarray]:
    """Per image: background level (median grey of pixels away from colour), its share of
    the image, noise, slope, and the outline share of the halo around objects."""
    b_n, h_n, w_n = mx.shape
    radius = max(1, round(2 * min(h_n, w_n) / 32))
    bg = ~_shift_or(chromatic, radius)
    v = mx.astype(np.int64)
    bi = np.broadcast_to(np.arange(b_n)[:, None, None], bg.shape)
    median = _hist_median(np.bincount(bi[bg] * 256 + v[bg], minlength=b_n * 256).reshape(b_n, 256))
    level_idx = np.argmin(np.abs(median[:, None] - _BG_LEVELS[None]), axis=1)
    near = bg & (np.abs(v - _BG_LEVELS[level_idx][:, None, None]) <= BACKGROUND_TOLERANCE)

    pair_x = bg[:, :, 1:] & bg[:, :, :-1]
    pair_y = bg[:, 1:] & bg[:, :-1]
    diff = (np.abs(np.diff(v, axis=2)) * pair_x).sum(axis=(1, 2))
    diff += (np.abs(np.diff(v, axis=1)) * pair_y).sum(axis=(1, 2))
    noise = diff / np.maximum(pair_x.sum(axis=(1, 2)) + pair_y.sum(axis=(1, 2)), 1)

    # Least-squares plane v = a + b x + c y over background pixels, x and y in canvas units.
    gx = np.broadcast_to(((np.arange(w_n) + 0.5) / w_n)[None, None, :], bg.shape)
    gy = np.broadcast_to(((np.arange(h_n) + 0.5) / h_n)[None, :, None], bg.shape)
    wgt = near.astype(np.float64)
    basis = [np.ones_like(wgt), gx, gy]
    normal = np.stack(
        [np.stack([(wgt * f * g).sum(axis=(1, 2)) for g in basis], -1) for f in basis], -2
    )
    rhs = np.stack([(wgt * f * v).sum(axis=(1, 2)) for f in basis], -1)
    coef = np.linalg.solve(normal + np.eye(3) * 1e-6, rhs[..., None])[..., 0]

    # Halo: grey pixels touching an object; outlines make them contrast with the background.
    halo = _shift_or(objects, 1) & ~chromatic
    contrast = halo & (np.abs(v - median[:, None, None]) > OUTLINE_CONTRAST)
    return {
        "level": median,
        "level_idx": level_idx,
        "share": near.reshape(b_n, -1).mean(axis=1),
        "noise": noise,
        "slope": np.hypot(coef[:, 1], coef[:, 2]),
        "ring_share": contrast.sum(axis=(1, 2)) / np.maximum(halo.sum(axis=(1, 2)), 1),
    }


def _analyse(images: np.ndarray) -> list[Detection]:
    """Detections for a (B, H, W, 3) uint8 stack."""
    b_n, h_n, w_n, _ = images.shape
    mx, chroma, chromatic, cls = _pixels(images)
    c = _components(mx, chroma, chromatic, cls)
    valid = c.area >= MIN_AREA * h_n * w_n
    objects = np.zeros(chromatic.size, dtype=bool)
    objects[c.fg[valid[c.comp] & ~c.is_ring]] = True
    cores = _core_stats(c, valid, b_n)
    bgs = _background_stats(mx, chromatic, objects.reshape(chromatic.shape))

    per_img: list[list[int]] = [[] for _ in range(b_n)]
    for k in np.flatnonzero(valid):
        per_img[c.image[k]].append(int(k))
    left, top, right, bottom = c.box
    harmonic, skew, anisotropy = c.features
    out: list[Detection] = []
    for i in range(b_n):
        found = []
        for k in per_img[i]:
            box = (left[k] / w_n, top[k] / h_n, right[k] / w_n, bottom[k] / h_n)
            found.append(
                DetectedObject(
                    colour=_HUE_NAMES[c.colour[k]],
                    shape=_SHAPE_NAMES[int(c.shape[k])],
                    centre=(float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2),
                    box=tuple(float(v) for v in box),
                    area=float(c.area[k] / (h_n * w_n)),
                    fill=float(c.fill[k]),
                    harmonic=float(harmonic[k]),
                    skew=float(skew[k]),
                    anisotropy=float(anisotropy[k]),
                )
            )
        stats = {
            "background_level": float(bgs["level"][i]),
            "background_share": float(bgs["share"][i]),
            "noise": float(bgs["noise"][i]),
            "slope": float(bgs["slope"][i]),
            "saturation": float(cores["saturation"][i]),
            "value": float(cores["value"][i]),
            "ring_share": float(bgs["ring_share"][i]),
            "stripe_std": float(cores["stripe_std"][i]),
        }
        has_bg = stats["background_share"] >= MIN_BACKGROUND
        style = _style(stats) if has_bg and found and cores["n"][i] > 0 else None
        out.append(
            Detection(
                objects=tuple(found),
                background=_BG_NAMES[bgs["level_idx"][i]] if has_bg else None,
                style=style,
                stats=stats,
            )
        )
    return out


def _style(stats: dict[str, float]) -> str:
    """Decision list, most distinctive evidence first."""
    if stats["noise"] > NOISE_THRESHOLD:
        return "noisy"
    if stats["slope"] > SLOPE_THRESHOLD:
        return "gradient"
    if stats["saturation"] >= NEON_SV and stats["value"] >= NEON_SV:
        return "neon"
    if stats["saturation"] < PASTEL_SATURATION and stats["value"] > 0.8:
        return "pastel"
    if stats["ring_share"] > OUTLINE_SHARE:
        return "outlined"
    if stats["stripe_std"] > STRIPE_STD:
        return "striped"
    return "flat"
