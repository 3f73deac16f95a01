"""Synthetic world: rendering (resolutions, anti-aliasing, styles)."""

import math

import numpy as np
import pytest

from k2_data.synthetic import (
    BACKGROUNDS,
    COLOURS,
    STYLES,
    Scene,
    SceneObject,
    WorldConfig,
    render,
    sample_scenes,
)


def _scene(shape="circle", colour="red", size="large", style="flat", bg="light grey", **kw):
    obj = SceneObject(
        shape=shape, colour=colour, size=size, count=1, position="centre", centres=((0.5, 0.5),)
    )
    return Scene(seed=kw.get("seed", 0), objects=(obj,), background=bg, style=style, angle=0)


def test_same_scene_same_pixels_and_different_scenes_differ():
    scenes = sample_scenes(20, seed=0)
    a = [render(s, 32) for s in scenes]
    b = [render(s, 32) for s in scenes]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(not np.array_equal(a[i], a[i + 1]) for i in range(19))


@pytest.mark.parametrize("resolution", [16, 23, 32, 64, 256])
def test_renders_at_any_resolution(resolution):
    for scene in sample_scenes(3, seed=resolution):
        img = render(scene, resolution)
        assert img.shape == (resolution, resolution, 3) and img.dtype == np.uint8


def test_resolution_below_16_raises():
    with pytest.raises(ValueError, match=r"resolution=15 is below 16"):
        render(_scene(), 15)


def test_flat_shape_has_exact_colours_and_analytic_area():
    # Reference areas of the exact shapes (box side s): circle pi s^2/4, square s^2,
    # triangle and diamond s^2/2. The rendered coverage, read back from the blend with the
    # grey background, must match them: this checks the anti-aliasing integrates correctly.
    from k2_data.synthetic._vocab import SHAPE_SCALE, SIZES

    res = 64
    exact = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5}
    for shape, frac in exact.items():
        img = render(_scene(shape=shape), res).astype(np.float64)
        rgb = np.array(COLOURS["red"], dtype=np.float64)
        bg = BACKGROUNDS["light grey"]
        assert np.array_equal(img[res // 2, res // 2], rgb)  # interior: the palette colour
        assert np.array_equal(img[0, 0], [bg, bg, bg])  # corner: the background
        alpha = (img[..., 1] - bg) / (rgb[1] - bg)  # green channel: 190 -> 45
        side = SIZES["large"] * SHAPE_SCALE[shape] * res
        assert alpha.sum() == pytest.approx(frac * side * side, rel=0.03), shape


def test_resolutions_agree_after_box_downsampling():
    # A box-filtered 128 px render approximates the ideal 32 px image, as the analytic
    # anti-aliasing does; so the two agree up to edge error.
    for scene in sample_scenes(10, seed=9, config=WorldConfig(styles=("flat",))):
        small = render(scene, 32).astype(np.float64)
        big = render(scene, 128).astype(np.float64).reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
        assert np.abs(small - big).mean() < 1.5


def test_style_signatures():
    base = {"shape": "square", "colour": "blue", "size": "large", "bg": "grey"}
    flat = render(_scene(**base), 64).astype(np.float64)
    noisy = render(_scene(style="noisy", **base), 64).astype(np.float64)
    gradient = render(_scene(style="gradient", **base), 64).astype(np.float64)
    striped = render(_scene(style="striped", **base), 64).astype(np.float64)
    outlined = render(_scene(style="outlined", **base), 64).astype(np.float64)
    # noisy: grain of ~14 grey levels on the background, identical on all channels
    resid = noisy[:4] - flat[:4]
    assert 11 < resid.std() < 17
    assert np.array_equal(resid[..., 0], resid[..., 1])
    # gradient: the background changes along the stripe/gradient direction (angle 0: x)
    assert gradient[0, -1, 0] - gradient[0, 0, 0] > 30
    # striped: inside the square, two shades of the same chroma
    inner = striped[24:40, 24:40]
    assert inner[..., 2].max() - inner[..., 2].min() > 50
    chroma = inner.max(-1) - inner.min(-1)
    assert chroma.max() - chroma.min() <= 2
    # outlined: a dark ring just outside the square (side 0.27 * 64 = 17.3 px)
    assert outlined[32, 32 - 10].max() < 60 and flat[32, 32 - 10].max() == 128


def test_palettes():
    from k2_data.synthetic import palette_rgb

    for colour, rgb in COLOURS.items():
        pastel = np.array(palette_rgb(colour, "pastel"))
        neon = np.array(palette_rgb(colour, "neon"))
        assert (pastel >= np.array(rgb)).all() and pastel.min() > 120  # lighter
        assert neon.max() == 255 and neon.min() == 0  # fully saturated


def test_every_style_renders():
    for style in STYLES:
        scenes = sample_scenes(3, seed=1, config=WorldConfig(styles=(style,)))
        for s in scenes:
            assert s.style == style
            img = render(s, 32)
            assert img.shape == (32, 32, 3) and img.std() > 5
