"""k2_data.dedup.joint_hamming_pairs: exactly the brute-force pairs within both radii."""

import inspect
import itertools

import numpy as np
import pytest

import k2_data.dedup._joint as joint_module
from k2_data.dedup import band_edges, deduplicate, joint_hamming_pairs

LAYOUTS = [None, (1, 1), (2, 0), (2, 1), (1, 2), (3, 0), (1, 0), (0, 1), (0, 0)]


def _reference(phash: np.ndarray, colorhash: np.ndarray, r1: int, r2: int) -> np.ndarray:
    """All i < j with both distances in range, from integer bit matrices: d = a.(1-b) + (1-a).b."""

    def distances(codes):
        bits = np.unpackbits(codes, axis=1).astype(np.int64)
        return bits @ (1 - bits).T + (1 - bits) @ bits.T

    close = (distances(phash) <= r1) & (distances(colorhash) <= r2)
    i, j = np.nonzero(np.triu(close, k=1))
    return np.stack([i, j], axis=1).astype(np.int64)


def _planted(seed, n, pbytes, cbytes, *, skew=0.5, pflips=10, cflips=6, copies=0.3):
    """Random codes (bit probability skew); a share of rows are copies of others with random
    flips in each code (some beyond the radii), and a few exact copies of both codes."""
    rng = np.random.default_rng(seed)
    pbits = rng.random((n, 8 * pbytes)) < skew
    cbits = rng.random((n, 8 * cbytes)) < skew
    for _ in range(int(copies * n)):
        src, dst = rng.integers(0, n, 2)
        pbits[dst], cbits[dst] = pbits[src], cbits[src]
        if rng.random() < 0.8:  # else an exact copy in both codes
            pbits[dst, rng.choice(8 * pbytes, rng.integers(0, pflips + 1), replace=False)] ^= True
            cbits[dst, rng.choice(8 * cbytes, rng.integers(0, cflips + 1), replace=False)] ^= True
    return np.packbits(pbits, axis=1), np.packbits(cbits, axis=1)


CASES = [  # (pbytes, cbytes, r1, r2, skew)
    (18, 13, 8, 4, 0.5),  # the report's 12x12 phash and the 98-bit k2 colorhash
    (18, 13, 12, 4, 0.5),  # deduplicate's default radii
    (18, 13, 0, 0, 0.5),  # radius 0: one band each, wider than 64 bits (hashed keys)
    (18, 6, 1, 3, 0.5),  # two 72-bit phash bands; 48 colour bits in 4 bands of 12
    (5, 3, 6, 2, 0.5),  # 40 and 24 bits: bands of unequal width (5 or 6 bits, 8 bits)
    (3, 2, 5, 3, 0.9),  # skewed, narrow codes: long equal-key runs
    (18, 13, 8, 4, 0.97),  # almost constant bits: huge runs, the k-th neighbour loop
]


@pytest.mark.parametrize(("pbytes", "cbytes", "r1", "r2", "skew"), CASES)
def test_every_layout_finds_exactly_the_brute_force_pairs(pbytes, cbytes, r1, r2, skew):
    phash, colorhash = _planted(r1 + 7 * r2 + pbytes, 500, pbytes, cbytes, skew=skew)
    ref = _reference(phash, colorhash, r1, r2)
    p_only = _reference(phash, np.zeros_like(colorhash), r1, r2)
    assert 20 < len(ref) < len(p_only)  # pairs exist, and the colour radius removes some
    tried = 0
    for key_bands in LAYOUTS:
        try:
            got = joint_hamming_pairs(
                phash, colorhash, phash_radius=r1, colorhash_radius=r2, key_bands=key_bands
            )
        except ValueError as err:  # a layout needs radius + bands varying bits per code
            assert key_bands is not None and "varying bits" in str(err)
            continue
        tried += 1
        assert got.dtype == np.int64 and got.shape[1] == 2
        assert np.array_equal(got, ref), key_bands
    assert tried >= 6


