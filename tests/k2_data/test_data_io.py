"""k2_data.io: tar shards in, atomic Parquet out, filtered shards by byte copy."""

from __future__ import annotations

import gc
import hashlib
import io
import tarfile
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image
from webdataset.tariterators import base_plus_ext

from k2_data.io import (
    atomic_path,
    filtered_shard_path,
    iter_shard,
    read_complete_metadata,
    shard_stem,
    split_member_name,
    unsafe_name_reason,
    write_filtered_shard,
    write_parquet_atomic,
)
from k2_data.synthetic import sample_scenes, write_webdataset


def _image(fmt: str, seed: int = 0, side: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def _write_tar(path, members, mode="w"):
    """members: (name, bytes) for files, or ready TarInfo objects (links, directories)."""
    with tarfile.open(path, mode) as tar:
        for i, member in enumerate(members):
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_000_000 + i, 0o640
            tar.addfile(info, io.BytesIO(data))
    return path


def _all_member_names(path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


@pytest.fixture
def clean_members():
    return [
        ("000.jpg", _image("JPEG", 0)),
        ("000.txt", b"a caption"),
        ("000.json", b'{"key": "000"}'),
        ("001.png", _image("PNG", 1)),
        ("001.txt", b"second"),
        ("sub/002.WEBP", _image("WEBP", 2)),
        ("003.jpeg", _image("JPEG", 3)),
        ("003.seg.png", _image("PNG", 4)),  # multi-dot extension: a sidecar of 003
    ]


def test_clean_shard_keys_members_and_bytes(tmp_path, clean_members):
    shard = _write_tar(tmp_path / "00000.tar", clean_members)
    samples = list(iter_shard(shard))
    assert [s.key for s in samples] == ["000", "001", "sub/002", "003"]
    assert all(s.error is None for s in samples)
    assert [s.image_ext for s in samples] == ["jpg", "png", "webp", "jpeg"]
    assert samples[0].members == {
        "jpg": clean_members[0][1],
        "txt": b"a caption",
        "json": b'{"key": "000"}',
    }
    assert samples[2].image == clean_members[5][1]  # upper-case extension, original bytes
    assert set(samples[3].members) == {"jpeg", "seg.png"}
    names = [n for s in samples for n in s.names]
    assert names == _all_member_names(shard)  # every member in exactly one sample, in order


def test_matches_webdataset_on_a_synthetic_shard(tmp_path):
    shards = write_webdataset(
        sample_scenes(7, seed=1), tmp_path, resolution=16, samples_per_shard=7
    )
    ours = list(iter_shard(shards[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # webdataset leaves streams to the gc
        theirs = list(wds.WebDataset([str(shards[0])], shardshuffle=False))
        gc.collect()
    assert [s.key for s in ours] == [r["__key__"] for r in theirs]
    for sample, record in zip(ours, theirs, strict=True):
        assert sample.members == {k: v for k, v in record.items() if not k.startswith("__")}


@pytest.mark.parametrize(
    "name",
    ["000.jpg", "a/b/c.tar.gz", ".hidden.jpg", "dir/.x.png", "a.b/c.jpg", "noext", "x.", "k.JPG"],
)
def test_split_member_name_is_webdatasets(name):
    base, ext = base_plus_ext(name)
    expected = None if base is None else (base, ext.lower())
    assert split_member_name(name) == expected


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x.jpg", "path traversal"),
        ("a/../../x.jpg", "path traversal"),
        ("a\\..\\x.jpg", "path traversal"),
        ("/etc/x.jpg", "absolute path"),
        ("\\x.jpg", "absolute path"),
        ("C:x.jpg", "absolute path"),
        ("x\x00.jpg", "NUL byte"),
        ("", "empty name"),
        ("a..b.jpg", None),  # dots inside a name are not a parent reference
        ("sub/000.jpg", None),
    ],
)
def test_unsafe_names(name, reason):
    assert unsafe_name_reason(name) == reason


def test_faulty_members_each_get_a_reason(tmp_path):
    link = tarfile.TarInfo("005.jpg")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    folder = tarfile.TarInfo("images")
    folder.type = tarfile.DIRTYPE
    members = [
        ("000.jpg", _image("JPEG")),
        ("../evil.jpg", _image("JPEG")),
        ("/abs.png", _image("PNG")),
        ("001.json", b"{}"),  # sidecar only
        ("001.txt", b"caption"),
        link,
        folder,
        ("README", b"no extension"),
        ("002.png", _image("PNG")),
        ("002.png", _image("PNG", 5)),  # same member twice
        ("000.txt", b"key 000 again, not adjacent"),
        ("003.jpg", _image("JPEG", 3)),
    ]
    shard = _write_tar(tmp_path / "bad.tar", members)
    samples = list(iter_shard(shard))
    kinds = {s.key: (s.error or "").split(":")[0] for s in samples}
    assert kinds == {
        "000": "duplicate_key",  # the later, non-adjacent 000 (the first 000 is fine)
        "../evil.jpg": "unsafe_name",
        "/abs.png": "unsafe_name",
        "001": "no_image",
        "005.jpg": "not_a_file",
        "images": "not_a_file",
        "README": "bad_name",
        "002": "duplicate_member",
        "003": "",
    }
    assert samples[0].key == "000" and samples[0].error is None
    assert "path traversal" in samples[1].error and "symlink" in samples[4].error
    names = [n for s in samples for n in s.names]
    assert names == _all_member_names(shard)


def test_truncated_and_garbage_tars_are_reported_not_raised(tmp_path, clean_members):
    whole = _write_tar(tmp_path / "whole.tar", clean_members).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole[: 512 * 4 + 100])  # ends inside the second member's data
    samples = list(iter_shard(cut))
    assert samples[-1].error.startswith("corrupt_tar:")
    assert [s.key for s in samples[:-1]] == ["000"]
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"this is not a tar archive at all" * 40)
    (only,) = list(iter_shard(garbage))
    assert only.error.startswith("corrupt_tar:") and only.key == "garbage.tar"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_shard(tmp_path / "missing.tar"))


