"""k2_data.filters.decode: one decode per image, draft path choice, broken-file reasons."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from k2_data.filters import compute_stats, decode, fit_size


def _smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour image (gradients + low-frequency waves): compresses like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [
        128 + 60 * np.sin(2 * np.pi * (rng.uniform(1, 3) * x + rng.uniform(1, 3) * y + c))
        for c in range(3)
    ]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def _encode(pixels: np.ndarray, fmt: str, mode: str | None = None, **kw) -> bytes:
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jpeg_1024x768() -> bytes:
    return _encode(_smooth(768, 1024), "JPEG", quality=90)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_formats_decode_to_rgb_with_original_size(fmt):
    src = _smooth(48, 80)
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode(_encode(src, fmt, **kw))
    assert out.ok and out.reason == ""
    assert (out.width, out.height, out.format, out.mode) == (80, 48, fmt, "RGB")
    assert out.pixels is not None and out.pixels.shape == (48, 80, 3)
    assert out.pixels.dtype == np.uint8 and out.decode_path == "full"
    err = np.abs(out.pixels.astype(int) - src).mean()
    assert err == 0 if fmt != "JPEG" else err < 3  # lossless formats are exact


@pytest.mark.parametrize(
    ("max_side", "path", "shape"),
    [
        # Largest s in {8,4,2} with s <= min(1024 // tw, 768 // th), tw x th the fitted size.
        (None, "full", (768, 1024)),
        (1024, "full", (768, 1024)),
        (2000, "full", (768, 1024)),
        (600, "full", (450, 600)),  # 1024 // 600 = 1: no DCT scaling, box only
        (512, "jpeg_draft_1/2", (384, 512)),
        (300, "jpeg_draft_1/2", (225, 300)),  # 1024 // 300 = 3 -> 1/2, then box 512 -> 300
        (256, "jpeg_draft_1/4", (192, 256)),
        (128, "jpeg_draft_1/8", (96, 128)),
        (64, "jpeg_draft_1/8", (48, 64)),  # 1/8 is libjpeg's smallest scale
    ],
)
def test_jpeg_draft_path_follows_max_side(jpeg_1024x768, max_side, path, shape):
    out = decode(jpeg_1024x768, max_side=max_side)
    assert out.ok, out.reason
    assert out.decode_path == path
    assert out.pixels is not None and out.pixels.shape == (*shape, 3)
    assert (out.width, out.height) == (1024, 768)  # header size, not the drafted one


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_draft_only_for_jpeg(fmt):
    out = decode(_encode(_smooth(96, 128), fmt), max_side=32)
    assert out.ok and out.decode_path == "full"
    assert out.pixels is not None and out.pixels.shape == (24, 32, 3)


def test_allow_draft_false_forces_full(jpeg_1024x768):
    out = decode(jpeg_1024x768, max_side=256, allow_draft=False)
    assert out.decode_path == "full" and out.pixels is not None
    assert out.pixels.shape == (192, 256, 3)


def test_draft_pixels_close_to_full_decode_then_box(jpeg_1024x768):
    draft = decode(jpeg_1024x768, max_side=256).pixels.astype(np.float64)
    full = np.asarray(Image.open(io.BytesIO(jpeg_1024x768)).convert("RGB"), dtype=np.float64)
    box = full.reshape(192, 4, 256, 4, 3).mean(axis=(1, 3))  # independent 4x4 area mean
    assert np.abs(draft - box).mean() < 2.0


def test_fit_size_properties():
    assert fit_size(1024, 768, 256) == (256, 192)
    assert fit_size(100, 50, 200) == (100, 50)
    assert fit_size(10_000, 3, 100) == (100, 1)  # never 0
    for w, h, m in [(333, 777, 100), (5, 5000, 17), (640, 480, 640)]:
        tw, th = fit_size(w, h, m)
        assert max(tw, th) == min(m, max(w, h))
        assert abs(tw / th - w / h) <= max(w / h / th, 1 / tw) * 1.01


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (b"definitely not an image, just some text" * 10, "not_an_image"),
        (b"\xff\xd8\xff" + bytes(range(256)) * 4, "truncated"),  # JPEG magic, garbage headers
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "truncated"),  # PNG signature, cut header
        (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x00IEND\xaeB`\x82", "corrupt"),  # no IHDR
        (b"GIF89a" + b"\x00" * 3, "corrupt"),
    ],
)
def test_non_images_return_reasons(data, kind):
    out = decode(data)
    assert not out.ok and out.pixels is None and out.decode_path == ""
    assert out.reason.startswith(f"{kind}: ")


@pytest.mark.parametrize("load_truncated", [False, True])
@pytest.mark.parametrize(
    ("fmt", "keep"),
    [("JPEG", 0.5), ("JPEG", -2), ("PNG", 0.6), ("PNG", -4), ("WEBP", 0.5)],
)
def test_truncated_files_detected_whatever_the_pillow_flag(monkeypatch, fmt, keep, load_truncated):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    data = _encode(_smooth(64, 96, seed=3), fmt)
    cut = data[: int(len(data) * keep)] if keep > 0 else data[:keep]
    out = decode(cut, max_side=32)
    assert not out.ok and out.reason.startswith("truncated: "), out.reason
    # Pillow's WebP plugin starts libwebp at open, so a cut WebP never yields a header.
    expected = (0, 0, "") if fmt == "WEBP" else (96, 64, fmt)
    assert (out.width, out.height, out.format) == expected


def test_truncated_jpeg_with_end_marker_inside_exif_is_detected():
    data = _encode(_smooth(64, 96), "JPEG")
    # An APP1 segment whose payload holds FFD9 (as an EXIF thumbnail does) before the scan.
    payload = b"Exif\x00\x00" + b"\xff\xd8thumb\xff\xd9"
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    with_app1 = data[:2] + app1 + data[2:]
    assert decode(with_app1).ok
    out = decode(with_app1[: len(with_app1) * 2 // 3])
    assert out.reason.startswith("truncated: ")


def test_corrupt_png_crc_reported():
    data = bytearray(_encode(_smooth(32, 32), "PNG"))
    idat = data.find(b"IDAT")
    data[idat + 10] ^= 0xFF  # flip a byte of compressed data: the chunk CRC no longer matches
    out = decode(bytes(data))
    assert not out.ok and out.reason.startswith("corrupt: "), out.reason
    assert (out.width, out.height) == (32, 32)


def test_corrupt_jpeg_scan_data_never_raises():
    data = bytearray(_encode(_smooth(64, 64, seed=1), "JPEG"))
    rng = np.random.default_rng(0)
    for _ in range(20):  # random byte damage in the scan: decoded (damaged) or a reason
        broken = bytearray(data)
        for i in rng.integers(len(data) // 2, len(data) - 2, size=8):
            broken[i] = int(rng.integers(0, 256))
        out = decode(bytes(broken))
        assert out.ok or out.reason.split(":")[0] in {"corrupt", "truncated"}


def test_decompression_bomb_is_a_reason(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    out = decode(_encode(_smooth(64, 64), "PNG"))
    assert not out.ok and out.reason.startswith("too_large: ")


@pytest.mark.parametrize(
    ("mode", "fmt"), [("L", "JPEG"), ("CMYK", "JPEG"), ("P", "PNG"), ("P", "GIF"), ("LA", "PNG")]
)
def test_modes_convert_to_rgb(mode, fmt):
    out = decode(_encode(_smooth(40, 40), fmt, mode=mode), max_side=20)
    assert out.ok and out.mode == mode and out.pixels is not None
    assert out.pixels.shape == (20, 20, 3)
    if mode in ("L", "LA"):
        assert (out.pixels == out.pixels[..., :1]).all()


def test_grey_jpeg_uses_draft():
    out = decode(_encode(_smooth(256, 256), "JPEG", mode="L"), max_side=64)
    assert out.decode_path == "jpeg_draft_1/4" and out.mode == "L"


def test_transparent_pixels_become_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :3], rgba[:4, :, 3] = (10, 20, 30), 255  # opaque top half, transparent bottom
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    out = decode(buffer.getvalue())
    assert out.pixels is not None and out.mode == "RGBA"
    assert (out.pixels[:4] == (10, 20, 30)).all() and (out.pixels[4:] == 255).all()


def test_bad_max_side_raises():
    with pytest.raises(ValueError, match="max_side"):
        decode(b"x", max_side=0)


def test_progressive_jpeg_cut_between_scans_is_truncated():
    data = _encode(_smooth(64, 96, seed=5), "JPEG", progressive=True)
    assert decode(data, max_side=48).decode_path == "jpeg_draft_1/2"
    sos = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    assert len(sos) > 2  # several scans
    out = decode(data[: sos[2]])  # complete first scans, later ones missing
    assert out.reason.startswith("truncated: "), out.reason


def test_draft_and_full_stats_agree():
    y, x = np.mgrid[0:512, 0:512] / 512
    img = np.clip(np.stack([128 + 80 * np.sin(9 * x + 5 * y + c) for c in range(3)], -1), 0, 255)
    noise = np.random.default_rng(1).normal(0, 6, img.shape)
    buffer = io.BytesIO()
    Image.fromarray((img + noise).clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=92)
    draft = compute_stats(decode(buffer.getvalue(), max_side=128))
    full = compute_stats(decode(buffer.getvalue(), max_side=128, allow_draft=False))
    assert draft["decode_path"] == "jpeg_draft_1/4" and full["decode_path"] == "full"
    for key in ("laplacian_var", "entropy", "complexity"):
        assert draft[key] == pytest.approx(full[key], rel=0.1), key


@pytest.mark.parametrize("max_side", [None, 64, 300])
def test_jpeg_over_64_kib_decodes_like_pillows_own_load(max_side):
    # decode() hands libjpeg the whole file in one read; Pillow's load() reads 64 KiB blocks.
    noisy = np.random.default_rng(4).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    data = _encode(noisy, "JPEG", quality=95)
    assert len(data) > 2 * 65536
    out = decode(data, max_side=max_side)
    ref = Image.open(io.BytesIO(data))
    if max_side is not None:
        ref.draft(None, fit_size(600, 400, max_side))
    ref.load()
    ref = ref.convert("RGB")
    if max_side is not None and ref.size != fit_size(600, 400, max_side):
        ref = ref.resize(fit_size(600, 400, max_side), Image.Resampling.BOX)
    assert out.ok and out.pixels is not None
    assert np.array_equal(out.pixels, np.asarray(ref))
    assert np.array_equal(out.pixels, np.asarray(out.image))
    assert not out.pixels.flags.writeable and out.pixels.flags.c_contiguous


@pytest.mark.parametrize("load_truncated", [False, True])
def test_jpeg_over_64_kib_cut_is_truncated(monkeypatch, load_truncated):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    noisy = np.random.default_rng(5).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    data = _encode(noisy, "JPEG", quality=95)
    out = decode(data[: len(data) * 3 // 4], max_side=64)
    assert not out.ok and out.reason.startswith("truncated: "), out.reason