def test_each_pair_is_reported_under_exactly_one_key():
    # The first-agreeing-key rule keeps the per-key outputs disjoint, so no global
    # de-duplication (and no multiple of the pairs in memory) is needed.
    phash, colorhash = _planted(4, 400, 18, 13, pflips=4, cflips=2)
    ref = _reference(phash, colorhash, 8, 4)
    for key_bands in [(1, 1), (2, 0), (2, 1)]:
        (layout,) = joint_module._layouts(phash, colorhash, (8, 4), key_bands)
        search = joint_module._Search(phash, colorhash, (8, 4), layout)
        found = np.concatenate([search.key_pairs(p, c) for p, c in layout.keys])
        found = np.sort(found, axis=1)
        assert len(found) == len(ref)
        assert np.array_equal(found[np.lexsort((found[:, 1], found[:, 0]))], ref)


def test_chunked_sampled_and_threaded_paths_agree(monkeypatch):
    # Tiny chunk sizes run every loop over row chunks and candidate chunks many times, and a
    # sample smaller than n makes the layout choice run on a true subsample.
    monkeypatch.setattr(joint_module, "_ROWS", 37)
    monkeypatch.setattr(joint_module, "_CANDIDATES", 5)
    monkeypatch.setattr(joint_module, "_SAMPLE", 120)
    phash, colorhash = _planted(3, 700, 18, 13, skew=0.8)
    ref = _reference(phash, colorhash, 8, 4)
    assert len(ref) > 50
    for workers in (1, 2, 3):
        got = joint_hamming_pairs(
            phash, colorhash, phash_radius=8, colorhash_radius=4, workers=workers
        )
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("key_bands", [(1, 1), (2, 0), (2, 1)])
def test_pigeonhole_worst_case_is_found_through_the_one_shared_key(key_bands):
    # Spread the flips so that every band differs except the fewest the bound allows
    # (tp phash bands and tc colour bands): the pair shares exactly one key.
    r1, r2 = 8, 4
    tp, tc = key_bands
    rng = np.random.default_rng(sum(key_bands))
    n = 300
    pbits = rng.random((2 * n, 144)) < 0.5
    cbits = rng.random((2 * n, 104)) < 0.5
    cbits[:, 98:] = False  # zero padding, as a real 98-bit colorhash in 13 bytes
    p_bands = band_edges(144, r1 + max(tp, 1))
    c_bands = band_edges(98, r2 + max(tc, 1))
    for row in range(0, 2 * n, 2):
        pbits[row + 1], cbits[row + 1] = pbits[row], cbits[row]
        for a, b in rng.permutation(p_bands)[: len(p_bands) - max(tp, 1)]:
            pbits[row + 1, rng.integers(a, b)] ^= True
        for a, b in rng.permutation(c_bands)[: len(c_bands) - max(tc, 1)]:
            cbits[row + 1, rng.integers(a, b)] ^= True
    phash, colorhash = np.packbits(pbits, axis=1), np.packbits(cbits, axis=1)
    expected = [[i, i + 1] for i in range(0, 2 * n, 2)]
    got = joint_hamming_pairs(
        phash, colorhash, phash_radius=r1, colorhash_radius=r2, key_bands=key_bands
    )
    assert got.tolist() == expected
    # one more flip in either code puts the pair outside, and nothing is found
    untouched = np.argmax(pbits[1::2] == pbits[0::2], axis=1)  # a bit still equal in each copy
    pbits[np.arange(1, 2 * n, 2), untouched] ^= True
    far = joint_hamming_pairs(
        np.packbits(pbits, axis=1),
        colorhash,
        phash_radius=r1,
        colorhash_radius=r2,
        key_bands=key_bands,
    )
    assert far.tolist() == []


def test_identical_floods_expand_to_every_pair():
    rng = np.random.default_rng(5)
    phash = np.repeat(rng.integers(0, 256, (1, 18), dtype=np.uint8), 120, axis=0)
    colorhash = np.repeat(rng.integers(0, 256, (1, 13), dtype=np.uint8), 120, axis=0)
    got = joint_hamming_pairs(phash, colorhash, phash_radius=8, colorhash_radius=4)
    assert got.tolist() == [list(p) for p in itertools.combinations(range(120), 2)]
    # floods of several distinct rows, near copies of each other and far from the rest
    base_p, base_c = _planted(6, 60, 18, 13)
    rows = rng.integers(0, 60, 400)
    phash, colorhash = base_p[rows], base_c[rows]
    ref = _reference(phash, colorhash, 8, 4)
    assert len(ref) > 1000
    assert np.array_equal(
        joint_hamming_pairs(phash, colorhash, phash_radius=8, colorhash_radius=4), ref
    )


