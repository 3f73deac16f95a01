"""Synthetic world: samples and WebDataset export (img2dataset layout)."""

import gc
import io
import json
import tarfile
import warnings

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from k2_data.synthetic import (
    annotations,
    captions,
    make_sample,
    render,
    sample_scenes,
    verify,
    write_webdataset,
)


def test_round_trip_through_webdataset_and_tarfile(tmp_path):
    scenes = sample_scenes(10, seed=4)
    shards = write_webdataset(scenes, tmp_path, resolution=32, samples_per_shard=4)
    assert [p.name for p in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    assert not list(tmp_path.glob("*.tmp"))
    keys = [f"{s:05d}{i}" for s in range(3) for i in range(4)][:10]

    # tarfile: exact member names, in order.
    names = []
    for path in shards:
        with tarfile.open(path) as tar:
            names += tar.getnames()
    assert names == [f"{k}.{ext}" for k in keys for ext in ("json", "png", "txt")]

    # webdataset: decoded pixels, captions and metadata.
    urls = [str(p) for p in shards]
    with warnings.catch_warnings():
        # webdataset leaves the shard streams to the garbage collector
        # (webdataset/webdataset#311, #383); collect them here, where that is not an error.
        warnings.simplefilter("ignore", ResourceWarning)
        records = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
        gc.collect()
    assert [r["__key__"] for r in records] == keys
    for scene, rec in zip(scenes, records, strict=True):
        caps = captions(scene)
        assert np.array_equal(rec["png"], render(scene, 32))
        assert rec["txt"] == caps.long
        meta = rec["json"]
        assert meta["key"] == rec["__key__"] and meta["status"] == "success"
        assert (meta["width"], meta["height"]) == (32, 32)
        assert meta["caption"] == caps.long
        assert (meta["caption_medium"], meta["caption_short"]) == (caps.medium, caps.short)
        assert (meta["style"], meta["background"], meta["seed"]) == (
            scene.style,
            scene.background,
            scene.seed,
        )
        assert len(meta["annotations"]) == scene.num_objects
        assert [o["count"] for o in meta["objects"]] == [o.count for o in scene.objects]


def test_lossy_formats_and_annotations(tmp_path):
    scenes = sample_scenes(3, seed=5)
    (shard,) = write_webdataset(scenes, tmp_path, resolution=64, image_format="webp", quality=90)
    with tarfile.open(shard) as tar:
        member = tar.extractfile(f"{0:05d}000.webp")
        image = np.asarray(Image.open(io.BytesIO(member.read())).convert("RGB"))
        meta = json.loads(tar.extractfile(f"{0:05d}000.json").read())
    assert image.shape == (64, 64, 3)
    assert np.abs(image.astype(int) - render(scenes[0], 64)).mean() < 4
    assert verify(image, captions(scenes[0]).long).score >= 0.8
    box = meta["annotations"][0]["bbox"]
    assert 0 < box[0] < box[2] < 1 and 0 < box[1] < box[3] < 1


def test_annotations_match_the_scene():
    for scene in sample_scenes(30, seed=6):
        anns = annotations(scene)
        assert len(anns) == scene.num_objects
        for a in anns:
            obj = scene.objects[a.group]
            assert (a.shape, a.colour, a.size, a.group_position) == (
                obj.shape,
                obj.colour,
                obj.size,
                obj.position,
            )
            x0, y0, x1, y1 = a.bbox
            assert x1 - x0 == pytest.approx(y1 - y0)  # square boxes
        sample = make_sample(scene, key="k", resolution=32)
        assert sample.image.shape == (32, 32, 3) and sample.key == "k"
        meta = json.loads(json.dumps(sample.metadata()))
        assert meta["annotations"][0]["bbox"] == pytest.approx(list(anns[0].bbox))


def test_bad_export_arguments_raise(tmp_path):
    scenes = sample_scenes(1, seed=0)
    with pytest.raises(ValueError, match="image_format='gif'"):
        write_webdataset(scenes, tmp_path, image_format="gif")
    with pytest.raises(ValueError, match="samples_per_shard=0"):
        write_webdataset(scenes, tmp_path, samples_per_shard=0)
