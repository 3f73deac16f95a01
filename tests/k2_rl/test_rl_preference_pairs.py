"""Delta-learning pair builder and judge calibration, on hand-checked cases and synthetic BT data."""

from __future__ import annotations

import contextlib
import json
import math
import random

import jaxtyping
import pytest
import torch

from k2_rl.preference import (
    build_preference_pairs,
    calibrate_judges,
    fit_bt_temperature,
    fit_margin_threshold,
    read_preference_jsonl,
)


@contextlib.contextmanager
def _no_jaxtyping():
    old = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", old)


def _as_tuples(pairs):
    return [
        (r["winner"], r["loser"], r["kind"], r["group"], r["margin"], r["agreement"])
        for r in pairs.rows()
    ]


def _assert_pairs(pairs, expected):
    got = _as_tuples(pairs)
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    for g, e in zip(got, expected, strict=True):
        assert g[4] == pytest.approx(e[4])
        assert g[5] == pytest.approx(e[5])


# ----------------------------------------------------------------------------------------
# Hand-checked filter cases


def test_single_judge_case_by_hand():
    # group 0: on-policy 0.9, 0.1, 0.5; weak 0.3; curated 0.95
    # group 1: a weak sample only; group 2: one on-policy 0.4, a curated 0.4, a weak 0.7
    rewards = torch.tensor([[0.9], [0.1], [0.5], [0.3], [0.95], [0.2], [0.4], [0.4], [0.7]])
    sources = ["on_policy"] * 3 + ["weak", "curated", "weak", "on_policy", "curated", "weak"]
    groups = [0, 0, 0, 0, 0, 1, 2, 2, 2]
    pairs = build_preference_pairs(rewards, sources, groups)
    _assert_pairs(
        pairs,
        [
            (0, 1, "within_group", 0, 0.8, 1.0),  # best 0.9 vs worst 0.1
            (0, 3, "vs_weak", 0, 0.6, 1.0),  # weak vs the best on-policy
            (4, 1, "vs_curated", 0, 0.85, 1.0),  # curated vs the worst on-policy
            (8, 6, "vs_weak", 2, 0.3, 1.0),  # the weak sample wins this one
        ],
    )
    # group 1 and group 2 cannot make a within-group pair; group 1's weak sample has no
    # on-policy partner; group 2's curated sample ties its partner (no judge votes).
    assert pairs.rejected == {
        "judges_disagree": 0,
        "below_threshold": 1,
        "too_few_on_policy": 2,
        "no_on_policy": 1,
    }
    assert pairs.kept_by_kind() == {"within_group": 1, "vs_weak": 2, "vs_curated": 1}
    assert len(pairs) == 4


def _three_judge_case():
    # T = (1, 2, 0.5), δ = (0.1, 0.1, 0.5). Scaled rewards r/T are in the comments.
    rewards = torch.tensor(
        [
            [1.0, 2.0, 0.5],  # 0 on  g0 -> (1.0, 1.0, 1.0), mean 1.0
            [0.5, 1.6, 0.3],  # 1 on  g0 -> (0.5, 0.8, 0.6), mean 0.633
            [0.2, 2.4, 0.4],  # 2 weak g0 -> (0.2, 1.2, 0.8)
            [0.0, 0.4, 0.1],  # 3 cur g0 -> (0.0, 0.2, 0.2)
            [2.0, 4.0, 1.5],  # 4 on  g1 -> (2, 2, 3)
            [0.0, 0.0, 0.0],  # 5 on  g1 -> (0, 0, 0)
            [3.0, 6.0, 2.0],  # 6 weak g1 -> (3, 3, 4)
        ],
        dtype=torch.float64,
    )
    sources = ["on_policy", "on_policy", "weak", "curated", "on_policy", "on_policy", "weak"]
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    temps = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    thr = torch.tensor([0.1, 0.1, 0.5], dtype=torch.float64)
    return rewards, sources, groups, temps, thr


