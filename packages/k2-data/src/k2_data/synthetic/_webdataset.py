"""Export to WebDataset tar shards in the img2dataset layout."""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from k2_data.synthetic._dataset import Sample, make_sample
from k2_data.synthetic._scene import Scene

_PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


def _encode(sample: Sample, image_format: str, quality: int) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(sample.image)
    if image_format == "png":
        image.save(buf, format="PNG")
    else:
        image.save(buf, format=_PIL_FORMATS[image_format], quality=quality)
    return buf.getvalue()


def _write_shard(path: Path, samples: list[Sample], image_format: str, quality: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # Imported here: webdataset pulls in torch, which every worker process importing
    # k2_data.synthetic would otherwise pay for (about 3 s per process pool start).
    import webdataset as wds

    # mtime=0 makes the shard's bytes depend only on its samples.
    with wds.TarWriter(str(tmp), mtime=0.0) as sink:
        for s in samples:
            data = _encode(s, image_format, quality)
            meta = s.metadata() | {"sha256": hashlib.sha256(data).hexdigest()}
            sink.write({"__key__": s.key, image_format: data, "txt": s.captions.long, "json": meta})
    os.replace(tmp, path)  # a half-written shard never has the final name


def write_webdataset(
    scenes: Iterable[Scene],
    directory: str | os.PathLike,
    *,
    resolution: int = 32,
    samples_per_shard: int = 1000,
    image_format: str = "png",
    quality: int = 95,
) -> list[Path]:
    """Render scenes into `00000.tar`, `00001.tar`, ... (img2dataset layout).

    Each sample is `<key>.<image_format>`, `<key>.txt` (the long caption) and `<key>.json`
    (img2dataset fields `key`, `caption`, `status`, `width`, `height`, `sha256`, ... plus
    `caption_medium`, `caption_short`, `seed`, `style`, `background`, `objects` and
    per-object `annotations`). Keys follow img2dataset: shard number (5 digits) then index
    in the shard (as many digits as `samples_per_shard - 1` needs). Each shard is written
    to a temporary name and renamed when complete.

    Args:
        scenes: the scenes, in key order.
        directory: output directory (created if missing).
        resolution: image side in pixels.
        samples_per_shard: samples per tar file.
        image_format: "png" (lossless, default), "jpg" or "webp".
        quality: JPEG/WebP quality.

    Returns:
        The shard paths, in order.
    """
    if image_format not in _PIL_FORMATS:
        raise ValueError(f"image_format={image_format!r}; choose one of {list(_PIL_FORMATS)}")
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard={samples_per_shard} must be >= 1")
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    digits = max(1, math.ceil(math.log10(samples_per_shard)))
    shards: list[Path] = []
    batch: list[Sample] = []

    def flush() -> None:
        path = out_dir / f"{len(shards):05d}.tar"
        _write_shard(path, batch, image_format, quality)
        shards.append(path)
        batch.clear()

    for scene in scenes:
        key = f"{len(shards):05d}{len(batch):0{digits}d}"
        batch.append(make_sample(scene, key=key, resolution=resolution))
        if len(batch) == samples_per_shard:
            flush()
    if batch:
        flush()
    return shards
