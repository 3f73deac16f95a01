"""k2_data.hashing: md5, phash and colorhash against imagehash and plain references; hamming."""

import hashlib
import math

import imagehash
import numpy as np
import pytest
import scipy.fftpack
from PIL import Image

from k2_data.hashing import (
    colorhash,
    colorhash_batch,
    colorhash_lut,
    colorhash_nbits,
    colorhash_values,
    dct2_scipy,
    encode_colorhash,
    from_imagehash_hex,
    hamming,
    md5,
    md5_batch,
    phash,
    phash_batch,
    phash_from_thumbnails,
    phash_thumbnail,
    to_imagehash_hex,
    unpack_bits,
)
from k2_data.hashing._bits import _hamming_table, _hamming_ufunc
from k2_data.hashing._colorhash_lut import lut_codes, pillow_codes


def _images(seed: int, count: int) -> list[Image.Image]:
    """Random and structured images: noise, flat, gradients, checkers, mirror symmetry, modes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        kind = i % 9
        if kind == 0:
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            a = np.full((h, w, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        elif kind == 2:
            a = np.tile(
                (np.arange(w) * 255 // max(w - 1, 1)).astype(np.uint8)[None, :, None], (h, 1, 3)
            )
        elif kind == 3:
            a = np.repeat(((np.indices((h, w)).sum(0) % 2) * 255).astype(np.uint8)[..., None], 3, 2)
        elif kind == 4:
            half = rng.integers(0, 256, (h, (w + 1) // 2, 3), dtype=np.uint8)
            a = np.concatenate([half, half[:, ::-1]], axis=1)
        elif kind == 5:
            small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            a = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
        else:
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) // 64 * 64
        img = Image.fromarray(np.ascontiguousarray(a))
        out.append(
            {6: img.convert("L"), 7: img.convert("RGBA"), 8: img.convert("P")}.get(kind, img)
        )
    return out


IMAGES = _images(0, 54)


def _rectangles(seed: int, count: int, side: int) -> list[Image.Image]:
    """Flat rectangles on black at the thumbnail size: many DCT coefficients tie exactly."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        s = side * (1 + k % 2)
        a = np.zeros((s, s), np.uint8)
        (x0, x1), (y0, y1) = np.sort(rng.integers(0, s, 2)), np.sort(rng.integers(0, s, 2))
        a[y0 : y1 + 1, x0 : x1 + 1] = rng.integers(1, 256)
        out.append(Image.fromarray(a))
    return out


def _hsv_image(h, s, v) -> Image.Image:
    return Image.merge("HSV", [Image.fromarray(np.asarray(c, dtype=np.uint8)) for c in (h, s, v)])


def test_md5_rfc1321_vectors_and_batch():
    assert md5(b"").tobytes().hex() == "d41d8cd98f00b204e9800998ecf8427e"
    assert md5(b"abc").tobytes().hex() == "900150983cd24fb0d6963f7d28e17f72"
    datas = [b"", b"abc", bytes(range(256)) * 10]
    batch = md5_batch(datas)
    assert batch.shape == (3, 16) and batch.dtype == np.uint8
    for row, data in zip(batch, datas, strict=True):
        assert row.tobytes() == hashlib.md5(data).digest()
    with pytest.raises(TypeError):
        md5("not bytes")


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 12, 31, 32, 33, 48, 64, 97])
def test_dct2_scipy_is_bit_identical_to_scipy(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(4, n, 5)) * rng.choice([1.0, 255.0, 1e6])
    for axis in (0, 1, 2):
        if x.shape[axis] == n:
            assert np.array_equal(dct2_scipy(x, axis=axis), scipy.fftpack.dct(x, axis=axis))


@pytest.mark.parametrize("hash_size", [8, 12, 5])
def test_phash_compatible_mode_is_bit_exact_with_imagehash(hash_size):
    images = IMAGES + _rectangles(hash_size, 60, 4 * hash_size)
    ours = phash_batch(images, hash_size=hash_size, imagehash_compatible=True)
    for img, code in zip(images, ours, strict=True):
        ref = imagehash.phash(img, hash_size=hash_size)
        assert np.array_equal(unpack_bits(code, hash_size**2), ref.hash.flatten())
        assert to_imagehash_hex(code, nbits=hash_size**2) == str(ref)
    single = phash(IMAGES[4], hash_size=hash_size, imagehash_compatible=True)
    assert np.array_equal(single, ours[4])