def test_three_judges_all_versus_majority_by_hand():
    rewards, sources, groups, temps, thr = _three_judge_case()
    # g0 within (0 vs 1): margins (0.5, 0.2, 0.4) -> votes (0, 0, abstain): 2 of 3.
    # g0 weak (2 vs best 0): margins (0.8, -0.2, 0.2) -> votes (0, 2, abstain): conflict.
    # g0 curated (3 vs worst 1): margins (0.5, 0.6, 0.4) -> votes (1, 1, abstain): 2 of 3.
    # g1 within (4 vs 5): margins (2, 2, 3) -> unanimous for 4.
    # g1 weak (6 vs best 4): margins (-1, -1, -1) -> unanimous for the weak sample 6.
    both = [(4, 5, "within_group", 1, 7 / 3, 1.0), (6, 4, "vs_weak", 1, 1.0, 1.0)]
    all_ = build_preference_pairs(
        rewards, sources, groups, temperatures=temps, thresholds=thr, agreement="all"
    )
    _assert_pairs(all_, both)
    assert all_.rejected == {
        "judges_disagree": 1,
        "below_threshold": 2,
        "too_few_on_policy": 0,
        "no_on_policy": 0,
    }
    maj = build_preference_pairs(
        rewards, sources, groups, temperatures=temps, thresholds=thr, agreement="majority"
    )
    _assert_pairs(
        maj,
        [
            (0, 1, "within_group", 0, (0.5 + 0.2 + 0.4) / 3, 2 / 3),
            (1, 3, "vs_curated", 0, 0.5, 2 / 3),
            *both,
        ],
    )
    assert maj.rejected["judges_disagree"] == 1
    assert maj.rejected["below_threshold"] == 0


def test_majority_of_four_needs_three_votes_and_muted_judges_abstain():
    # One pair, two on-policy candidates; judge margins of 0 over 1 are (+1, +1, -1, +1).
    rewards = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    sources, groups = ["on_policy", "on_policy"], [7, 7]
    maj = build_preference_pairs(rewards, sources, groups, agreement="majority")
    _assert_pairs(maj, [(0, 1, "within_group", 7, 0.5, 0.75)])
    # Muting judge 0 (T = inf) leaves 2 votes for 0 and 1 for 1: 2 < 3, a conflict.
    muted = torch.tensor([math.inf, 1.0, 1.0, 1.0])
    maj2 = build_preference_pairs(
        rewards, sources, groups, temperatures=muted, agreement="majority"
    )
    assert len(maj2) == 0 and maj2.rejected["judges_disagree"] == 1
    # Unanimity is impossible with a muted judge: it always abstains.
    agree = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    none = build_preference_pairs(
        agree, sources, groups, temperatures=torch.tensor([1.0, math.inf])
    )
    assert len(none) == 0 and none.rejected["below_threshold"] == 1


def test_ties_and_threshold_edges():
    # All on-policy rewards equal: the best is the first, the worst the last; nobody votes.
    tie = build_preference_pairs(torch.full((3, 1), 0.5), ["on_policy"] * 3, [0, 0, 0])
    assert len(tie) == 0 and tie.rejected["below_threshold"] == 1
    # Ties for best go to the first candidate, ties for worst to the last; weak samples
    # meet the best, curated ones the worst.
    rewards = torch.tensor([[0.9], [0.9], [0.1], [0.1], [0.5], [0.6]])
    sources = ["on_policy"] * 4 + ["weak", "curated"]
    _assert_pairs(
        build_preference_pairs(rewards, sources, [0] * 6),
        [
            (0, 3, "within_group", 0, 0.8, 1.0),
            (0, 4, "vs_weak", 0, 0.4, 1.0),
            (5, 3, "vs_curated", 0, 0.5, 1.0),
        ],
    )
    # A margin equal to the threshold does not clear it (strict), just above does.
    rewards = torch.tensor([[1.0], [0.75]], dtype=torch.float64)
    at = build_preference_pairs(
        rewards, ["on_policy"] * 2, [0, 0], thresholds=torch.tensor([0.25], dtype=torch.float64)
    )
    assert len(at) == 0
    above = build_preference_pairs(
        rewards, ["on_policy"] * 2, [0, 0], thresholds=torch.tensor([0.2], dtype=torch.float64)
    )
    _assert_pairs(above, [(0, 1, "within_group", 0, 0.25, 1.0)])