def test_gzip_shard_and_stem(tmp_path, clean_members):
    shard = _write_tar(tmp_path / "00007.tar.gz", clean_members, mode="w:gz")
    assert [s.key for s in iter_shard(shard)] == ["000", "001", "sub/002", "003"]
    assert shard_stem(shard) == "00007" and shard_stem("x/00001.tar") == "00001"
    assert filtered_shard_path(shard, tmp_path / "f") == tmp_path / "f" / "00007.tar"


def test_atomic_path_renames_only_on_success(tmp_path):
    final = tmp_path / "out" / "a.bin"
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"first")
        assert not final.exists()  # nothing under the final name while writing
    assert final.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert final.read_bytes() == b"first"  # the old complete file survives
    assert sorted(p.name for p in final.parent.iterdir()) == ["a.bin"]  # no temp left


def test_parquet_completion_marker(tmp_path):
    table = pa.table({"__key__": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})
    path = write_parquet_atomic(table, tmp_path / "s.parquet", metadata={"stage": "t", "n": 1})
    meta = read_complete_metadata(path)
    assert meta == {"stage": "t", "n": 1, "complete": True, "rows": 3}
    assert pq.read_table(path).select(["__key__", "x"]).equals(table)
    again = write_parquet_atomic(table, tmp_path / "t.parquet", metadata={"n": 1, "stage": "t"})
    assert again.read_bytes() == path.read_bytes()  # deterministic bytes: resumes compare equal

    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(path.read_bytes()[:-20])  # footer cut off, as by a kill mid-copy
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(table, foreign)  # no k2 description
    lying = tmp_path / "lying.parquet"
    meta_lie = {b"k2": b'{"complete": true, "rows": 99}'}
    pq.write_table(table.replace_schema_metadata(meta_lie), lying)
    for bad in (truncated, foreign, lying, tmp_path / "missing.parquet"):
        assert read_complete_metadata(bad) is None


def test_filtered_shard_copies_original_bytes_and_headers(tmp_path, clean_members):
    members = [*clean_members, ("../evil.jpg", _image("JPEG")), ("004.json", b"{}")]
    shard = _write_tar(tmp_path / "00003.tar", members)
    out = filtered_shard_path(shard, tmp_path / "filtered")
    keep = {"000", "sub/002", "../evil.jpg", "004", "not-there"}
    assert write_filtered_shard(shard, out, keep) == 2  # the unsafe and imageless never copy
    with tarfile.open(shard) as src, tarfile.open(out) as dst:
        wanted = [m for m in src.getmembers() if m.name.split(".")[0] in {"000", "sub/002"}]
        got = dst.getmembers()
        assert [m.name for m in got] == [m.name for m in wanted]
        for a, b in zip(wanted, got, strict=True):
            assert (a.size, a.mtime, a.mode) == (b.size, b.mtime, b.mode)
            data_a, data_b = src.extractfile(a).read(), dst.extractfile(b).read()
            assert hashlib.md5(data_a).digest() == hashlib.md5(data_b).digest()
    assert [p.name for p in out.parent.iterdir()] == ["00003.tar"]
