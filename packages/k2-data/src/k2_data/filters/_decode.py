"""Decode an encoded image once, as cheaply as the statistics allow, and say why when it fails."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from jaxtyping import UInt8
from PIL import Image, ImageFile

JPEG_FORMATS = ("JPEG", "MPO")
"""Pillow formats decoded by libjpeg (MPO is a camera JPEG with extra frames); draft applies."""

_WHITE = (255, 255, 255)


@dataclass(frozen=True, kw_only=True)
class Decoded:
    """One decoded image, or the reason it could not be decoded.

    Args:
        ok: True when `pixels` holds the whole image.
        reason: empty when ok, else ``"<kind>: <detail>"`` with kind one of ``empty``,
            ``not_an_image``, ``too_large``, ``truncated``, ``corrupt``, ``unsupported_mode``.
        pixels: RGB uint8 (H, W, 3) array (None when not ok). Alpha is composited on white.
        width: original width from the file header, before any draft or resize (0 if unknown).
        height: original height from the file header (0 if unknown).
        format: Pillow format name ("JPEG", "PNG", "WEBP", ...); empty if unknown.
        mode: Pillow mode of the file ("RGB", "L", "P", "RGBA", "CMYK", ...); empty if unknown.
        decode_path: ``"full"`` or ``"jpeg_draft_1/2"``, ``"jpeg_draft_1/4"``, ``"jpeg_draft_1/8"``
            (libjpeg DCT scaling); empty when not ok.
        image: the same pixels as a Pillow RGB image (what `decode` built them from), so
            Pillow-side statistics need no array-to-image copy; None when not ok.
    """

    ok: bool
    reason: str = ""
    pixels: UInt8[np.ndarray, "h w 3"] | None = None
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    decode_path: str = ""
    image: Image.Image | None = field(default=None, repr=False, compare=False)


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size that fits (width, height) into a max_side square, keeping the aspect ratio.

    Args:
        width: source width (>= 1).
        height: source height (>= 1).
        max_side: bound on the longer side (>= 1).

    Returns:
        (w, h): unchanged when the image already fits; else the longer side equals max_side
        and the shorter is rounded, at least 1.
    """
    long = max(width, height)
    if long <= max_side:
        return width, height
    return max(1, round(width * max_side / long)), max(1, round(height * max_side / long))


def _jpeg_truncation(data: bytes) -> str | None:
    """Why a JPEG byte string is incomplete, or None; walks marker segments to the first scan."""
    pos, n = 2, len(data)  # after SOI
    while True:
        while pos < n and data[pos] != 0xFF:
            pos += 1  # tolerate junk between segments, as libjpeg does
        while pos < n and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos + 2 >= n:
            return "headers end before the first scan"
        marker = data[pos]
        pos += 1
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            continue  # markers without a length field
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > n:
            return f"segment 0xFF{marker:02X} runs past the end of the file"
        pos += length
        if marker == 0xDA:  # start of scan
            break
    # In entropy-coded data 0xFF is always stuffed (FF00) or a restart marker, so FFD9 after the
    # first scan can only be the end-of-image marker; an EXIF thumbnail's FFD9 sits before it.
    # Searching from the end finds the real EOI at once instead of scanning the whole file.
    if data.rfind(b"\xff\xd9") < pos:
        return "no end-of-image marker after the scan data"
    return None


def _png_truncation(data: bytes) -> str | None:
    """Why a PNG byte string is incomplete, or None; walks chunk lengths up to IEND."""
    pos, n = 8, len(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length  # length, type, data, CRC
        if end > n:
            return f"chunk {kind!r} runs past the end of the file"
        if kind == b"IEND":
            return None
        pos = end
    return "no IEND chunk"


def _webp_truncation(data: bytes) -> str | None:
    """Why a WebP (RIFF) byte string is incomplete, or None."""
    declared = int.from_bytes(data[4:8], "little") + 8
    if declared > len(data):
        return f"RIFF header declares {declared} bytes, file has {len(data)}"
    return None


_STRUCTURE_CHECKS = {
    "JPEG": _jpeg_truncation,
    "MPO": _jpeg_truncation,
    "PNG": _png_truncation,
    "WEBP": _webp_truncation,
}


_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF"}


def _signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES.items() if data.startswith(magic)), None)


def _unopenable(data: bytes, error: Exception) -> Decoded:
    """Reason for bytes Pillow cannot open: a known signature means a damaged image file."""
    fmt = _signature(data)
    if fmt is None:
        if isinstance(error, Image.UnidentifiedImageError):
            return _failure(f"not_an_image: Pillow cannot identify {len(data)} bytes")
        return _failure(f"corrupt: {_describe(error)}")
    check = _STRUCTURE_CHECKS.get(fmt)
    missing = check(data) if check is not None else None
    if missing is not None:
        return _failure(f"truncated: {fmt} {missing}")
    return _failure(f"corrupt: {fmt} signature but unreadable headers: {_describe(error)}")


def _failure(reason: str, image: Image.Image | None = None) -> Decoded:
    if image is None:
        return Decoded(ok=False, reason=reason)
    return _header_failure(reason, image.size, image.format or "", image.mode)