def test_kinds_can_be_switched_off():
    rewards = torch.tensor([[0.9], [0.1], [0.3], [0.95]])
    sources = ["on_policy", "on_policy", "weak", "curated"]
    only_weak = build_preference_pairs(rewards, sources, [0] * 4, kinds=("vs_weak",))
    _assert_pairs(only_weak, [(0, 2, "vs_weak", 0, 0.6, 1.0)])
    assert sum(only_weak.rejected.values()) == 0


def test_every_pair_has_an_on_policy_sample_and_every_candidate_pair_is_counted():
    rng = random.Random(0)
    for trial in range(60):
        n, j = rng.randint(1, 14), rng.randint(1, 4)
        gen = torch.Generator().manual_seed(trial)
        rewards = torch.randn(n, j, generator=gen).round(decimals=1)  # rounding makes ties
        sources = [rng.choice(["on_policy", "on_policy", "weak", "curated"]) for _ in range(n)]
        groups = [rng.randint(0, 3) for _ in range(n)]
        thr = torch.rand(j, generator=gen) * 0.5
        agreement = rng.choice(["all", "majority"])
        pairs = build_preference_pairs(
            rewards, sources, groups, thresholds=thr, agreement=agreement
        )
        for w, lo, kind, g, margin, agree in _as_tuples(pairs):
            assert "on_policy" in (sources[w], sources[lo])
            assert w != lo and groups[w] == groups[lo] == g
            if kind == "within_group":
                assert sources[w] == sources[lo] == "on_policy"
            # The winner's side got the votes: for every judge, a vote is a margin past δ.
            votes = sum(float(rewards[w, k] - rewards[lo, k]) > float(thr[k]) for k in range(j))
            assert agree == pytest.approx(votes / j)
            assert votes == j if agreement == "all" else votes > j / 2
            if agreement == "all":
                assert margin > 0  # (a majority can be outvoted in size by a strong dissenter)
        # Accounting: one decision per candidate pair, one count per impossible one.
        on = {
            g: sum(1 for s, gg in zip(sources, groups, strict=True) if gg == g and s == "on_policy")
            for g in set(groups)
        }
        off = [g for s, g in zip(sources, groups, strict=True) if s != "on_policy"]
        considered = sum(1 for g in on if on[g] >= 2) + sum(1 for g in off if on[g] > 0)
        r = pairs.rejected
        assert len(pairs) + r["judges_disagree"] + r["below_threshold"] == considered
        assert r["too_few_on_policy"] == sum(1 for g in on if on[g] < 2)
        assert r["no_on_policy"] == sum(1 for g in off if on[g] == 0)
        if agreement == "majority":
            strict = build_preference_pairs(
                rewards, sources, groups, thresholds=thr, agreement="all"
            )
            assert set(_as_tuples(strict)) <= set(_as_tuples(pairs))