def test_phash_ties_are_decided_by_scipys_rounding_noise():
    # Why the compatible mode repeats pocketfft: on exactly tied coefficients imagehash's bits
    # come from FFT rounding noise, which k2's snapped matrix DCT does not reproduce.
    images = _rectangles(12, 60, 48)
    k2 = phash_batch(images)
    compat = phash_batch(images, imagehash_compatible=True)
    assert (hamming(k2, compat) > 0).sum() >= 3


def test_phash_highfreq_factor_matches_imagehash():
    for img in IMAGES[:12]:
        ref = imagehash.phash(img, hash_size=6, highfreq_factor=3).hash.flatten()
        ours = phash(img, hash_size=6, highfreq_factor=3, imagehash_compatible=True)
        assert np.array_equal(unpack_bits(ours, 36), ref)


def _phash_reference(img: Image.Image, hash_size: int) -> np.ndarray:
    """float64 transcription: C[u,v] = sum_xy 4 cos(pi u (2x+1)/2N) cos(pi v (2y+1)/2N) P[x,y]."""
    side = hash_size * 4
    p = np.asarray(img.convert("L").resize((side, side), Image.Resampling.LANCZOS), np.float64)
    c = np.array(
        [
            [math.cos(math.pi * u * (2 * x + 1) / (2 * side)) for x in range(side)]
            for u in range(hash_size)
        ]
    )
    coef = 4.0 * np.einsum("ux,vy,xy->uv", c, c, p)
    flat = sorted(coef.ravel().tolist())
    mid = len(flat) // 2
    median = flat[mid] if len(flat) % 2 else (flat[mid - 1] + flat[mid]) / 2
    return coef.ravel() > median


@pytest.mark.parametrize("hash_size", [8, 12])
def test_phash_k2_mode_matches_float64_reference_and_imagehash_on_untied_images(hash_size):
    noisy = [img for i, img in enumerate(IMAGES) if i % 9 in (0, 5) and min(img.size) > 8]
    ours = phash_batch(noisy, hash_size=hash_size)
    compat = phash_batch(noisy, hash_size=hash_size, imagehash_compatible=True)
    for img, code in zip(noisy, ours, strict=True):
        assert np.array_equal(unpack_bits(code, hash_size**2), _phash_reference(img, hash_size))
    assert np.array_equal(ours, compat)  # no exact ties: the two modes agree


def test_phash_k2_mode_ties_exactly_on_flat_and_mirror_symmetric_thumbnails():
    rng = np.random.default_rng(1)
    flat = np.full((1, 48, 48), 77, np.uint8)
    bits = unpack_bits(phash_from_thumbnails(flat)[0], 144)
    assert bits[0] and not bits[1:].any()  # only DC is above the (zero) median
    half = rng.integers(0, 256, (20, 48, 24), dtype=np.uint8)
    mirrored = np.concatenate([half, half[:, :, ::-1]], axis=2)  # odd horizontal freqs are 0
    for code in phash_from_thumbnails(mirrored):
        block = unpack_bits(code, 144).reshape(12, 12)
        assert len(np.unique(block[:, 1::2])) == 1  # equal coefficients, equal bits