def _header_failure(reason: str, size: tuple[int, int], fmt: str, mode: str) -> Decoded:
    return Decoded(ok=False, reason=reason, width=size[0], height=size[1], format=fmt, mode=mode)


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any mode; transparent pixels are shown on white, as a viewer would."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (and 32-bit integer) grey: Pillow's convert("RGB") clips at 255, which turns
        # a 16-bit PNG almost white; scale the 0..65535 range to 0..255 instead.
        wide = np.asarray(image, dtype=np.int64)
        grey = np.clip((wide + 128) // 257, 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, _WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _box_resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Box-filter an image down to `size`; whole-number factors use the ~4x faster reduce()."""
    (w, h), (tw, th) = image.size, size
    if w % tw == 0 and h % th == 0:
        return image.reduce((w // tw, h // th))
    return image.resize(size, Image.Resampling.BOX)


def decode(
    data: bytes,
    *,
    max_side: int | None = None,
    allow_draft: bool = True,
    max_pixels: int | None = None,
) -> Decoded:
    """Decode encoded image bytes once into RGB uint8, using JPEG draft mode when it is enough.

    Broken input never raises: it returns ``Decoded(ok=False, reason=...)``. Truncation is
    detected from the file structure (JPEG end-of-image marker after the scan, PNG IEND
    chunk, WebP RIFF size) before decoding, so it is caught even when some other code has
    set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True``; Pillow's own check (full load with
    that flag off) covers the other formats. Only the first frame of animations is read.
    The file is opened once: formats with an integrity check of their own (PNG chunk CRCs)
    are verified and reopened, JPEG (whose ``verify`` only closes the file) is not.

    Args:
        data: the encoded file (JPEG, PNG, WebP, GIF, ... anything Pillow opens).
        max_side: when set, the longer side of `pixels` is at most this. A JPEG is then
            decoded with libjpeg's DCT scaling (1/2, 1/4 or 1/8: the largest factor that keeps
            the longer side >= max_side) and box-filtered to size; other formats are decoded
            in full and box-filtered. Box matches DCT scaling closely, so a statistic differs
            little between the two paths. None: full resolution.
        allow_draft: False forces the full decode (then box filter) for JPEGs too, e.g. when
            a statistic must come from exactly the same pixels as an earlier full decode.
        max_pixels: when set, an image whose header declares more pixels is not decoded
            (``too_large: decompression_bomb: ...``), checked before any pixel is read.

    Returns:
        A Decoded with the pixels, original header size, format, file mode and decode path.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1 or None, got {max_side}; use None for full size")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels}")
    if not data:
        return _failure("empty: zero-byte input")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        return _failure(f"too_large: decompression_bomb: {error}")
    except Exception as error:  # web data breaks Pillow's parsers in every way; none may escape
        return _unopenable(data, error)
    # Header facts, taken before draft() rescales image.size.
    (width, height), fmt, mode = image.size, image.format or "", image.mode
    if max_pixels is not None and width * height > max_pixels:
        detail = f"{width}x{height} = {width * height} pixels > max_pixels={max_pixels}"
        return _header_failure(
            f"too_large: decompression_bomb: {detail}", (width, height), fmt, mode
        )
    check = _STRUCTURE_CHECKS.get(fmt)
    missing = check(data) if check is not None else None
    if missing is not None:
        return _header_failure(f"truncated: {missing}", (width, height), fmt, mode)
    if type(image).verify is not ImageFile.ImageFile.verify:
        try:
            image.verify()  # PNG chunk CRCs and the like; leaves the image unusable
            image = Image.open(io.BytesIO(data))
        except Exception as error:
            reason = f"corrupt: verify failed: {_describe(error)}"
            return _header_failure(reason, (width, height), fmt, mode)

    path = "full"
    target = fit_size(width, height, max_side) if max_side is not None else (width, height)
    if allow_draft and fmt in JPEG_FORMATS and target != (width, height):
        drafted = image.draft(None, target)
        if drafted is not None:
            scale = round(width / drafted[1][2])
            path = "full" if scale == 1 else f"jpeg_draft_1/{scale}"
    if fmt in JPEG_FORMATS:
        # Feed libjpeg the whole scan in one read (Pillow reads 64 KiB at a time), so files
        # over 64 KiB decode in one call instead of suspending and resuming mid-scan.
        image.decodermaxblock = max(len(data), image.decodermaxblock)
    try:
        image.load()
    except Exception as error:
        kind = "truncated" if "truncated" in str(error).lower() else "corrupt"
        return _header_failure(f"{kind}: {_describe(error)}", (width, height), fmt, mode)
    try:
        rgb = _to_rgb(image)
    except Exception as error:
        reason = f"unsupported_mode: {image.mode}: {_describe(error)}"
        return _header_failure(reason, (width, height), fmt, mode)
    if rgb.size != target:
        rgb = _box_resize(rgb, target)
    # The same read-only array np.asarray(rgb) gives, without numpy probing the Image for array
    # protocols (~1-3 us; of a 64 px draft decode, libjpeg is ~430 us, Pillow's Python ~40 us).
    pixels = np.frombuffer(rgb.tobytes(), dtype=np.uint8).reshape(rgb.height, rgb.width, 3)
    return Decoded(
        ok=True,
        pixels=pixels,
        width=width,
        height=height,
        format=fmt,
        mode=mode,
        decode_path=path,
        image=rgb,
    )