def test_pair_builder_rejects_bad_input_with_the_fix():
    r = torch.rand(3, 2)
    with pytest.raises(ValueError, match="one source tag and one group id"):
        build_preference_pairs(r, ["on_policy"] * 2, [0, 0, 0])
    with pytest.raises(ValueError, match="unknown source tags"):
        build_preference_pairs(r, ["on_policy", "policy", "weak"], [0, 0, 0])
    with pytest.raises(ValueError, match="not finite"):
        build_preference_pairs(torch.tensor([[1.0], [math.nan]]), ["on_policy"] * 2, [0, 0])
    with pytest.raises(ValueError, match="temperatures"):
        build_preference_pairs(
            r, ["on_policy"] * 3, [0] * 3, temperatures=torch.tensor([1.0, -1.0])
        )
    with pytest.raises(ValueError, match="thresholds"):
        build_preference_pairs(r, ["on_policy"] * 3, [0] * 3, thresholds=torch.tensor([-0.1, 0.0]))
    with pytest.raises(ValueError, match="unknown pair kinds"):
        build_preference_pairs(r, ["on_policy"] * 3, [0] * 3, kinds=("within",))
    with _no_jaxtyping():
        with pytest.raises(ValueError, match="n_candidates, n_judges"):
            build_preference_pairs(torch.rand(3), ["on_policy"] * 3, [0] * 3)
        with pytest.raises(ValueError, match="'all' or 'majority'"):
            build_preference_pairs(r, ["on_policy"] * 3, [0] * 3, agreement="most")


# ----------------------------------------------------------------------------------------
# Calibration


def _bt_labels(quality_a, quality_b, gen):
    # Human prefers a with probability σ(q_a - q_b): the Bradley-Terry model.
    return torch.rand(len(quality_a), generator=gen, dtype=torch.float64) < torch.sigmoid(
        quality_a - quality_b
    )


@pytest.mark.parametrize("true_t", [0.5, 3.0])
def test_bt_temperature_is_recovered_from_synthetic_labels(true_t):
    gen = torch.Generator().manual_seed(int(true_t * 10))
    qa, qb = (1.5 * torch.randn(4000, generator=gen, dtype=torch.float64) for _ in range(2))
    y = _bt_labels(qa, qb, gen)
    # A judge whose score is T·q has P(a ≻ b) = σ((s_a - s_b)/T) exactly.
    fitted = fit_bt_temperature(true_t * (qa - qb), y)
    assert fitted == pytest.approx(true_t, rel=0.1)


def test_bt_temperature_maximises_the_likelihood():
    gen = torch.Generator().manual_seed(3)
    d = torch.randn(200, generator=gen, dtype=torch.float64)
    y = _bt_labels(2.0 * d, torch.zeros(200, dtype=torch.float64), gen)

    def loglik(temp):
        return sum(
            -math.log1p(math.exp(-(float(d[i]) if y[i] else -float(d[i])) / temp))
            for i in range(200)
        )

    fitted = fit_bt_temperature(d, y, ridge=0.0)
    grid = [0.05 * k for k in range(2, 80)]
    best = max(grid, key=loglik)
    assert fitted == pytest.approx(best, abs=0.05)
    assert loglik(fitted) >= loglik(best) - 1e-9


def test_bt_temperature_edge_cases():
    d = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    # A judge that always disagrees with the humans is muted, not sign-flipped.
    assert fit_bt_temperature(d, d < 0) == math.inf
    assert fit_bt_temperature(torch.zeros(4, dtype=torch.float64), d > 0) == math.inf
    # Perfectly separable labels: the ridge keeps T finite and positive.
    t = fit_bt_temperature(d, d > 0)
    assert 0 < t < 0.5


def test_margin_threshold_by_hand():
    m = torch.tensor([3.0, -2.5, 2.0, 1.5, -1.0, 0.5, 0.2], dtype=torch.float64)
    y = torch.tensor([True, False, False, True, True, False, True])
    # agree: +, +, -, +, -, -, +.  Voted sets and precision by δ:
    # δ=0: 4/7; 0.2: 3/6; 0.5: 3/5; 1.0: 3/4; 1.5: 2/3; 2.0: 2/2; 2.5: 1/1.
    assert fit_margin_threshold(m, y, precision=0.7, min_pairs=1) == pytest.approx(
        (1.0, 0.75, 4 / 7)
    )
    assert fit_margin_threshold(m, y, precision=0.8, min_pairs=1) == pytest.approx(
        (2.0, 1.0, 2 / 7)
    )
    assert fit_margin_threshold(m, y, precision=0.5, min_pairs=1) == pytest.approx(
        (0.0, 4 / 7, 1.0)
    )
    delta, prec, cov = fit_margin_threshold(m, y, precision=0.8, min_pairs=3)
    assert delta == math.inf and math.isnan(prec) and cov == 0.0
    with pytest.raises(ValueError, match="precision"):
        fit_margin_threshold(m, y, precision=0.0)