def test_colour_radius_is_a_conjunction_and_padding_bits_do_not_matter():
    phash = np.zeros((4, 18), np.uint8)
    phash[1, 0] = 0b1110_0000  # 3 bits from row 0
    phash[2, 5] = 0b1111_1111  # 8 bits
    phash[3, 5] = 0b1111_1111
    phash[3, 6] = 0b1000_0000  # 9 bits from row 0, 1 from row 2
    colorhash = np.zeros((4, 13), np.uint8)
    colorhash[1, 12] = 0b1111_1000  # 5 colour bits: row 1 fails the colour radius 4
    got = joint_hamming_pairs(phash, colorhash, phash_radius=8, colorhash_radius=4)
    assert got.tolist() == [[0, 2], [2, 3]]  # 0-1 colour 5, 0-3 phash 9, 1-2 phash 11
    got = joint_hamming_pairs(phash, colorhash, phash_radius=9, colorhash_radius=5)
    assert got.tolist() == [[0, 1], [0, 2], [0, 3], [2, 3]]  # 1-2 phash 11, 1-3 phash 12


def test_empty_and_single_inputs():
    for n in (0, 1):
        got = joint_hamming_pairs(
            np.zeros((n, 18), np.uint8),
            np.zeros((n, 13), np.uint8),
            phash_radius=8,
            colorhash_radius=4,
        )
        assert got.shape == (0, 2) and got.dtype == np.int64


def test_bad_input_raises_clear_errors():
    phash, colorhash = np.zeros((5, 18), np.uint8), np.zeros((4, 13), np.uint8)
    unchecked = inspect.unwrap(joint_hamming_pairs)  # past the test-time jaxtyping shape check
    with pytest.raises(ValueError, match="same images"):
        unchecked(phash, colorhash, phash_radius=8, colorhash_radius=4)
    with pytest.raises((ValueError, TypeError)):  # jaxtyping's shape check or ours
        joint_hamming_pairs(phash, colorhash, phash_radius=8, colorhash_radius=4)
    colorhash = np.zeros((5, 13), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        unchecked(phash.astype(np.int64), colorhash, phash_radius=8, colorhash_radius=4)
    with pytest.raises(ValueError, match="radius"):
        joint_hamming_pairs(phash, colorhash, phash_radius=144, colorhash_radius=4)
    with pytest.raises(ValueError, match="radius"):
        joint_hamming_pairs(phash, colorhash, phash_radius=8, colorhash_radius=-1)
    with pytest.raises(ValueError, match="workers"):
        joint_hamming_pairs(phash, colorhash, phash_radius=8, colorhash_radius=4, workers=0)
    with pytest.raises(ValueError, match="key_bands"):
        joint_hamming_pairs(phash, colorhash, phash_radius=8, colorhash_radius=4, key_bands=(-1, 1))
    few = np.zeros((5, 18), np.uint8)
    few[np.arange(5), 0] = np.arange(5)  # 3 varying bits: (1, 1) needs 8 + 1
    with pytest.raises(ValueError, match="key_bands=None"):
        joint_hamming_pairs(few, colorhash, phash_radius=8, colorhash_radius=4, key_bands=(1, 1))
    got = joint_hamming_pairs(few, colorhash, phash_radius=8, colorhash_radius=4)
    assert len(got) == 10  # 3 varying bits are within any radius >= 3: every pair


def test_deduplicate_uses_the_joint_search_and_matches_the_other_methods():
    phash, colorhash = _planted(9, 400, 18, 13, pflips=14)
    keys = [f"{i:04d}" for i in range(len(phash))]
    tables = [
        deduplicate(keys, phash=phash, colorhash=colorhash, method=method)
        for method in ("joint", "multihash", "flat")
    ]
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])
    dropped = sum(not k for k in tables[0]["keep"].to_pylist())
    assert dropped > 50
