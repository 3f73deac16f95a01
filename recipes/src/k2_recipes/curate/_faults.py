"""The faults `k2 curate` injects into its shards, and the layout that places them.

Every fault is made from the world's own renders or from plain bytes, so what the curation
must catch is known exactly: `plan_layout` decides, from one seed, which slot of the shards
holds a clean scene and which holds a fault (and of which clean sample a near-duplicate is a
copy); `make_fault` builds the bytes. The ground truth never enters the shards: it goes to
`injected.parquet`, which only the accounting reads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # k2_recipes.presets imports torch; shard workers never need it
    from k2_recipes.presets import FaultCounts

FAULT_KINDS = ("near_duplicate", "flat_border", "noise", "corrupt")
FAULT_VARIANTS: dict[str, tuple[str, ...]] = {
    "near_duplicate": ("exact", "reencode", "resize", "crop", "jitter"),
    "flat_border": ("corner_thumbnail",),
    "noise": ("uniform", "gaussian"),
    "corrupt": ("truncated", "zero_byte", "not_an_image"),
}
"""Variants of each kind, cycled in order so every variant is injected about equally often."""

EXPECTED_REASONS: dict[str, tuple[str, ...]] = {
    "near_duplicate": ("duplicate_of:", "md5_duplicate_of:"),
    "flat_border": ("border_fraction>",),
    "noise": ("laplacian_var>", "complexity>"),
    "corrupt": ("broken_file:",),
}
"""Reason prefixes that count as catching a fault of each kind for the right reason."""

EXPECTED_VARIANT_REASONS: dict[str, tuple[str, ...]] = {
    "truncated": ("broken_file: truncated",),
    "zero_byte": ("broken_file: empty",),
    "not_an_image": ("broken_file: not_an_image",),
}
"""Narrower expectations where the variant fixes the exact reason. (An exact copy is not
among them: when its source is itself a near-duplicate of an earlier clean scene, the group
keeps that scene and the copy's reason is ``duplicate_of:<that scene>``.)"""

REENCODE_QUALITY_DROP = 30
"""Re-uploads are recompressed at `jpeg_quality - 30` (at least 20) with the usual 4:2:0 chroma
subsampling: a smaller file of the same size, so the dedup keeper rule (most pixels, then
largest file) keeps the original."""
_HTML = (
    b"<!doctype html>\n<html><head><title>404 Not Found</title></head>"
    b"<body><h1>Not Found</h1><p>The requested image was not found on this server.</p>"
    b"</body></html>\n"
)


@dataclass(frozen=True)
class Slot:
    """What one sample slot of the shards holds.

    Attributes:
        kind: "clean" or one of `FAULT_KINDS`.
        variant: the fault variant ("" for clean samples).
        scene: index (split "train") of the scene whose render and sidecar the slot uses:
            clean slots 0..n-1 in order, near-duplicates their source's scene, other faults
            scenes n, n+1, ... (never trained on unless a fault slips through).
        source: slot index of a near-duplicate's source (always an earlier, clean slot), -1
            otherwise.
        seed: seed of the fault's own random parameters.
    """

    kind: str
    variant: str
    scene: int
    source: int
    seed: int


def plan_layout(n_clean: int, faults: FaultCounts, *, seed: int) -> tuple[Slot, ...]:
    """Place `n_clean` clean scenes and the faults at random slots, deterministically.

    Slot 0 is always clean and a near-duplicate copies a clean slot that comes before it, so
    on a tie of the dedup keeper rule (same pixels and file size: an exact copy) the smaller
    key, the original, is kept.

    Args:
        n_clean: clean scenes (indices 0..n_clean-1 of split "train").
        faults: how many of each kind.
        seed: layout seed.

    Returns:
        One `Slot` per sample, in key order.
    """
    if n_clean < 1:
        raise ValueError(f"need at least one clean scene, got n_clean={n_clean}")
    rng = np.random.default_rng([seed, 0xC0])
    kinds = [k for k in FAULT_KINDS for _ in range(getattr(faults, k))]
    total = n_clean + len(kinds)
    fault_slots = np.sort(rng.choice(np.arange(1, total), size=len(kinds), replace=False))
    order = rng.permutation(len(kinds))
    kind_at = {int(s): kinds[i] for s, i in zip(fault_slots, order, strict=True)}
    seeds = rng.integers(0, 2**31 - 1, size=total)
    slots: list[Slot] = []
    clean_slots: list[int] = []
    counters = dict.fromkeys(FAULT_KINDS, 0)
    extra = n_clean
    for s in range(total):
        kind = kind_at.get(s)
        if kind is None:
            slots.append(Slot("clean", "", len(clean_slots), -1, int(seeds[s])))
            clean_slots.append(s)
            continue
        variants = FAULT_VARIANTS[kind]
        variant = variants[counters[kind] % len(variants)]
        counters[kind] += 1
        if kind == "near_duplicate":
            source = clean_slots[int(rng.integers(len(clean_slots)))]
            slots.append(Slot(kind, variant, slots[source].scene, source, int(seeds[s])))
        else:
            slots.append(Slot(kind, variant, extra, -1, int(seeds[s])))
            extra += 1
    return tuple(slots)


def encode_jpeg(pixels: np.ndarray, quality: int, *, chroma_subsampling: bool = False) -> bytes:
    """Baseline JPEG bytes of RGB uint8 pixels (deterministic for given pixels and settings).

    The world's samples are 4:4:4 (no chroma subsampling): at 64 px, 4:2:0 smears colour
    over 16 px blocks, a quarter of the side, around every shape.
    """
    buf = io.BytesIO()
    subsampling = 2 if chroma_subsampling else 0  # Pillow: 0 = 4:4:4, 2 = 4:2:0
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def near_duplicate(source: bytes, variant: str, rng: np.random.Generator, *, quality: int) -> bytes:
    """A near-copy of an encoded clean sample, as the web makes them.

    exact: the same bytes; reencode: recompressed at a lower quality; resize: downscaled to
    75-90% of the side; crop: 1-3% of the side cut from one to four edges; jitter: a colour
    cast (per-channel gains within 3% of each other, averaging 1, so a grey background stays
    grey and under the white level) and recompressed. Every variant has no more pixels and (but
    for exact) a lower quality or fewer pixels than its source, so the keeper rule keeps the
    original.
    """
    if variant == "exact":
        return source
    pixels = _decoded(source)
    h, w = pixels.shape[:2]
    low = max(20, quality - REENCODE_QUALITY_DROP)
    if variant == "reencode":
        return encode_jpeg(pixels, low, chroma_subsampling=True)
    if variant == "resize":
        side = round(w * rng.uniform(0.75, 0.9))
        image = Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)
        return encode_jpeg(np.asarray(image), quality)
    if variant == "crop":
        most = max(1, round(0.03 * w))
        cuts = rng.integers(0, most + 1, size=4)
        if not cuts.any():
            cuts[rng.integers(4)] = most
        top, bottom, left, right = (int(c) for c in cuts)
        return encode_jpeg(
            np.ascontiguousarray(pixels[top : h - bottom, left : w - right]), quality
        )
    if variant == "jitter":
        gain = rng.uniform(-0.03, 0.03, size=3)
        gain = 1.0 + gain - gain.mean()
        jittered = np.clip(pixels.astype(np.float32) * gain, 0, 255).round()
        return encode_jpeg(jittered.astype(np.uint8), low, chroma_subsampling=True)
    raise ValueError(f"unknown near-duplicate variant {variant!r}")


