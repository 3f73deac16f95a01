"""k2_data.filters statistics and decisions against plain float64 transcriptions."""

from __future__ import annotations

import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter

from k2_data.filters import (
    STATS_SCHEMA,
    FilterThresholds,
    StatsConfig,
    border_widths,
    complexity_bpp,
    compute_stats,
    decide,
    decide_table,
    decode,
    extreme_pixel_ratios,
    laplacian_variance,
    luma,
    pixel_stats,
    rgb_entropy,
    stats_table,
    text_density,
)

RNG = np.random.default_rng(0)


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _reflect101(i: int, n: int) -> int:
    if n == 1:
        return 0
    if i < 0:
        return -i
    if i >= n:
        return 2 * n - 2 - i
    return i


def _ref_laplacian_var(gray: np.ndarray) -> float:
    h, w = gray.shape
    g = gray.astype(np.float64)
    vals = []
    for y in range(h):
        for x in range(w):
            up, down = g[_reflect101(y - 1, h), x], g[_reflect101(y + 1, h), x]
            left, right = g[y, _reflect101(x - 1, w)], g[y, _reflect101(x + 1, w)]
            vals.append(up + down + left + right - 4 * g[y, x])
    mean = sum(vals) / len(vals)
    return sum((v - mean) ** 2 for v in vals) / len(vals)


