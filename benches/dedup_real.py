"""Real near-duplicates: edited copies of bundled photographs, grouped by k2's dedup or not.

    uv run python benches/dedup_real.py    # skimage.data + sklearn photos (scikit-image is in
                                           # the root dev group; without it: 2 photos)

Sources: the photographs bundled with scikit-image (``skimage.data``, no download) and
scikit-learn (``load_sample_images``), de-duplicated by pixels (``cat`` is ``chelsea``).
Each source is stored as PNG; its variants are JPEG re-encodes at q 50/75/95, PNG resizes
to 0.5x and 0.75x, centre crops of 2% and 5% (1% and 2.5% off each edge), brightness x1.1, saturation
x1.2, and a horizontal flip (phash is not mirror-invariant: not expected to match). All
files are decoded as the pipeline does (``k2_data.filters.decode(max_side=256)``), hashed
(md5, 12x12 phash, k2 colorhash) and deduplicated with ``k2_data.dedup.deduplicate`` at
the given radii. A file is "grouped with its source" when its group's keeper is its
source's keeper (groups are transitive: a copy may join through another copy), "with
another photo" when its group holds files of a different source (must be 0), "alone" when
its group is itself; "within both radii" counts direct matches with the source.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from k2_data.dedup import deduplicate
from k2_data.filters import decode
from k2_data.hashing import colorhash_batch, hamming, md5_batch, phash_batch

SKIMAGE_PHOTOS = [
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "microaneurysms",
    "moon",
    "page",
    "rocket",
    "text",
    "stereo_motorcycle",
]


def photos() -> tuple[dict[str, np.ndarray], list[str]]:
    """Bundled photographs as RGB uint8, by name; and notes on what could not be loaded."""
    found, notes = {}, []
    try:
        import skimage.data
    except ImportError:
        notes.append("scikit-image not installed: skimage.data photos skipped")
    else:
        for name in SKIMAGE_PHOTOS:
            try:
                image = getattr(skimage.data, name)()
            except Exception as error:  # not bundled in this version (would download)
                notes.append(f"skimage.data.{name}: {type(error).__name__}")
                continue
            found[name] = image[0] if name == "stereo_motorcycle" else image  # left view
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        notes.append("scikit-learn not installed: its sample photos skipped")
    else:
        data = load_sample_images()
        for file, image in zip(data.filenames, data.images, strict=True):
            found[f"sklearn_{Path(file).stem}"] = image
    out, seen = {}, {}
    for name, image in found.items():
        rgb = np.asarray(Image.fromarray(np.asarray(image)).convert("RGB"))
        digest = hashlib.md5(rgb.tobytes()).hexdigest()
        if digest in seen:
            notes.append(f"{name} has the same pixels as {seen[digest]}: kept once")
            continue
        seen[digest] = name
        out[name] = rgb
    return out, notes


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def variants(rgb: np.ndarray) -> dict[str, bytes]:
    """The source (PNG) and its edited copies, as encoded files."""
    img = Image.fromarray(rgb)
    w, h = img.size
    dx, dy = round(0.025 * w), round(0.025 * h)
    ex, ey = round(0.01 * w), round(0.01 * h)
    return {
        "source": _encode(img, "PNG"),
        "jpeg q95": _encode(img, "JPEG", quality=95),
        "jpeg q75": _encode(img, "JPEG", quality=75),
        "jpeg q50": _encode(img, "JPEG", quality=50),
        "resize 0.75x": _encode(img.resize((round(0.75 * w), round(0.75 * h))), "PNG"),
        "resize 0.5x": _encode(img.resize((round(0.5 * w), round(0.5 * h))), "PNG"),
        "crop 2%": _encode(img.crop((ex, ey, w - ex, h - ey)), "PNG"),
        "crop 5%": _encode(img.crop((dx, dy, w - dx, h - dy)), "PNG"),
        "brightness x1.1": _encode(ImageEnhance.Brightness(img).enhance(1.1), "PNG"),
        "saturation x1.2": _encode(ImageEnhance.Color(img).enhance(1.2), "PNG"),
        "flip (not expected)": _encode(ImageOps.mirror(img), "PNG"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phash-radius", type=int, nargs="+", default=[12, 8])
    parser.add_argument("--colorhash-radius", type=int, default=4)
    parser.add_argument("--max-side", type=int, default=256, help="decode size (0: full)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    sources, notes = photos()
    names, kinds, blobs = [], [], []
    for name, rgb in sources.items():
        for kind, blob in variants(rgb).items():
            names.append(name)
            kinds.append(kind)
            blobs.append(blob)
    decoded = [decode(b, max_side=args.max_side or None) for b in blobs]
    assert all(d.ok for d in decoded)
    images = [d.pixels for d in decoded]
    keys = [f"{n}/{k}" for n, k in zip(names, kinds, strict=True)]
    md5, phash, colorhash = md5_batch(blobs), phash_batch(images), colorhash_batch(images)
    names_a, kinds_a = np.array(names), np.array(kinds)
    src_row = {n: i for i, (n, k) in enumerate(zip(names, kinds, strict=True)) if k == "source"}
    src = np.array([src_row[n] for n in names])
    dp = hamming(phash, phash[src])
    dc = hamming(colorhash, colorhash[src])

    print(f"{len(sources)} photos: {', '.join(sources)}")
    for note in notes:
        print(f"  note: {note}")
    firsts = np.array(list(src_row.values()))
    cross = hamming(phash[firsts][:, None], phash[firsts][None])
    cross_c = hamming(colorhash[firsts][:, None], colorhash[firsts][None])
    off = ~np.eye(len(cross), dtype=bool)
    i, j = np.unravel_index(np.where(off, cross, 999).argmin(), cross.shape)
    print(
        f"distinct photos: phash distance min {cross[off].min()} (mean {cross[off].mean():.0f})"
        f" of 144 bits, closest pair {list(sources)[i]} / {list(sources)[j]} with colorhash "
        f"distance {cross_c[i, j]}; decoded at max_side={args.max_side}\n"
    )
    result = {"photos": list(sources), "notes": notes, "radii": {}}
    kind_order = list(dict.fromkeys(kinds))
    for r1 in args.phash_radius:
        r2 = args.colorhash_radius
        table = deduplicate(
            keys,
            md5=md5,
            phash=phash,
            colorhash=colorhash,
            width=np.array([im.shape[1] for im in images]),
            height=np.array([im.shape[0] for im in images]),
            file_size=np.array([len(b) for b in blobs]),
            phash_radius=r1,
            colorhash_radius=r2,
        )
        keeper = np.array([keys.index(k) for k in table["keeper"].to_pylist()])
        grouped = keeper == keeper[src]
        other = np.array(  # the row's group also holds files of another photo
            [len(np.unique(names_a[keeper == keeper[i]])) > 1 for i in range(len(keys))]
        )
        alone = np.bincount(keeper, minlength=len(keys))[keeper] == 1
        direct = (dp <= r1) & (dc <= r2)
        mixed = len(np.unique(keeper[other]))
        print(f"phash <= {r1}, colorhash <= {r2}: groups joining two different photos: {mixed}")
        print(
            "| variant | grouped with its source | with another photo | alone "
            "| within both radii of source | phash distance median (max) "
            "| colorhash distance median (max) |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        rows = {}
        for kind in kind_order:
            sel = kinds_a == kind
            rows[kind] = {
                name: int(v[sel].sum())
                for name, v in (("grouped", grouped), ("other", other), ("alone", alone))
            }
            rows[kind].update(of=int(sel.sum()), direct=int(direct[sel].sum()))
            print(
                f"| {kind} | {grouped[sel].sum()}/{sel.sum()} | {other[sel].sum()} | "
                f"{alone[sel].sum()} | {direct[sel].sum()} | {np.median(dp[sel]):.0f} "
                f"({dp[sel].max()}) | {np.median(dc[sel]):.0f} ({dc[sel].max()}) |"
            )
        missed = [
            k for k, g, kd in zip(keys, grouped, kinds, strict=True) if not g and "flip" not in kd
        ]
        print(f"\nnot grouped (excluding flips): {', '.join(missed) or 'none'}\n")
        result["radii"][f"{r1},{r2}"] = {"mixed_groups": int(mixed), "rows": rows, "missed": missed}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