def flat_border(scene_pixels: np.ndarray, rng: np.random.Generator, *, quality: int) -> bytes:
    """A scene shrunk to 8-12.5% of the side in one corner of a flat-colour canvas.

    The thumbnail stays inside the corner's 8x8 JPEG block at 64 px, so the compression noise
    around it does too and the flat run covers over 85% of two sides: wider than any clean
    scene's background run (`k2_recipes.presets.WORLD_THRESHOLDS`). The canvas colour keeps
    one channel in 20..235, so the white/black-ratio rules (checked before the border rule)
    do not take it first.
    """
    res = scene_pixels.shape[0]
    side = max(2, min(round(res * rng.uniform(0.08, 0.125)), res // 8))
    thumb = np.asarray(Image.fromarray(scene_pixels).resize((side, side), Image.Resampling.BOX))
    colour = rng.integers(0, 256, size=3)
    colour[rng.integers(3)] = rng.integers(20, 236)
    canvas = np.empty((res, res, 3), np.uint8)
    canvas[:] = colour.astype(np.uint8)
    top = 0 if rng.random() < 0.5 else res - side
    left = 0 if rng.random() < 0.5 else res - side
    canvas[top : top + side, left : left + side] = thumb
    return encode_jpeg(canvas, quality)


def noise_image(variant: str, res: int, rng: np.random.Generator, *, quality: int) -> bytes:
    """Pure noise: uniform RGB, or Gaussian RGB around mid-grey (sigma 64)."""
    if variant == "uniform":
        pixels = rng.integers(0, 256, size=(res, res, 3), dtype=np.uint8)
    elif variant == "gaussian":
        pixels = np.clip(rng.normal(128, 64, size=(res, res, 3)), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown noise variant {variant!r}")
    return encode_jpeg(pixels, quality)


def corrupt_file(variant: str, scene_jpeg: bytes, rng: np.random.Generator) -> bytes:
    """A broken image file: a JPEG cut at 30-80% of its length, zero bytes, or an HTML page."""
    if variant == "truncated":
        return scene_jpeg[: round(len(scene_jpeg) * rng.uniform(0.3, 0.8))]
    if variant == "zero_byte":
        return b""
    if variant == "not_an_image":
        return _HTML
    raise ValueError(f"unknown corrupt variant {variant!r}")


def make_fault(
    slot: Slot,
    *,
    scene_pixels: np.ndarray,
    scene_jpeg: bytes,
    source_jpeg: bytes | None,
    quality: int,
) -> bytes:
    """The encoded image of a fault slot.

    Args:
        slot: the slot (its kind, variant and seed).
        scene_pixels: render of the slot's scene.
        scene_jpeg: that render encoded like a clean sample.
        source_jpeg: the source sample's bytes (near-duplicates only).
        quality: JPEG quality of clean samples.

    Returns:
        The bytes stored as the slot's ``.jpg`` member.
    """
    rng = np.random.default_rng(slot.seed)
    if slot.kind == "near_duplicate":
        if source_jpeg is None:
            raise ValueError("a near-duplicate needs its source's bytes")
        return near_duplicate(source_jpeg, slot.variant, rng, quality=quality)
    if slot.kind == "flat_border":
        return flat_border(scene_pixels, rng, quality=quality)
    if slot.kind == "noise":
        return noise_image(slot.variant, scene_pixels.shape[0], rng, quality=quality)
    if slot.kind == "corrupt":
        return corrupt_file(slot.variant, scene_jpeg, rng)
    raise ValueError(f"slot kind {slot.kind!r} is not a fault")