def _ref_entropy(pixels: np.ndarray) -> float:
    per_channel = []
    for c in range(3):
        values = pixels[..., c].ravel().tolist()
        counts = [values.count(v) for v in set(values)]
        n = len(values)
        per_channel.append(-sum(k / n * math.log2(k / n) for k in counts))
    return sum(per_channel) / 3


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (2, 2), (3, 7), (9, 4), (16, 16)])
def test_laplacian_variance_matches_loops(shape):
    gray = RNG.integers(0, 256, shape, dtype=np.uint8)
    assert laplacian_variance(gray) == pytest.approx(_ref_laplacian_var(gray), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("shape", [(1, 2), (2, 1), (5, 7), (64, 64)])
def test_laplacian_variance_extreme_checkerboard_matches_loops(shape):
    # 0/255 checkerboard: |Laplacian| reaches its bound 4 * 255 on every interior pixel.
    y, x = np.indices(shape)
    gray = (255 * ((x + y) % 2)).astype(np.uint8)
    assert laplacian_variance(gray) == pytest.approx(_ref_laplacian_var(gray), rel=1e-12, abs=1e-9)


def test_laplacian_variance_properties():
    assert laplacian_variance(np.full((32, 48), 77, np.uint8)) == 0.0
    impulse = np.zeros((20, 30), np.uint8)
    impulse[10, 15] = 200  # interior impulse: values -4v once, v four times, mean 0
    assert laplacian_variance(impulse) == pytest.approx(20 * 200**2 / (20 * 30))
    noise = luma(_noise(64, 64))
    # i.i.d. uniform grey noise: Var(lap) = 20 Var(pixel); luma shrinks Var by sum(w^2).
    expected = 20 * (255**2 - 1) / 12 * (0.299**2 + 0.587**2 + 0.114**2)
    assert laplacian_variance(noise) == pytest.approx(expected, rel=0.1)


def test_luma_is_bt601_within_one_level():
    pixels = _noise(40, 40, seed=2)
    ref = np.rint(pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    diff = np.abs(luma(pixels).astype(np.float64) - ref)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.95


@pytest.mark.parametrize("seed", [0, 1])
def test_rgb_entropy_matches_formula_and_pillow(seed):
    pixels = np.random.default_rng(seed).integers(0, 40, (24, 17, 3), dtype=np.uint8)
    assert rgb_entropy(pixels) == pytest.approx(_ref_entropy(pixels), abs=1e-12)
    # Pillow pools the three histograms: its entropy is the channel mean + log2(3).
    pooled = Image.fromarray(pixels).entropy()
    assert rgb_entropy(pixels) + math.log2(3) == pytest.approx(pooled, abs=1e-6)


def test_rgb_entropy_properties():
    assert rgb_entropy(np.full((8, 8, 3), (3, 200, 90), np.uint8)) == 0.0
    halves = np.zeros((8, 8, 3), np.uint8)
    halves[:4] = 255
    assert rgb_entropy(halves) == pytest.approx(1.0)
    assert 7.9 < rgb_entropy(_noise(128, 128)) <= 8.0


def test_extreme_pixel_ratios_match_loops():
    pixels = RNG.choice(np.array([0, 5, 10, 11, 244, 245, 255], np.uint8), (13, 11, 3))
    white = black = 0
    for row in pixels:
        for px in row:
            white += all(int(c) >= 245 for c in px)
            black += all(int(c) <= 10 for c in px)
    got = extreme_pixel_ratios(pixels, white_level=245, black_level=10)
    assert got == pytest.approx((white / 143, black / 143))
    with pytest.raises(ValueError, match="black_level"):
        extreme_pixel_ratios(pixels, white_level=10, black_level=10)


@settings(max_examples=40, deadline=None)
@given(
    widths=st.tuples(*[st.integers(0, 12)] * 4),
    colour=st.tuples(*[st.integers(0, 255)] * 3),
    seed=st.integers(0, 1000),
)
def test_border_widths_found_on_every_side(widths, colour, seed):
    top, bottom, left, right = widths
    h, w = 40, 56
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.int16)
    jitter = rng.integers(-3, 4, (h, w, 3))  # JPEG-like noise on the border colour
    border = np.zeros((h, w), bool)
    border[:top], border[h - bottom :], border[:, :left], border[:, w - right :] = (True,) * 4
    img[border] = np.clip(np.array(colour) + jitter[border], 0, 255)
    got = border_widths(img.astype(np.uint8), tolerance=8)
    assert (got.top, got.bottom, got.left, got.right) == widths
    fr = got.fractions()
    assert got.max_fraction == max(top / h, bottom / h, left / w, right / w) == max(fr.values())
    assert got.sides == tuple(
        s for s, n in zip(("top", "bottom", "left", "right"), widths, strict=True) if n
    )


def test_border_widths_flat_and_gradient():
    flat = border_widths(np.full((10, 12, 3), 9, np.uint8))
    assert (flat.top, flat.left, flat.max_fraction) == (10, 12, 1.0)
    ramp = np.repeat(np.arange(50, dtype=np.uint8)[:, None], 20, axis=1)  # +1 level per row
    got = border_widths(np.repeat(ramp[..., None], 3, axis=2), tolerance=8)
    # Rows 0..8 stay within 8 levels of row 0; from the bottom, rows 49..41 of row 49.
    assert (got.top, got.bottom, got.left, got.right) == (9, 9, 0, 0)


_STD_LUMA = [
    16,
    11,
    10,
    16,
    24,
    40,
    51,
    61,
    12,
    12,
    14,
    19,
    26,
    58,
    60,
    55,
    14,
    13,
    16,
    24,
    40,
    57,
    69,
    56,
    14,
    17,
    22,
    29,
    51,
    87,
    80,
    62,
    18,
    22,
    37,
    56,
    68,
    109,
    103,
    77,
    24,
    35,
    55,
    64,
    81,
    104,
    113,
    92,
    49,
    64,
    78,
    87,
    103,
    121,
    120,
    101,
    72,
    92,
    95,
    98,
    112,
    100,
    103,
    99,
]  # fmt: skip  (ITU-T T.81 Table K.1)


def _ref_block_bits(gray: np.ndarray, quality: int = 75) -> float:
    """Loop transcription of the modelled JPEG cost: per 8x8 block, orthonormal DCT-II,
    IJG-scaled quantiser, bit_length(|v|) + 3 per non-zero AC value and DC difference."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    q = [min(max((t * scale + 50) // 100, 1), 255) for t in _STD_LUMA]
    h, w = gray.shape
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    g = [[float(gray[min(y, h - 1), min(x, w - 1)]) for x in range(wp)] for y in range(hp)]
    bits, prev_dc = 0, None
    for by in range(0, hp, 8):
        for bx in range(0, wp, 8):
            for u in range(8):
                for v in range(8):
                    cu = math.sqrt(1 / 8) if u == 0 else math.sqrt(2 / 8)
                    cv = math.sqrt(1 / 8) if v == 0 else math.sqrt(2 / 8)
                    c = (
                        cu
                        * cv
                        * sum(
                            g[by + y][bx + x]
                            * math.cos((2 * y + 1) * u * math.pi / 16)
                            * math.cos((2 * x + 1) * v * math.pi / 16)
                            for y in range(8)
                            for x in range(8)
                        )
                    )
                    level = round(c / q[8 * u + v])
                    if u == v == 0:
                        level, prev_dc = (0 if prev_dc is None else level - prev_dc), level
                    if level:
                        bits += abs(level).bit_length() + 3
    return bits / (h * w)


@pytest.mark.parametrize("shape", [(8, 8), (16, 24), (13, 21)])
def test_complexity_matches_block_loops(shape):
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    smooth = 128 + 60 * np.sin(x / 3.0 + y / 5.0)  # mid-range levels: no .5 rounding ties
    gray = np.clip(smooth + RNG.normal(0, 10, shape), 0, 255).astype(np.uint8)
    got = complexity_bpp(gray, side=64)
    assert got == pytest.approx(_ref_block_bits(gray), abs=1e-12)


@pytest.mark.parametrize("quality", [1, 50, 95])
def test_complexity_extreme_values_match_block_loops(quality):
    # Large quantised values: flat 0 / 250 blocks alternate (DC differences of 8 * 250 / step,
    # no .5 ties) and one block is the sign pattern of the (1, 1) basis (a large AC value).
    blocks = np.kron(np.array([[0, 250], [250, 0], [0, 250]]), np.ones((8, 8))).astype(np.uint8)
    c = np.cos((2 * np.arange(8) + 1) * np.pi / 16)
    blocks[:8, :8] = np.where(np.outer(c, c) > 0, 240, 10)
    got = complexity_bpp(blocks, side=64, quality=quality)
    assert got == pytest.approx(_ref_block_bits(blocks, quality), abs=1e-12)
    assert got > 0


def test_complexity_properties():
    flat = np.full((300, 200), 90, np.uint8)
    assert complexity_bpp(flat) == 0.0
    smooth = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))
    noise = luma(_noise(256, 256))
    assert 0 <= complexity_bpp(smooth, side=256) < 0.5 < 3.0 < complexity_bpp(noise, side=256)
    # Measured at a fixed side: a 2x nearest upscale box-filters back to the same image.
    twice = np.repeat(np.repeat(noise, 2, axis=0), 2, axis=1)
    assert complexity_bpp(twice, side=256) == complexity_bpp(noise, side=256)
    # Monotone with real complexity: more noise, more bits; more blur, fewer bits.
    rng = np.random.default_rng(4)
    base = rng.normal(0, 1, (64, 64))
    by_noise = [
        complexity_bpp(np.clip(128 + s * base, 0, 255).astype(np.uint8)) for s in (2, 8, 30, 90)
    ]
    assert by_noise == sorted(by_noise) and len(set(by_noise)) == 4
    photo = np.asarray(Image.fromarray(noise).resize((64, 64), Image.Resampling.BICUBIC))
    blurred = [photo] + [
        np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(r))) for r in (1, 2, 4)
    ]
    by_blur = [complexity_bpp(g) for g in blurred]
    assert by_blur == sorted(by_blur, reverse=True)


def test_complexity_tracks_real_jpeg_size():
    """The model ranks images as Pillow's encoder does (the old re-encode measure)."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:64, 0:64]
    images = []
    for i in range(12):
        freq, amp = 0.05 + 0.1 * i, 10 * (i % 4 + 1)
        smooth = 128 + 50 * np.sin(freq * x + 0.3 * i * y)
        images.append(np.clip(smooth + rng.normal(0, amp, (64, 64)), 0, 255).astype(np.uint8))

    def real_bits(gray):
        def size(g):
            buffer = io.BytesIO()
            Image.fromarray(g, "L").save(buffer, "JPEG", quality=75, optimize=False)
            return buffer.tell()

        flat = np.full_like(gray, round(float(gray.mean())))
        return (size(gray) - size(flat)) * 8 / gray.size

    model = np.array([complexity_bpp(g) for g in images])
    real = np.array([real_bits(g) for g in images])
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    spearman = np.corrcoef(ranks(model), ranks(real))[0, 1]
    assert spearman > 0.9 and np.abs(model - real).mean() < 0.3


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (5, 1), (7, 9), (64, 64), (40, 71)])
def test_fused_pixel_stats_equal_the_per_statistic_references(shape):
    h, w = shape
    pixels = RNG.choice(np.array([0, 4, 10, 11, 120, 244, 245, 255], np.uint8), (h, w, 3))
    pixels[: h // 3] = (250, 251, 252)  # a white, flat top border
    pixels[:, w - w // 4 :] = (3, 9, 2)  # a black, flat right border
    got = pixel_stats(pixels, complexity_side=256)
    gray = luma(pixels)
    assert (got.gray == gray).all()
    assert got.laplacian_var == pytest.approx(_ref_laplacian_var(gray), rel=1e-12, abs=1e-9)
    assert got.entropy == pytest.approx(_ref_entropy(pixels), abs=1e-12)
    white = sum(all(int(c) >= 245 for c in px) for row in pixels for px in row) / (h * w)
    black = sum(all(int(c) <= 10 for c in px) for row in pixels for px in row) / (h * w)
    assert (got.white_ratio, got.black_ratio) == pytest.approx((white, black), abs=1e-15)
    runs = _ref_border_runs(pixels, 8)
    assert got.borders == runs
    assert got.complexity == pytest.approx(_ref_block_bits(gray) if h * w < 100 else got.complexity)
    assert got.complexity == complexity_bpp(gray, side=256)
    same = pixel_stats(pixels, Image.fromarray(pixels), complexity_side=256)
    assert same[:6] == got[:6]


def _ref_border_runs(pixels: np.ndarray, tolerance: int) -> tuple[int, int, int, int]:
    """Side by side, line by line: a line is flat when every pixel is within tolerance (per
    channel) of the mid-range colour of the side's edge line."""
    h, w = pixels.shape[:2]
    p = pixels.astype(np.float64)
    sides = {
        "top": [p[y] for y in range(h)],
        "bottom": [p[y] for y in reversed(range(h))],
        "left": [p[:, x] for x in range(w)],
        "right": [p[:, x] for x in reversed(range(w))],
    }
    runs = []
    for lines in sides.values():
        ref = (lines[0].min(axis=0) + lines[0].max(axis=0)) / 2
        run = 0
        for line in lines:
            if np.abs(line - ref).max() > tolerance:
                break
            run += 1
        runs.append(run)
    return tuple(runs)


@pytest.mark.parametrize("shape", [(1, 5), (4, 1), (6, 9), (64, 64), (9, 6)])
@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
@pytest.mark.parametrize("spread", [16, 17])
def test_border_runs_one_flat_edge_at_the_tolerance_boundary(shape, side, spread):
    # Only `side` may start flat; its edge line and the next one span `spread` levels in one
    # channel: 2 * tolerance (16) is still flat, 17 is not (the edge line deviates from its
    # own mid-range by half its span), so both the cheap edge check and the run are exercised.
    h, w = shape
    pixels = RNG.choice(np.array([0, 255], np.uint8), (h, w, 3))
    view = {
        "top": pixels,
        "bottom": pixels[::-1],
        "left": pixels.transpose(1, 0, 2),
        "right": pixels.transpose(1, 0, 2)[::-1],
    }[side]
    for line in view[:2]:
        line[:] = (100, 50, 200)
        line[::2, 1] += spread
    got = pixel_stats(pixels, complexity_side=256).borders
    assert got == _ref_border_runs(pixels, 8)
    b = border_widths(pixels, tolerance=8)
    assert (b.top, b.bottom, b.left, b.right) == got
    if min(shape) > 1 and view.shape[1] > 1:
        assert got[("top", "bottom", "left", "right").index(side)] == (2 if spread == 16 else 0)


def test_border_runs_no_flat_edge_is_zero():
    pixels = _noise(64, 48, seed=3)
    assert pixel_stats(pixels).borders == _ref_border_runs(pixels, 8) == (0, 0, 0, 0)


def test_pixel_and_compute_stats_accept_a_shared_luma():
    pixels = _noise(40, 56, seed=5)
    pixels[:5] = 250
    gray = np.asarray(Image.fromarray(pixels).convert("L"))
    shared, own = pixel_stats(pixels, gray=gray), pixel_stats(pixels)
    assert shared[:6] == own[:6] and shared.gray is gray
    decoded = decode(_png(pixels))
    assert compute_stats(decoded, gray=gray) == compute_stats(decoded)
    # The test-time jaxtyping hook rejects a wrong luma first (TypeError); the function's own
    # check (ValueError) is what runs without the hook.
    unchecked = getattr(pixel_stats, "__wrapped__", pixel_stats)
    for bad in (gray[:, :-1], gray.astype(np.int16)):
        with pytest.raises((TypeError, ValueError)):
            pixel_stats(pixels, gray=bad)
        with pytest.raises(ValueError, match="gray must be the uint8"):
            unchecked(pixels, gray=bad)


def _raster_density(boxes, h, w):
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        for y in range(max(0, y0), min(h, y1)):
            for x in range(max(0, x0), min(w, x1)):
                covered[y, x] = True
    return covered.mean()


def test_text_density_matches_raster():
    rng = np.random.default_rng(3)
    for _ in range(10):
        boxes = []
        for _ in range(int(rng.integers(1, 7))):
            x0, y0 = (int(v) for v in rng.integers(-5, 30, 2))
            boxes.append((x0, y0, x0 + int(rng.integers(0, 20)), y0 + int(rng.integers(0, 15))))
        got = text_density(boxes, height=25, width=32)
        assert got == pytest.approx(_raster_density(boxes, 25, 32), abs=1e-12)
    assert text_density([], height=5, width=5) == 0.0
    assert text_density([(1.5, 0, 2.0, 4)], height=4, width=4) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="x1 >= x0"):
        text_density([(5, 0, 1, 3)], height=8, width=8)


def test_compute_stats_record():
    img = _noise(60, 80)
    img[:12] = 255  # 12-row white bar on top
    calls = []

    def ocr(pixels):
        calls.append(pixels.shape)
        return [(0, 0, 40, 30)]

    stats = compute_stats(decode(_png(img)), ocr=ocr)
    assert list(stats) == STATS_SCHEMA.names and calls == [(60, 80, 3)]
    assert stats["decode_error"] is None and stats["format"] == "PNG"
    assert (stats["width"], stats["height"], stats["aspect_ratio"]) == (80, 60, 80 / 60)
    assert stats["border_top"] == stats["border_fraction"] == 12 / 60
    assert stats["border_sides"] == "top"
    assert stats["white_ratio"] >= 12 / 60
    assert stats["laplacian_var"] == laplacian_variance(luma(img))
    assert (stats["text_density"], stats["text_boxes"]) == (0.25, 1)
    no_ocr = compute_stats(decode(_png(img)))
    assert no_ocr["text_density"] is None and no_ocr["text_boxes"] is None


def test_compute_stats_broken_file_record():
    stats = compute_stats(decode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30))
    assert stats["decode_error"].startswith("truncated")
    assert all(stats[k] is None for k in ("laplacian_var", "entropy", "width"))
    assert decide(stats)[1].startswith("broken_file: truncated")


