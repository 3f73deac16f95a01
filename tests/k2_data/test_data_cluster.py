"""k2_data.cluster: k-means on faiss, resampling, hierarchy, water-filling sampler, review."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2_data.cluster import (
    REVIEW_SCHEMA,
    ClusterAnnotation,
    ClusterHierarchy,
    HierarchicalKMeansConfig,
    LevelConfig,
    annotate_clusters,
    assign,
    balanced_sample,
    component_coverage,
    drop_clusters,
    flagged_clusters,
    hierarchical_allocation,
    hierarchical_kmeans,
    kmeans,
    long_tailed_mixture,
    nearest_to_centroids,
    resample_centroids,
    review_table,
    water_fill,
)


def _blobs(seed, groups=4, per_group=5, size=40, spread=0.001):
    """Two-level blobs on an orthonormal basis: group g is 3 e_g, its sub-blob j adds e_(G+j).

    Sub-blobs of a group are sqrt(2) apart, groups more than 4, noise norm about ``spread``
    times sqrt(dim): separated enough that k-means has no other sensible local optimum.
    """
    rng = np.random.default_rng(seed)
    dim = groups * (1 + per_group)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    tops = 3.0 * basis[:groups]
    subs = basis[groups:].reshape(groups, per_group, dim)
    centres = (tops[:, None, :] + subs).reshape(groups * per_group, dim)
    label = np.repeat(np.arange(groups * per_group), size)
    x = centres[label] + spread * rng.standard_normal((len(label), dim))
    return x.astype(np.float32), label, label // per_group


def _unit64(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pure(pred, truth):
    """Every predicted cluster holds one true label and every true label one cluster."""
    pairs = set(zip(pred.tolist(), truth.tolist(), strict=True))
    return len(pairs) == len(set(pred.tolist())) == len(set(truth.tolist()))


# ---------------------------------------------------------------- k-means and assignment


@pytest.mark.parametrize("spherical", [True, False])
def test_assign_matches_float64_nearest_centroid(spherical):
    rng = np.random.default_rng(0)
    x, c = rng.standard_normal((300, 8)), rng.standard_normal((7, 8))
    if spherical:
        x, c = _unit64(x), _unit64(c)
    labels, scores = assign(x.astype(np.float32), c.astype(np.float32), spherical=spherical)
    ref = np.array(
        [
            max(range(7), key=lambda j: x[i] @ c[j])
            if spherical
            else min(range(7), key=lambda j: ((x[i] - c[j]) ** 2).sum())
            for i in range(300)
        ]
    )
    np.testing.assert_array_equal(labels, ref)
    best = (x * c[ref]).sum(1) if spherical else ((x - c[ref]) ** 2).sum(1)
    np.testing.assert_allclose(scores, best, atol=1e-4)


@pytest.mark.parametrize("spherical", [True, False])
def test_kmeans_recovers_separated_blobs_and_labels_are_nearest(spherical):
    x, sub, _ = _blobs(1)
    centroids, labels = kmeans(x, n_clusters=20, spherical=spherical, init="kmeans++", seed=0)
    assert _pure(labels, sub)
    pts = _unit64(x) if spherical else x.astype(np.float64)
    d = ((pts[:, None, :] - centroids[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d.argmin(1))
    if spherical:
        np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)


def test_kmeans_drops_empty_clusters_and_renumbers():
    x = np.repeat(np.eye(3, 6, dtype=np.float32), 10, axis=0)  # 3 distinct points, 10 copies
    centroids, labels = kmeans(x, n_clusters=6, seed=0, init="random")
    assert len(centroids) == 3
    assert set(labels.tolist()) == {0, 1, 2}
    assert _pure(labels, np.repeat(np.arange(3), 10))


def test_kmeans_is_deterministic_and_leaves_input_untouched():
    x, _, _ = _blobs(2)
    before = x.copy()
    a = kmeans(x, n_clusters=12, seed=3)
    b = kmeans(x, n_clusters=12, seed=3)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize(
    ("x", "kwargs", "error", "match"),
    [
        # wrong rank or dtype: our check, or jaxtyping's under the test hook (both TypeError)
        (np.zeros(5, np.float32), {}, TypeError, r"\(n, d\) float|Type-check error"),
        (np.ones((5, 3), np.int64), {}, TypeError, r"\(n, d\) float|Type-check error"),
        (np.full((5, 3), np.nan, np.float32), {}, ValueError, "NaN"),
        (np.zeros((5, 3), np.float32), {}, ValueError, "all-zero rows"),
        (np.ones((5, 3), np.float32), {"n_clusters": 6}, ValueError, "number of points"),
        (np.ones((5, 3), np.float32), {"init": "fancy"}, TypeError, "init|Type-check error"),
    ],
)
def test_kmeans_bad_input_raises_clearly(x, kwargs, error, match):
    with pytest.raises((error, ValueError) if error is TypeError else error, match=match):
        kmeans(x, **{"n_clusters": 2, **kwargs})


# ---------------------------------------------------------------- resampling


def _reference_resample_step(x, centroids, labels, r, spherical):
    """One step with one Lloyd iteration, written from the definition in float64."""
    pts = _unit64(x) if spherical else x.astype(np.float64)
    k = len(centroids)
    chosen, init = [], []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        d = ((pts[members] - centroids[c]) ** 2).sum(1)  # = 2 - 2 cos for unit vectors
        take = members[np.lexsort((members, d))][:r]
        chosen.append(take)
        init.append(pts[take].mean(0))
    init = np.array(init)
    if spherical:
        init = _unit64(init)
    union = pts[np.concatenate(chosen)]
    near = ((union[:, None] - init[None]) ** 2).sum(-1).argmin(1)
    new = np.array([union[near == c].mean(0) for c in range(k)])
    if spherical:
        new = _unit64(new)
    return new, ((pts[:, None] - new[None]) ** 2).sum(-1).argmin(1)


@pytest.mark.parametrize(("spherical", "r"), [(True, 1), (True, 7), (False, 3)])
def test_resampling_step_matches_reference_transcription(spherical, r):
    x, _, _ = _blobs(3, groups=3, per_group=2, size=25, spread=0.1)  # distinct distances
    centroids, labels = kmeans(x, n_clusters=6, spherical=spherical, seed=0)
    got_c, got_l = resample_centroids(
        x, centroids, labels, sample_size=r, n_steps=1, n_iter=1, spherical=spherical
    )
    ref_c, ref_l = _reference_resample_step(x, centroids.astype(np.float64), labels, r, spherical)
    np.testing.assert_allclose(got_c, ref_c, atol=1e-5)
    np.testing.assert_array_equal(got_l, ref_l)


def test_resampling_with_one_sample_snaps_centroids_to_members():
    x, _, _ = _blobs(4, groups=2, per_group=3, size=30)
    centroids, labels = kmeans(x, n_clusters=6, spherical=False, seed=0)
    new_c, _ = resample_centroids(x, centroids, labels, sample_size=1, spherical=False)
    d = ((new_c[:, None, :] - x[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(d, 0.0, atol=1e-6)


# ---------------------------------------------------------------- hierarchy


def test_hierarchy_recovers_two_levels_and_composes_labels():
    x, sub, top = _blobs(5)
    config = HierarchicalKMeansConfig(
        levels=(LevelConfig(n_clusters=20), LevelConfig(n_clusters=4, sample_size=3)),
        init="kmeans++",
    )
    h = hierarchical_kmeans(x, config)
    assert h.n_levels == 2 and h.n_points == len(x)
    assert _pure(h.labels(0), sub) and _pure(h.labels(1), top)
    np.testing.assert_array_equal(h.labels(-1), h.parents[1][h.parents[0]])
    assert h.sizes(1).sum() == len(x) and h.sizes(0).min() > 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: HierarchicalKMeansConfig(levels=()),
        lambda: HierarchicalKMeansConfig(
            levels=(LevelConfig(n_clusters=4), LevelConfig(n_clusters=8))
        ),
        lambda: LevelConfig(n_clusters=0),
        lambda: LevelConfig(n_clusters=3, n_resampling_steps=-1),
    ],
)
def test_config_validation(make):
    with pytest.raises(ValueError):
        make()


def test_level_larger_than_its_input_raises():
    x, _, _ = _blobs(6, groups=2, per_group=2, size=5)
    config = HierarchicalKMeansConfig(levels=(LevelConfig(n_clusters=3), LevelConfig(n_clusters=2)))
    with pytest.raises(ValueError, match="level 0 asks for 3"):
        hierarchical_kmeans(x[:2], config)


# ---------------------------------------------------------------- water filling


def _reference_water_fill(sizes, budget):
    """Rounds of one unit to every cluster that still has points; a short last round goes
    to the first ones. Returns the allocation and the number of full rounds."""
    alloc, rounds = [0] * len(sizes), 0
    while budget > 0:
        want = [i for i, s in enumerate(sizes) if alloc[i] < s]
        if not want:
            break
        for i in want[:budget]:
            alloc[i] += 1
        rounds += budget >= len(want)
        budget -= min(budget, len(want))
    return np.array(alloc), rounds


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=12),
    st.integers(0, 500),
    st.integers(0, 3),
)
def test_water_fill_matches_round_robin_reference(sizes, budget, seed):
    sizes = np.array(sizes)
    alloc = water_fill(sizes, budget, seed=seed)
    ref, rounds = _reference_water_fill(sizes.tolist(), budget)
    # both give every cluster min(size, rounds) and one more unit to the same number of
    # clusters larger than that; only which ones differs (random here, first there)
    np.testing.assert_array_equal(np.minimum(alloc, rounds), np.minimum(sizes, rounds))
    assert (alloc <= np.minimum(sizes, rounds + 1)).all()
    assert alloc.sum() == ref.sum() == min(budget, sizes.sum())
    unfinished = alloc < sizes
    assert (alloc[unfinished] >= alloc.max(initial=0) - 1).all()  # the head is capped


def test_water_fill_hand_case_keeps_tail_and_caps_head():
    # cap c with min(100, c) + 10 + 5 = 45 is c = 30
    assert water_fill(np.array([100, 10, 5]), 45).tolist() == [30, 10, 5]
    assert water_fill(np.array([100, 10, 5]), 1000).tolist() == [100, 10, 5]
    with pytest.raises(ValueError, match="budget"):
        water_fill(np.array([3]), -1)


def _manual_hierarchy():
    # leaves 0,1 under top 0 (sizes 80, 20); leaf 2 under top 1 (10); leaf 3 under top 2 (5)
    leaf = np.repeat(np.arange(4), [80, 20, 10, 5])
    centroids = (np.eye(4, 3, dtype=np.float32), np.eye(3, 3, dtype=np.float32))
    return ClusterHierarchy(centroids, (leaf, np.array([0, 0, 1, 2])), spherical=True)


def test_balanced_allocation_hand_case():
    h = _manual_hierarchy()
    leaves, tops = hierarchical_allocation(h, 45)
    assert tops.tolist() == [30, 10, 5]  # see the hand case above
    assert leaves.tolist() == [15, 15, 10, 5]  # top 0 splits 30 over leaves of 80 and 20
    sample = balanced_sample(h, 45, seed=0)
    assert np.bincount(h.labels(0)[sample], minlength=4).tolist() == [15, 15, 10, 5]


def test_balanced_sample_properties():
    h = _manual_hierarchy()
    eligible = np.ones(h.n_points, bool)
    eligible[80:100] = False  # leaf 1 removed: top 0 now has 80 eligible points, all in leaf 0
    a = balanced_sample(h, 45, seed=1, eligible=eligible)
    assert len(a) == 45 and len(np.unique(a)) == 45 and eligible[a].all()
    np.testing.assert_array_equal(a, balanced_sample(h, 45, seed=1, eligible=eligible))
    assert not np.array_equal(a, balanced_sample(h, 45, seed=2, eligible=eligible))
    assert len(balanced_sample(h, 10_000)) == h.n_points
    scores = np.arange(h.n_points, dtype=np.float64)[::-1].copy()  # prefer high indices
    closest = balanced_sample(h, 45, leaf_scores=scores)
    assert closest[closest < 80].min() == 80 - 15  # the 15 best-scored of leaf 0
    with pytest.raises(ValueError, match="eligible"):
        balanced_sample(h, 5, eligible=np.ones(3, bool))


def test_children_allocations_sum_to_their_parent():
    x, _ = long_tailed_mixture(6000, dim=32, n_components=60, seed=2)
    config = HierarchicalKMeansConfig(
        levels=(LevelConfig(n_clusters=40), LevelConfig(n_clusters=8), LevelConfig(n_clusters=3))
    )
    h = hierarchical_kmeans(x, config)
    allocs = hierarchical_allocation(h, 900, seed=0)
    for lv in range(h.n_levels - 1):
        per_parent = np.bincount(
            h.parents[lv + 1], weights=allocs[lv], minlength=len(allocs[lv + 1])
        )
        np.testing.assert_array_equal(per_parent, allocs[lv + 1])
        assert (allocs[lv] <= h.sizes(lv)).all()
    assert allocs[-1].sum() == 900


# ---------------------------------------------------------------- curation quality


def _coverage_run(spherical, init, resample):
    x, component = long_tailed_mixture(50_000, dim=384, n_components=500, seed=0)
    config = HierarchicalKMeansConfig(
        levels=(
            LevelConfig(n_clusters=200, n_resampling_steps=int(resample), sample_size=10),
            LevelConfig(n_clusters=20, n_resampling_steps=10 * int(resample), sample_size=5),
        ),
        spherical=spherical,
        init=init,
        max_points_per_centroid=64,
    )
    h = hierarchical_kmeans(x, config)
    balanced = component_coverage(component, balanced_sample(h, 5000), n_components=500)
    uniform_idx = np.random.default_rng(0).choice(len(x), 5000, replace=False)
    return balanced, component_coverage(component, uniform_idx, n_components=500), h


def test_balanced_sample_covers_the_long_tail_better_than_uniform():
    (covered, rare), (u_covered, u_rare), h = _coverage_run(True, "afkmc2", True)
    assert covered > u_covered and rare > u_rare
    assert covered >= 490  # uniform misses about 8% of the 500 components
    assert h.sizes(-1).max() < 0.25 * h.n_points  # no catch-all top cluster


def test_euclidean_kmeans_builds_the_catch_all_cluster_this_guards_against():
    (covered, _), (u_covered, _), h = _coverage_run(False, "random", False)
    assert h.sizes(-1).max() > 0.4 * h.n_points and covered < u_covered


# ---------------------------------------------------------------- review hook and drop list


def test_nearest_to_centroids_matches_brute_force_and_pads():
    x, _, _ = _blobs(7, groups=2, per_group=3, size=6, spread=0.1)  # distinct distances
    h = hierarchical_kmeans(
        x, HierarchicalKMeansConfig(levels=(LevelConfig(n_clusters=6), LevelConfig(n_clusters=2)))
    )
    for level in (0, 1):
        near = nearest_to_centroids(x, h, level=level, n_per_cluster=8)
        labels, cents = h.labels(level), h.centroids[level].astype(np.float64)
        for c in range(len(cents)):
            members = np.flatnonzero(labels == c)
            cos = _unit64(x[members]) @ cents[c]
            ref = members[np.lexsort((members, -cos))][:8]
            row = near[c]
            np.testing.assert_array_equal(row[: len(ref)], ref)
            assert (row[len(ref) :] == -1).all()


def test_review_hook_flags_and_drop_list_removes_clusters():
    x, _, _ = _blobs(8, groups=2, per_group=2, size=10)
    h = hierarchical_kmeans(
        x, HierarchicalKMeansConfig(levels=(LevelConfig(n_clusters=4), LevelConfig(n_clusters=2)))
    )
    keys = [f"{'bad' if i < 10 else 'ok'}-{i:03d}" for i in range(len(x))]
    review = review_table(h, keys, nearest_to_centroids(x, h, n_per_cluster=3))
    assert review.schema.equals(REVIEW_SCHEMA) and review.num_rows == 4
    assert review.column("size").to_pylist() == h.sizes(0).tolist()
    seen = []

    def hook(cluster, sample_keys):
        seen.append(cluster)
        bad = all(k.startswith("bad") for k in sample_keys)
        return ClusterAnnotation(name=f"c{cluster}", flagged=bad, reason="bad" if bad else "")

    annotated = annotate_clusters(review, hook)
    assert seen == [0, 1, 2, 3]
    flagged = flagged_clusters(annotated)
    assert flagged.tolist() == [int(h.labels(0)[0])]  # the first 10 points form one leaf
    keep = drop_clusters(h, flagged)
    assert not keep[:10].any() and keep[10:].all()
    sample = balanced_sample(h, 20, eligible=keep)
    assert keep[sample].all()
    with pytest.raises(TypeError, match="ClusterAnnotation"):
        annotate_clusters(review, lambda c, k: "a name")
    with pytest.raises(ValueError, match="drop ids"):
        drop_clusters(h, [7])
    with pytest.raises(ValueError, match="keys has"):
        review_table(h, keys[:3], nearest_to_centroids(x, h))
    assert isinstance(annotated, pa.Table) and annotated.column("name").to_pylist()[0] == "c0"
