"""Synthetic world: the detector behind the verifier (moment features, robustness)."""

import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from k2_data.synthetic import (
    BACKGROUNDS,
    Scene,
    SceneObject,
    WorldConfig,
    captions,
    detect,
    palette_rgb,
    render,
    sample_scenes,
    verify_batch,
)
from k2_data.synthetic._shape_features import SHAPE_PROTOTYPES, SHAPE_RANGES


def _single(shape, *, size="large", colour="blue", style="flat", bg="grey", at=(0.5, 0.5)):
    obj = SceneObject(
        shape=shape, colour=colour, size=size, count=1, position="centre", centres=(at,)
    )
    return Scene(seed=0, objects=(obj,), background=bg, style=style)


def test_prototypes_match_closed_forms():
    # Square [-1/2, 1/2]^2, unit area: E[x^4] = 1/80, E[x^2 y^2] = 1/144, so
    # K = 2/80 - 6/144 = -1/60; the diamond is the square turned by 45 degrees (cos 4θ flips
    # sign): +1/60; a disc has no four-fold harmonic: 0.
    assert SHAPE_PROTOTYPES["square"][0] == pytest.approx(-1 / 60, abs=1e-6)
    assert SHAPE_PROTOTYPES["diamond"][0] == pytest.approx(1 / 60, abs=1e-4)
    assert SHAPE_PROTOTYPES["circle"][0] == pytest.approx(0.0, abs=1e-4)
    # Triangle, apex (0, -1), base y = 1: area 2, centroid y = 1/3, central
    # mu03 = int_0^2 (t - 4/3)^3 t dt = -16/135, so S = (-16/135) / 2^2.5.
    assert SHAPE_PROTOTYPES["triangle"][1] == pytest.approx(-16 / 135 / 2**2.5, rel=1e-3)
    for shape, proto in SHAPE_PROTOTYPES.items():
        for value, (lo, hi) in zip(proto, SHAPE_RANGES[shape], strict=True):
            assert lo < value < hi, shape


def _reference_moments(img, rgb, background):
    """Plain float64 loops over pixels: coverage from the green-channel blend, then moments."""
    h, w, _ = img.shape
    pts = []
    for yy in range(h):
        for xx in range(w):
            cov = (float(img[yy, xx, 1]) - background) / (rgb[1] - background)
            if cov > 1e-9:
                pts.append((xx + 0.5, yy + 0.5, min(cov, 1.0)))
    area = sum(m for _, _, m in pts)
    cx = sum(x * m for x, _, m in pts) / area
    cy = sum(y * m for _, y, m in pts) / area
    mu = {}
    for p, q in ((4, 0), (0, 4), (2, 2), (0, 3), (2, 0), (0, 2)):
        mu[p, q] = sum(m * (x - cx) ** p * (y - cy) ** q for x, y, m in pts)
    k = (mu[4, 0] + mu[0, 4] - 6 * mu[2, 2]) / area**3
    s = mu[0, 3] / area**2.5
    d = (mu[2, 0] - mu[0, 2]) / area**2
    return k, s, d


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "diamond"])
def test_vectorised_moments_match_a_loop_reference(shape):
    img = render(_single(shape, at=(0.43, 0.56)), 48)
    rgb = palette_rgb("blue", "flat")
    ref = _reference_moments(img, rgb, BACKGROUNDS["grey"])
    (obj,) = detect(img).objects
    assert obj.shape == shape
    got = (obj.harmonic, obj.skew, obj.anisotropy)
    assert got == pytest.approx(ref, abs=3e-4)


def test_shape_features_survive_blur():
    # An isotropic blur adds no third cumulant and no four-fold harmonic: K and S stay.
    for shape in ("square", "diamond", "triangle"):
        img = render(_single(shape), 64)
        blurred = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(1.5)))
        a, b = detect(img).objects[0], detect(blurred).objects[0]
        assert b.shape == shape
        assert b.harmonic == pytest.approx(a.harmonic, abs=0.003)
        assert b.skew == pytest.approx(a.skew, abs=0.003)


def test_verifier_tolerates_soft_and_noisy_images():
    # What a small generative model produces: blurred edges, colour noise. The object,
    # count and position verdicts hold up (style is not asked for here).
    scenes = sample_scenes(200, seed=41, config=WorldConfig(styles=("flat",)))
    prompts = [captions(s).medium for s in scenes]
    rng = np.random.default_rng(0)
    clean = [render(s, 32) for s in scenes]
    blurred = [np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(0.6))) for a in clean]
    noisy = [np.clip(a + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8) for a in clean]
    for images in (blurred, noisy):
        scores = [r.score for r in verify_batch(images, prompts)]
        assert np.mean(scores) >= 0.9


def test_background_and_style_need_enough_evidence():
    blank = np.full((32, 32, 3), BACKGROUNDS["white"], dtype=np.uint8)
    det = detect(blank)
    assert det.background == "white" and det.objects == () and det.style is None
    speckle = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    det = detect(speckle)
    assert det.background is None and det.style is None
    assert all(o.shape is None for o in det.objects)


def test_positions_follow_the_centre():
    for x in (0.2, 0.5, 0.8):
        for y in (0.2, 0.5, 0.8):
            (obj,) = detect(render(_single("circle", size="small", at=(x, y)), 32)).objects
            assert math.dist(obj.centre, (x, y)) < 0.5 / 32
