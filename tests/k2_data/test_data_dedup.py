"""k2_data.dedup: exact radius search (multihash, banded LSH, flat), groups, keepers, the table."""

import io
from collections import deque

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from k2_data.dedup import (
    DEDUP_SCHEMA,
    band_edges,
    banded_lsh_pairs,
    connected_components,
    deduplicate,
    filter_pairs,
    first_identical,
    flat_pairs,
    multihash_pairs,
    multihash_params,
    near_duplicate_pairs,
    select_keepers,
)
from k2_data.hashing import colorhash_batch, md5_batch, phash_batch
from k2_data.synthetic import render, sample_scenes


def _planted(
    seed: int, n: int, nbytes: int, *, skew: float = 0.5, max_flips: int = 15
) -> np.ndarray:
    """Random codes (bit probability ``skew``), 150 of them copies of others with 0..max_flips flips."""
    rng = np.random.default_rng(seed)
    bits = rng.random((n, 8 * nbytes)) < skew
    for _ in range(150):
        i, j = rng.integers(0, n, 2)
        bits[j] = bits[i]
        bits[j, rng.choice(8 * nbytes, int(rng.integers(0, max_flips + 1)), replace=False)] ^= True
    return np.packbits(bits, axis=1)


def _reference_pairs(codes: np.ndarray, radius: int) -> np.ndarray:
    """All pairs by an integer bit-matrix product: d = a.(1-b) + (1-a).b."""
    bits = np.unpackbits(codes, axis=1).astype(np.int64)
    dist = bits @ (1 - bits).T + (1 - bits) @ bits.T
    i, j = np.nonzero(np.triu(dist <= radius, k=1))
    return np.stack([i, j], axis=1).astype(np.int64)


CASES = [(18, 0.5, r) for r in (0, 1, 5, 8, 12)] + [
    (13, 0.5, 4),
    (6, 0.5, 3),
    (8, 0.9, 6),
    (18, 0.9, 10),
]


@pytest.mark.parametrize(("nbytes", "skew", "radius"), CASES)
def test_all_methods_find_exactly_the_brute_force_pairs(nbytes, skew, radius):
    codes = _planted(radius + nbytes, 1500, nbytes, skew=skew, max_flips=radius + 3)
    ref = _reference_pairs(codes, radius)
    assert len(ref) > 20  # planted pairs inside the radius exist (and some just outside)
    for method in ("multihash", "lsh", "flat"):
        assert np.array_equal(near_duplicate_pairs(codes, radius=radius, method=method), ref), (
            method
        )
    assert np.array_equal(banded_lsh_pairs(codes, radius=radius, bands=radius + 4), ref)


@pytest.mark.parametrize(("nhash", "b"), [(2, 8), (3, 16), (5, 7), (1, 12)])
def test_multihash_with_forced_tables_and_bit_flips_is_exact(nhash, b):
    codes = _planted(nhash * b, 1200, 18)
    for radius in (2, 7):
        got = multihash_pairs(codes, radius=radius, nhash=nhash, b=b)
        assert np.array_equal(got, _reference_pairs(codes, radius))