def _synthetic_records(n, temps, seed):
    gen = torch.Generator().manual_seed(seed)
    quality = {
        f"img{i}": 1.5 * float(torch.randn(1, generator=gen, dtype=torch.float64))
        for i in range(2 * n)
    }
    scores = {k: [t * q for t in temps] for k, q in quality.items()}
    records = []
    for i in range(n):
        a, b = f"img{2 * i}", f"img{2 * i + 1}"
        p = 1 / (1 + math.exp(-(quality[a] - quality[b])))
        pref = "a" if float(torch.rand(1, generator=gen, dtype=torch.float64)) < p else "b"
        records.append(
            json.dumps({"prompt": f"p{i}", "image_a": a, "image_b": b, "preference": pref})
        )
    return records, scores


def test_calibrate_judges_end_to_end(tmp_path):
    records, scores = _synthetic_records(3000, temps=(0.5, 2.0), seed=5)
    path = tmp_path / "human.jsonl"
    path.write_text("\n".join(records) + "\n\n", encoding="utf-8")
    loaded = read_preference_jsonl(path)
    assert len(loaded) == 3000
    cal = calibrate_judges(loaded, scores, precision=0.8, min_pairs=20)
    assert cal.n_pairs == 3000
    torch.testing.assert_close(
        cal.temperatures, torch.tensor([0.5, 2.0], dtype=torch.float64), rtol=0.1, atol=0
    )
    # On the pairs each judge votes on (|scaled margin| > δ) it agrees with the humans at
    # the reported precision, which reaches the requested 0.8, and covers the reported share.
    for k in range(2):
        d = (
            torch.tensor(
                [scores[r["image_a"]][k] - scores[r["image_b"]][k] for r in loaded],
                dtype=torch.float64,
            )
            / cal.temperatures[k]
        )
        y = torch.tensor([r["preference"] == "a" for r in loaded])
        voted = d.abs() > cal.thresholds[k]
        assert float(((d > 0) == y)[voted].double().mean()) == pytest.approx(
            float(cal.precision[k])
        )
        assert cal.precision[k] >= 0.8
        assert float(voted.double().mean()) == pytest.approx(float(cal.coverage[k]))
        assert 0.0 < float(cal.thresholds[k]) < 2.0
    # A callable lookup and raw JSON strings give the same result.
    again = calibrate_judges(
        records, lambda prompt, image: scores[image], precision=0.8, min_pairs=20
    )
    torch.testing.assert_close(again.temperatures, cal.temperatures)
    # The calibration plugs straight into the pair builder.
    pairs = build_preference_pairs(
        torch.tensor([[1.0, 4.0], [0.0, 0.0]]),
        ["on_policy", "weak"],
        [0, 0],
        temperatures=cal.temperatures,
        thresholds=cal.thresholds,
    )
    assert len(pairs) == 1


def test_calibration_rejects_bad_records():
    scores = {"x": [1.0], "y": [0.0], "z": [1.0, 2.0]}
    good = {"prompt": "p", "image_a": "x", "image_b": "y", "preference": "a"}
    with pytest.raises(ValueError, match="lacks \\['preference'\\]"):
        calibrate_judges([{k: v for k, v in good.items() if k != "preference"}], scores)
    with pytest.raises(ValueError, match="drop ties"):
        calibrate_judges([{**good, "preference": "tie"}], scores)
    with pytest.raises(ValueError, match="no judge scores for image 'w'"):
        calibrate_judges([{**good, "image_b": "w"}], scores)
    with pytest.raises(ValueError, match="every judge's score"):
        calibrate_judges([good, {**good, "image_a": "z"}], scores)
    with pytest.raises(ValueError, match="at least one record"):
        calibrate_judges([], scores)