def test_phash_inputs_arrays_batches_and_errors():
    arr = np.asarray(IMAGES[5].convert("RGB"))
    assert np.array_equal(phash(arr), phash(Image.fromarray(arr)))
    stacked = np.stack([arr, arr[::-1]])
    assert np.array_equal(phash_batch(stacked), phash_batch(list(stacked)))
    assert phash_batch([]).shape == (0, 18)
    assert phash(arr).shape == (18,) and phash(arr, hash_size=8).shape == (8,)
    with pytest.raises(ValueError, match="hash_size"):
        phash(arr, hash_size=1)
    with pytest.raises(ValueError, match="reducing_gap"):
        phash(arr, imagehash_compatible=True, reducing_gap=2.0)
    with pytest.raises(TypeError, match="uint8"):
        phash(arr.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        phash(arr[..., :2])


def test_phash_reducing_gap_is_pillows_two_step_thumbnail():
    big = [img.convert("RGB").resize((400, 300)) for img in IMAGES[:9]]
    thumbs = np.stack(
        [
            np.asarray(im.convert("L").resize((48, 48), Image.Resampling.LANCZOS, reducing_gap=2.0))
            for im in big
        ]
    )
    assert np.array_equal(phash_batch(big, reducing_gap=2.0), phash_from_thumbnails(thumbs))
    with pytest.raises(ValueError, match="reducing_gap"):
        phash(big[0], reducing_gap=0.5)


def _colorhash_values_reference(img: Image.Image, binbits: int) -> list[int]:
    """Per-pixel transcription of imagehash's colorhash fractions (research/data.md 6.2)."""
    lum = np.asarray(img.convert("L")).ravel().tolist()
    hsv = np.asarray(img.convert("HSV")).reshape(-1, 3).tolist()
    counts = {"black": 0, "grey": 0, "coloured": 0}
    hues = [[0] * 6, [0] * 6]
    for y, (h, s, _) in zip(lum, hsv, strict=True):
        if y < 32:
            counts["black"] += 1
        elif s < 85:
            counts["grey"] += 1
        else:
            counts["coloured"] += 1
            band = 0 if s < 170 else 1 if s > 170 else None
            if band is not None:
                hues[band][min(int(h / (255 / 6)), 5)] += 1
    top, scale = 2**binbits - 1, 2**binbits
    c = max(1, counts["coloured"])
    vals = [
        min(top, int(counts["black"] / len(lum) * scale)),
        min(top, int(counts["grey"] / len(lum) * scale)),
    ]
    return vals + [min(top, int(k * scale / c)) for k in hues[0] + hues[1]]


def test_colorhash_values_match_per_pixel_reference():
    rng = np.random.default_rng(2)
    grid = np.arange(256, dtype=np.uint8)
    edges = [
        _hsv_image(np.tile(grid, (9, 1)), np.full((9, 256), s), np.full((9, 256), 200))
        for s in (84, 85, 169, 170, 171, 255)
    ]
    dark = _hsv_image(np.full((4, 4), 30), np.full((4, 4), 200), np.full((4, 4), 20))
    cases = [*edges, dark, *[img for img in IMAGES if img.size[0] * img.size[1] < 6000][:20]]
    cases.append(Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    for img in cases:
        for binbits in (1, 3, 4):
            ours = colorhash_values(img, binbits=binbits).tolist()
            assert ours == _colorhash_values_reference(img, binbits)


def _colour_categories_reference(img: Image.Image) -> np.ndarray:
    """Per-pixel category, transcribed from imagehash's colorhash masks and np.histogram bins.

    0 black, 1 grey, 2 + hue bin faint, 8 + hue bin bright, 14 coloured with S == 170.
    """
    luma = np.asarray(img.convert("L"))
    h, s, _ = (np.asarray(c) for c in img.convert("HSV").split())
    edges = np.linspace(0, 255, 6 + 1)
    hue_bin = np.array([np.histogram([v], bins=edges)[0].argmax() for v in range(256)], np.uint8)
    black = luma < 256 // 8
    grey = ~black & (s < 256 // 3)
    coloured = ~black & ~grey
    faint = coloured & (s < 256 * 2 // 3)
    bright = coloured & (s > 256 * 2 // 3)
    out = np.full(luma.shape, 14, np.uint8)
    out[black], out[grey] = 0, 1
    out[faint] = 2 + hue_bin[h[faint]]
    out[bright] = 8 + hue_bin[h[bright]]
    return out


def test_colorhash_lut_matches_pillow_rules_on_every_24_bit_colour():
    # All 2^24 colours, in a scrambled order (x -> odd * x + c is a bijection mod 2^24), in
    # 16 images of 1024 x 1024: the LUT indexed by (r << 16) | (g << 8) | b, the per-image
    # LUT path and the Pillow path must each give the independently transcribed category.
    lut = colorhash_lut()
    assert lut.shape == (1 << 24,) and lut.dtype == np.uint8 and not lut.flags.writeable
    seen = np.zeros(15, bool)
    for chunk in range(16):
        x = np.arange(chunk << 20, (chunk + 1) << 20, dtype=np.uint32)
        colour = (x * np.uint32(2654435761) + np.uint32(12345)) & np.uint32(0xFFFFFF)
        rgb = np.stack([colour >> 16, (colour >> 8) & 255, colour & 255], -1).astype(np.uint8)
        img = Image.fromarray(rgb.reshape(1024, 1024, 3), "RGB")
        expected = _colour_categories_reference(img).ravel()
        assert np.array_equal(lut[colour], expected)
        assert np.array_equal(lut_codes(img), expected)
        assert np.array_equal(pillow_codes(img).ravel(), expected)
        seen[expected] = True
    assert seen.all()  # every category, S == 170 included, occurs


@pytest.mark.parametrize("binbits", range(1, 9))
def test_colorhash_lut_values_equal_pillow_values_for_every_binbits(binbits):
    rng = np.random.default_rng(binbits)
    rgb = [img.convert("RGB") for img in IMAGES[:27]]
    rgb.append(Image.fromarray(rng.integers(0, 256, (1000, 1000, 3), dtype=np.uint8)))
    grid = np.arange(256, dtype=np.uint8)
    for s in (84, 85, 169, 170, 171):  # saturation band edges, through RGB
        hsv = _hsv_image(np.tile(grid, (4, 1)), np.full((4, 256), s), np.full((4, 256), 200))
        rgb.append(hsv.convert("RGB"))
    for img in rgb:
        lut = colorhash_values(img, binbits=binbits, method="lut")
        assert np.array_equal(lut, colorhash_values(img, binbits=binbits, method="pillow"))
        assert lut.dtype == np.int64 and lut.min() >= 0 and lut.max() <= 2**binbits - 1
    small = [img for img in rgb if img.size[0] * img.size[1] < 3000][:6]
    for img in small:
        ours = colorhash_values(np.asarray(img), binbits=binbits).tolist()  # array input
        assert ours == _colorhash_values_reference(img, binbits)


def test_colorhash_lut_method_other_modes_and_errors():
    for img in IMAGES[6:18]:  # L, RGBA, P (Pillow path under "lut") and RGB
        assert np.array_equal(
            colorhash_values(img, method="lut"), colorhash_values(img, method="pillow")
        )
    # ValueError from the function; the jaxtyping/beartype test hook rejects the Literal first.
    with pytest.raises((TypeError, ValueError), match="method"):
        colorhash_values(IMAGES[0], method="fast")
    with pytest.raises(ValueError, match="RGB"):
        lut_codes(IMAGES[7])  # RGBA
    assert colorhash_lut() is colorhash_lut()  # built once


@pytest.mark.parametrize("binbits", [3, 1, 2, 4])
def test_colorhash_compatible_mode_is_bit_exact_with_imagehash(binbits):
    grid = np.arange(256, dtype=np.uint8)
    sweep = _hsv_image(
        np.tile(grid, (256, 1)), np.tile(grid[:, None], (1, 256)), np.full((256, 256), 99)
    )
    images = [*IMAGES, sweep]
    ours = colorhash_batch(images, binbits=binbits, imagehash_compatible=True)
    assert ours.shape == (len(images), -(-14 * binbits // 8))
    for img, code in zip(images, ours, strict=True):
        ref = imagehash.colorhash(img, binbits=binbits)
        assert np.array_equal(unpack_bits(code, 14 * binbits), ref.hash.flatten())
        assert to_imagehash_hex(code, nbits=14 * binbits) == str(ref)
        assert np.array_equal(from_imagehash_hex(str(ref), nbits=14 * binbits), code)


def test_colorhash_k2_code_is_a_thermometer_of_the_same_values():
    values = np.stack([colorhash_values(img) for img in IMAGES])
    codes = colorhash_batch(IMAGES)
    assert codes.shape == (len(IMAGES), 13) and colorhash_nbits() == 98
    fields = unpack_bits(codes, 98).reshape(len(IMAGES), 14, 7)
    assert np.array_equal(fields.sum(-1), values)  # ones count the value ...
    assert np.array_equal(fields, np.sort(fields, axis=-1)[..., ::-1])  # ... and come first
    assert np.array_equal(colorhash(IMAGES[3]), codes[3])


@pytest.mark.parametrize("binbits", [1, 2, 3, 4])
def test_colorhash_k2_code_is_injective_with_l1_distance(binbits):
    rng = np.random.default_rng(binbits)
    top = 2**binbits - 1
    u = rng.integers(0, top + 1, (500, 14))
    v = np.where(rng.random((500, 14)) < 0.3, rng.integers(0, top + 1, (500, 14)), u)
    pu, pv = (np.packbits(encode_colorhash(x, binbits=binbits), axis=-1) for x in (u, v))
    assert np.array_equal(hamming(pu, pv), np.abs(u - v).sum(-1))  # 0 only when u == v
    every = np.zeros((top + 1, 14), np.int64) + np.arange(top + 1)[:, None]
    codes = {np.packbits(b).tobytes() for b in encode_colorhash(every, binbits=binbits)}
    assert len(codes) == top + 1


def test_colorhash_imagehash_code_is_lossy_as_documented():
    bits = encode_colorhash(
        np.arange(8)[:, None] * np.ones(14, np.int64), imagehash_compatible=True
    )
    assert np.array_equal(bits[4], bits[6]) and np.array_equal(bits[5], bits[7])
    assert not np.array_equal(bits[3], bits[4])


def test_colorhash_errors():
    with pytest.raises(ValueError, match="binbits"):
        colorhash(IMAGES[0], binbits=0)
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        encode_colorhash(np.full((1, 14), 8, np.int64))
    with pytest.raises(ValueError, match="nbits=8"):
        from_imagehash_hex("1ff", nbits=8)


@pytest.mark.parametrize("nbytes", [1, 6, 8, 13, 18])
def test_hamming_matches_python_popcount(nbytes):
    rng = np.random.default_rng(nbytes)
    a = rng.integers(0, 256, (7, 1, nbytes), dtype=np.uint8)
    b = rng.integers(0, 256, (1, 9, nbytes), dtype=np.uint8)
    d = hamming(a, b)
    assert d.shape == (7, 9) and d.dtype == np.int64
    for i in range(7):
        for j in range(9):
            x = int.from_bytes(a[i, 0].tobytes(), "big") ^ int.from_bytes(b[0, j].tobytes(), "big")
            assert d[i, j] == bin(x).count("1")
    assert np.array_equal(_hamming_table(a, b), d)
    if hasattr(np, "bitwise_count"):
        assert np.array_equal(_hamming_ufunc(a, b), d)


def test_hamming_of_two_single_hashes_is_a_zero_dim_int64_array():
    a = np.array([0b1011_0000, 0xFF], np.uint8)
    b = np.array([0b0001_0000, 0x0F], np.uint8)
    d = hamming(a, b)  # checked against its `Int64[np.ndarray, "..."]` annotation in tests
    assert isinstance(d, np.ndarray) and d.shape == () and d.dtype == np.int64
    assert int(d) == 2 + 4


def test_hamming_rejects_mismatched_hashes():
    with pytest.raises((TypeError, ValueError)):
        hamming(np.zeros(18, np.uint8), np.zeros(13, np.uint8))
    with pytest.raises(TypeError):
        hamming(np.zeros(4, np.uint16), np.zeros(4, np.uint16))


@pytest.mark.parametrize("gap", [None, 2.0])
def test_phash_thumbnail_then_dct_is_phash_batch_and_takes_grey_or_rgb(gap):
    images = _images(5, 4)
    for image in images:
        want = phash_batch([image], reducing_gap=gap)
        for given in (image, image.convert("L")):  # the stage passes its grey image
            thumb = phash_thumbnail(given, reducing_gap=gap)
            assert thumb.shape == (48, 48) and thumb.dtype == np.uint8
            np.testing.assert_array_equal(phash_from_thumbnails(thumb[None]), want)
    with pytest.raises(ValueError, match="reducing_gap"):
        phash_thumbnail(images[0], reducing_gap=0.5)