def test_stats_config_validates():
    with pytest.raises(ValueError, match="white_level"):
        StatsConfig(white_level=5, black_level=10)
    with pytest.raises(ValueError, match="border_tolerance"):
        StatsConfig(border_tolerance=300)


def _good(**overrides):
    row = dict.fromkeys(STATS_SCHEMA.names)
    row.update(
        width=640, height=480, aspect_ratio=640 / 480, laplacian_var=900.0, entropy=7.0,
        white_ratio=0.05, black_ratio=0.02, border_fraction=0.0, complexity=1.2,
    )  # fmt: skip
    row.update(overrides)
    return row


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, ""),
        ({"decode_error": "truncated: x"}, "broken_file: truncated: x"),
        ({"width": 200}, "short_side<256"),
        ({"width": 2000, "height": 480, "aspect_ratio": 2000 / 480}, "aspect_ratio>3"),
        ({"width": 480, "height": 2000, "aspect_ratio": 480 / 2000}, "aspect_ratio>3"),
        ({"laplacian_var": 20000.0}, "laplacian_var>10000"),
        ({"entropy": 2.0}, "entropy<4"),
        ({"white_ratio": 0.9}, "white_ratio>0.6"),
        ({"black_ratio": 0.7}, "black_ratio>0.6"),
        ({"border_fraction": 0.2}, "border_fraction>0.1"),
        ({"complexity": 3.5}, "complexity>3"),
        ({"text_density": 0.5}, "text_density>0.3"),
        ({"text_density": 0.1}, ""),
        ({"entropy": 2.0, "white_ratio": 0.9, "laplacian_var": 1e5}, "laplacian_var>10000"),
    ],
)
def test_decide_names_first_failing_rule(overrides, reason):
    assert decide(_good(**overrides)) == (reason == "", reason)


