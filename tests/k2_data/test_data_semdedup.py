"""k2_data.cluster.semantic_dedup: epsilon is a cosine distance, greedy keep rule, per cluster."""

import numpy as np
import pytest

from k2_data.cluster import semantic_dedup


def _at_distance(u, w, dist):
    """Unit vector at cosine distance ``dist`` from unit u, in the plane of u and unit w ⟂ u."""
    cos = 1.0 - dist
    return cos * u + np.sqrt(1.0 - cos**2) * w


E = np.eye(4)


def _reference(x, labels, epsilon, keep):
    """Plain float64 transcription: offer members in priority order; drop j iff some already
    kept i has cos(i, j) > 1 - epsilon."""
    x = np.asarray(x, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    kept = np.zeros(len(x), bool)
    for c in np.unique(labels):
        members = [i for i in range(len(x)) if labels[i] == c]
        centre = x[members].sum(0)
        centre = centre / np.linalg.norm(centre)
        if keep == "farthest":
            members.sort(key=lambda i: (x[i] @ centre, i))
        elif keep == "closest":
            members.sort(key=lambda i: (-(x[i] @ centre), i))
        chosen = []
        for j in members:
            if all(x[i] @ x[j] <= 1.0 - epsilon for i in chosen):
                chosen.append(j)
        kept[chosen] = True
    return kept


def test_epsilon_is_a_cosine_distance_threshold():
    b = _at_distance(E[0], E[1], 0.005)  # cosine distance 0.005 from e0
    x = np.stack([E[0], b, E[2]]).astype(np.float32)
    labels = np.zeros(3, np.int64)
    removed = semantic_dedup(x, labels, epsilon=0.01, keep="index")
    assert removed.keep.tolist() == [True, False, True]  # 0.005 < 0.01: duplicate
    assert removed.duplicate_of.tolist() == [-1, 0, -1]
    np.testing.assert_allclose(removed.similarity[1], 0.995, atol=1e-6)
    assert semantic_dedup(x, labels, epsilon=0.004, keep="index").keep.all()  # 0.005 > 0.004
    # e0 and e2 are at distance 1: a duplicate only once epsilon exceeds 1
    assert semantic_dedup(x, labels, epsilon=1.01, keep="index").keep.tolist() == [
        True,
        False,
        False,
    ]


def test_epsilon_zero_keeps_even_exact_copies_and_large_epsilon_prunes_more():
    x = np.stack([E[0], E[0], _at_distance(E[0], E[1], 0.02)]).astype(np.float32)
    labels = np.zeros(3, np.int64)
    assert semantic_dedup(x, labels, epsilon=0.0).keep.all()
    counts = [semantic_dedup(x, labels, epsilon=e).keep.sum() for e in (0.0, 1e-3, 0.05)]
    assert counts == [3, 2, 1]


def test_keep_rule_farthest_from_centre_survives():
    # u and v near-duplicates; w pulls the centre towards v, so u is the farther one
    u, w = E[0], E[1]
    v = _at_distance(u, w, 0.001)
    x = np.stack([v, u, w]).astype(np.float32)
    labels = np.zeros(3, np.int64)
    centre = (u + v + w) / np.linalg.norm(u + v + w)
    assert u @ centre < v @ centre  # the hand reasoning above
    assert semantic_dedup(x, labels, epsilon=0.01, keep="farthest").keep.tolist() == [
        False,
        True,
        True,
    ]
    assert semantic_dedup(x, labels, epsilon=0.01, keep="closest").keep.tolist() == [
        True,
        False,
        True,
    ]
    assert semantic_dedup(x, labels, epsilon=0.01, keep="index").keep.tolist() == [
        True,
        False,
        True,
    ]


def test_chain_is_resolved_against_kept_points_only():
    # a~b and b~c (distance 0.006 each) but a and c are 0.024 apart: greedy keeps a and c
    a = E[0]
    b = _at_distance(a, E[1], 0.006)
    theta = 2 * np.arccos(1 - 0.006)
    c = np.cos(theta) * a + np.sin(theta) * E[1]
    x = np.stack([a, b, c]).astype(np.float32)
    got = semantic_dedup(x, np.zeros(3, np.int64), epsilon=0.01, keep="index")
    assert got.keep.tolist() == [True, False, True]
    assert got.duplicate_of[1] == 0


def test_only_pairs_inside_a_cluster_are_compared():
    x = np.stack([E[0], E[0], E[0]]).astype(np.float32)
    got = semantic_dedup(x, np.array([0, 1, 1]), epsilon=0.01, keep="index")
    assert got.keep.tolist() == [True, True, False] and got.duplicate_of[2] == 1


@pytest.mark.parametrize("keep", ["farthest", "closest", "index"])
def test_matches_reference_on_planted_duplicates(keep):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 16))
    copies = base[rng.integers(0, 300, 200)] + 0.04 * rng.standard_normal((200, 16))
    x = np.concatenate([base, copies]).astype(np.float32)
    labels = rng.integers(0, 5, len(x))
    labels[300:] = labels[rng.integers(0, 300, 200)]  # some copies share their source's cluster
    for epsilon in (0.002, 0.01, 0.05):
        got = semantic_dedup(x, labels, epsilon=epsilon, keep=keep)
        np.testing.assert_array_equal(got.keep, _reference(x, labels, epsilon, keep))
        # properties: removed points point to a kept point of their cluster above threshold
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        gone = np.flatnonzero(~got.keep)
        assert len(gone) > 0 and got.keep[got.duplicate_of[gone]].all()
        assert (labels[got.duplicate_of[gone]] == labels[gone]).all()
        cos = (unit[gone] * unit[got.duplicate_of[gone]]).sum(1)
        assert (cos > 1 - epsilon).all()
        np.testing.assert_allclose(got.similarity[gone], cos, atol=1e-5)
        assert (got.duplicate_of[got.keep] == -1).all()
        kept = np.flatnonzero(got.keep)
        sims = unit[kept] @ unit[kept].T
        same = labels[kept][:, None] == labels[kept][None, :]
        assert not (np.triu(same & (sims > 1 - epsilon), k=1)).any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": -0.1}, "cosine distance in"),
        ({"epsilon": 2.5}, "cosine distance in"),
        # wrong length: our check, or jaxtyping's under the test hook
        ({"epsilon": 0.1, "labels": np.zeros(2, np.int64)}, "labels must be|Type-check error"),
    ],
)
def test_bad_input_raises_clearly(kwargs, match):
    x = np.eye(3, dtype=np.float32)
    args = {"labels": np.zeros(3, np.int64), **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        semantic_dedup(x, args.pop("labels"), **args)