def _spread_flips(seed: int, n: int, parts: list[range], counts: list[int], lsb_first: bool):
    """n random 18-byte codes, each followed by a copy with counts[t] flips inside parts[t]."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (2 * n, 18), dtype=np.uint8)
    for row in range(0, 2 * n, 2):
        codes[row + 1] = codes[row]
        for part, count in zip(parts, counts, strict=True):
            for k in rng.choice(list(part), count, replace=False):
                codes[row + 1, k // 8] ^= np.uint8(1 << (k % 8 if lsb_first else 7 - k % 8))
    return codes


@pytest.mark.parametrize(("nhash", "b", "radius"), [(2, 8, 3), (3, 16, 7), (4, 10, 9), (9, 16, 12)])
def test_search_finds_pigeonhole_worst_cases(nhash, b, radius):
    # Spread the flips so that every substring / band differs as much as the bound allows:
    # a pair is then found only through the one part with the fewest flips.
    counts = [radius // nhash + (t < radius % nhash) for t in range(nhash)]
    parts = [range(t * b, (t + 1) * b) for t in range(nhash)]  # faiss reads bits LSB first
    codes = _spread_flips(b, 200, parts, counts, lsb_first=True)
    expected = [[i, i + 1] for i in range(0, 400, 2)]
    assert multihash_pairs(codes, radius=radius, nhash=nhash, b=b).tolist() == expected
    bands = band_edges(144, radius + 1)
    codes = _spread_flips(b, 200, [range(*e) for e in bands], [1] * radius + [0], lsb_first=False)
    assert banded_lsh_pairs(codes, radius=radius).tolist() == expected


def test_multihash_params_satisfy_the_pigeonhole_bound():
    for n in (10, 10**4, 10**6, 10**8):
        for nbits in (42, 64, 98, 144):
            for radius in (0, 3, 12, 30):
                nhash, b, nflip = multihash_params(n, nbits, radius)
                assert nhash * b <= nbits and 1 <= b <= 62
                assert nhash * (nflip + 1) > radius or nflip == b


def test_lsh_uses_only_the_given_bits_and_rejects_too_few_bands():
    codes = _planted(3, 800, 6)
    codes[:, -1] &= 0b11000000  # 42 informative bits, as imagehash's colorhash
    ref = _reference_pairs(codes, 3)
    assert np.array_equal(banded_lsh_pairs(codes, radius=3, nbits=42), ref)
    assert band_edges(42, 4) == [(0, 10), (10, 21), (21, 31), (31, 42)]
    with pytest.raises(ValueError, match="pigeonhole"):
        banded_lsh_pairs(codes, radius=3, bands=3)
    with pytest.raises(ValueError, match="radius"):
        flat_pairs(codes, radius=48)
    with pytest.raises((ValueError, TypeError), match="bktree"):  # TypeError: typed Literal
        near_duplicate_pairs(codes, radius=1, method="bktree")
    with pytest.raises(TypeError, match=r"(?i)uint8"):
        multihash_pairs(codes.astype(np.int64), radius=1)


def test_first_identical_and_filter_pairs():
    rows = np.array([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4], [1, 2]], np.uint8)
    assert first_identical(rows).tolist() == [0, 1, 0, 3, 1, 0]
    codes = np.array([[0b0000], [0b0001], [0b0111], [0b1111]], np.uint8)
    pairs = np.array([[0, 1], [0, 2], [1, 3], [2, 3]], np.int64)
    assert filter_pairs(pairs, codes, radius=2).tolist() == [[0, 1], [2, 3]]  # 1, 3, 3, 1 bits


def _bfs_labels(n: int, pairs: np.ndarray) -> list[int]:
    adjacency = [[] for _ in range(n)]
    for a, b in pairs.tolist():
        adjacency[a].append(b)
        adjacency[b].append(a)
    labels = [-1] * n
    for start in range(n):
        if labels[start] < 0:
            queue, members = deque([start]), [start]
            labels[start] = start
            while queue:
                for nxt in adjacency[queue.popleft()]:
                    if labels[nxt] < 0:
                        labels[nxt] = start
                        members.append(nxt)
                        queue.append(nxt)
            for m in members:
                labels[m] = min(members)
    return labels


def test_connected_components_match_breadth_first_search():
    rng = np.random.default_rng(0)
    for n, m in ((1, 0), (10, 0), (50, 30), (300, 280), (2000, 1500)):
        pairs = rng.integers(0, n, (m, 2))
        assert connected_components(n, pairs).tolist() == _bfs_labels(n, pairs)
    chain = np.array([[9, 8], [7, 8], [6, 7], [0, 6], [2, 3]])  # transitive: 0..9 except 1, 4, 5
    assert connected_components(10, chain).tolist() == [0, 1, 2, 2, 4, 5, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="pair indices"):
        connected_components(3, np.array([[0, 3]]))


def test_keeper_rule_resolution_then_file_size_then_key():
    labels = np.zeros(4, np.int64)
    keys = ["d", "c", "b", "a"]
    size = np.array([900, 100, 200, 999])
    w, h = np.array([10, 20, 20, 10]), np.array([10, 10, 20, 10])  # 100, 200, 400, 100 px
    assert select_keepers(labels, keys=keys, width=w, height=h, file_size=size).tolist() == [2] * 4
    h_tie = np.array([10, 20, 20, 10])  # 1 and 2 tie at 400 px: the larger file (2) wins
    assert (
        select_keepers(labels, keys=keys, width=w, height=h_tie, file_size=size).tolist() == [2] * 4
    )
    flat = np.full(4, 7)  # all tie on pixels and bytes: the smallest key "a"
    assert (
        select_keepers(labels, keys=keys, width=flat, height=flat, file_size=flat).tolist()
        == [3] * 4
    )
    assert select_keepers(labels, keys=keys, file_size=size).tolist() == [3] * 4  # 999 bytes
    assert select_keepers(labels, keys=keys).tolist() == [3] * 4
    two = select_keepers(np.array([0, 0, 2, 2]), keys=["x", "y", "b", "a"])
    assert two.tolist() == [0, 0, 3, 3]
    perm = np.array([2, 0, 3, 1])  # the kept key does not depend on input order
    again = select_keepers(
        labels, keys=[keys[i] for i in perm], width=w[perm], height=h[perm], file_size=size[perm]
    )
    assert keys[perm[again[0]]] == "b"
    with pytest.raises(ValueError, match="together"):
        select_keepers(labels, keys=keys, width=w)


def _codes(bits_on: list[list[int]], nbytes: int) -> np.ndarray:
    out = np.zeros((len(bits_on), 8 * nbytes), bool)
    for row, on in zip(out, bits_on, strict=True):
        row[on] = True
    return np.packbits(out, axis=1)


def test_deduplicate_groups_reasons_and_colorhash_criterion():
    keys = ["a", "b", "c", "d", "e", "f", "g"]
    md5 = md5_batch([b"1", b"2", b"3", b"4", b"5", b"1", b"7"])  # f is a byte copy of a
    # a~b (3 bits), b~c (3 bits), a-c 6 bits apart: one transitive group at radius 4;
    # d~e in phash but not in colorhash; g is alone.
    far, farther = list(range(50, 56)), list(range(90, 96))  # 6 bits from a, 12 from each other
    phash = _codes([[], [0, 1, 2], [0, 1, 2, 3, 4, 5], far, [*far, 56], [], farther], 18)
    color = _codes([[], [1], [], [3], [3, 20, 30, 40, 50, 60, 70], [], []], 13)
    width = np.array([64, 64, 128, 64, 64, 64, 64])
    table = deduplicate(
        keys,
        md5=md5,
        phash=phash,
        colorhash=color,
        width=width,
        height=width,
        phash_radius=4,
        colorhash_radius=2,
    )
    assert table.schema == DEDUP_SCHEMA and table["__key__"].to_pylist() == keys
    rows = {r["__key__"]: (r["keep"], r["reason"], r["keeper"]) for r in table.to_pylist()}
    assert rows["c"] == (True, "", "c")  # largest image of the a-b-c-f group
    assert rows["a"] == (False, "duplicate_of:c", "c")
    assert rows["b"] == (False, "duplicate_of:c", "c")
    assert rows["f"] == (False, "duplicate_of:c", "c")
    assert rows["d"][0] and rows["e"][0] and rows["g"][0]
    md5_only = deduplicate(keys, md5=md5).to_pylist()
    assert [r["reason"] for r in md5_only] == ["", "", "", "", "", "md5_duplicate_of:a", ""]
    for method in ("lsh", "flat"):
        other = deduplicate(
            keys,
            md5=md5,
            phash=phash,
            colorhash=color,
            width=width,
            height=width,
            phash_radius=4,
            colorhash_radius=2,
            method=method,
        )
        assert other.equals(table)


def test_deduplicate_rejects_bad_input_and_accepts_empty():
    empty = deduplicate([], md5=np.zeros((0, 16), np.uint8), phash=np.zeros((0, 18), np.uint8))
    assert empty.num_rows == 0 and empty.schema == DEDUP_SCHEMA
    codes = np.zeros((2, 18), np.uint8)
    with pytest.raises(ValueError, match="unique"):
        deduplicate(["a", "a"], phash=codes)
    with pytest.raises(ValueError, match="nothing to deduplicate"):
        deduplicate(["a", "b"])
    with pytest.raises(ValueError, match="pass phash"):
        deduplicate(["a", "b"], colorhash=codes)
    with pytest.raises(ValueError, match="one row per key"):
        deduplicate(["a", "b", "c"], phash=codes)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_deduplicate_end_to_end_on_rendered_images():
    scenes = sample_scenes(6, seed=11)
    originals = [Image.fromarray(render(s, 128)) for s in scenes]
    blobs = [_jpeg(img, 95) for img in originals]
    blobs.append(_jpeg(originals[0].resize((96, 96)), 80))  # smaller re-encode of scene 0
    blobs.append(blobs[1])  # byte copy of scene 1
    blobs.append(_jpeg(originals[2], 60))  # same size, lower quality: smaller file
    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
    keys = [f"{i:04d}" for i in range(len(blobs))]
    table = deduplicate(
        keys,
        md5=md5_batch(blobs),
        phash=phash_batch(images),
        colorhash=colorhash_batch(images),
        width=np.array([img.width for img in images]),
        height=np.array([img.height for img in images]),
        file_size=np.array([len(b) for b in blobs]),
    )
    reasons = dict(zip(table["__key__"].to_pylist(), table["reason"].to_pylist(), strict=True))
    assert reasons == {
        **{k: "" for k in keys[:6]},
        "0006": "duplicate_of:0000",
        "0007": "md5_duplicate_of:0001",
        "0008": "duplicate_of:0002",
    }
    assert isinstance(table, pa.Table)