def test_decide_respects_disabled_and_custom_rules():
    row = _good(laplacian_var=20.0, entropy=2.0)
    assert decide(row, FilterThresholds(min_entropy=None)) == (True, "")
    strict = FilterThresholds(min_laplacian_var=50, min_entropy=None)
    assert decide(row, strict) == (False, "laplacian_var<50")
    with pytest.raises(KeyError, match="entropy"):
        decide({k: v for k, v in row.items() if k != "entropy"})
    with pytest.raises(ValueError, match="max_aspect_ratio"):
        FilterThresholds(max_aspect_ratio=0.5)
    with pytest.raises(ValueError, match="min_laplacian_var"):
        FilterThresholds(min_laplacian_var=10, max_laplacian_var=5)


def test_decide_table_equals_rowwise_decide(tmp_path):
    rng = np.random.default_rng(7)
    rows = []
    for i in range(300):
        w, h = (int(v) for v in rng.integers(100, 2000, 2))
        row = _good(
            width=w, height=h, aspect_ratio=w / h, laplacian_var=float(rng.uniform(0, 15000)),
            entropy=float(rng.uniform(0, 8)), white_ratio=float(rng.uniform(0, 0.8)),
            black_ratio=float(rng.uniform(0, 0.8)), border_fraction=float(rng.uniform(0, 0.2)),
            complexity=float(rng.uniform(0, 4)),
            text_density=None if i % 3 else float(rng.uniform(0, 0.5)),
        )  # fmt: skip
        if i % 17 == 0:
            row = compute_stats(decode(b"junk" * i))
        row["__key__"] = f"{i:09d}"
        rows.append(row)
    table = stats_table(rows)
    assert (
        table.column_names[0] == "__key__"
        and table.schema.field("text_density").type == pa.float64()
    )
    pq.write_table(table, tmp_path / "stats.parquet")
    table = pq.read_table(tmp_path / "stats.parquet")
    for thresholds in (
        FilterThresholds(),
        FilterThresholds(min_laplacian_var=500, min_entropy=None),
    ):
        out = decide_table(table, thresholds)
        expected = [decide(r, thresholds) for r in table.to_pylist()]
        assert out["keep"].to_pylist() == [k for k, _ in expected]
        assert out["reason"].to_pylist() == [r for _, r in expected]
        assert 0 < sum(k for k, _ in expected) < len(rows)  # both outcomes exercised
    again = decide_table(decide_table(table), FilterThresholds(max_complexity=None))
    assert again.column_names.count("keep") == 1
