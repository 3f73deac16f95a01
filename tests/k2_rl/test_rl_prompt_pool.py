"""Prompt pool: statistics, retirement and re-probes on scripted reward streams, weights, determinism."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from k2_rl.grpo import PromptPool, PromptPoolConfig

F64 = torch.float64


def _r(*rows):
    return torch.tensor(rows, dtype=F64)


def _pool(n=4, **kw):
    return PromptPool([f"prompt {i}" for i in range(n)], config=PromptPoolConfig(**kw))


def test_running_statistics_match_a_reference_over_the_whole_stream():
    pool = _pool(1, ema_decay=0.25)
    stream = [[0.1, 0.9, 0.4], [0.7, 0.2, 0.6], [1.0, 0.0, 0.5]]
    for step, row in enumerate(stream):
        pool.update([0], _r(row), step=step)
    flat = [x for row in stream for x in row]
    mean = sum(flat) / len(flat)
    row = pool.to_rows()[0]
    assert row["visits"] == 3 and row["count"] == 9 and row["last_step"] == 2
    assert math.isclose(row["mean"], mean, rel_tol=1e-12)
    assert math.isclose(row["var"], sum((x - mean) ** 2 for x in flat) / 9, rel_tol=1e-12)
    assert math.isclose(row["success_rate"], sum(x >= 0.5 for x in flat) / 9)
    stds = [math.sqrt(sum((x - sum(r) / 3) ** 2 for x in r) / 3) for r in stream]
    ema = stds[0]
    for s in stds[1:]:
        ema = 0.25 * ema + 0.75 * s
    assert math.isclose(row["recent_std"], ema, rel_tol=1e-12)


def test_scripted_streams_retire_saturated_impossible_and_flat_prompts():
    pool = _pool(4, retire_after=2)
    always, never, mixed = [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]
    pool.update([0, 1, 2], _r(always, never, mixed), step=0)
    assert [pool.status(i) for i in range(3)] == ["active"] * 3  # one group is not enough
    pool.update([0, 1, 2], _r(always, never, mixed), step=1)
    assert [pool.status(i) for i in range(3)] == ["saturated", "impossible", "active"]
    # A streak broken by an informative group starts again from zero.
    pool.update([3, 3, 3], _r(always, mixed, always), step=2)
    assert pool.status(3) == "active"
    pool.update([3], _r(always), step=3)
    assert pool.status(3) == "saturated"
    # Continuous rewards without a threshold: only zero variance retires.
    flat = _pool(2, success_threshold=None, retire_after=1)
    flat.update([0, 1], _r([0.7, 0.7, 0.7], [0.9, 0.95, 1.0]), step=0)
    assert flat.status(0) == "zero_variance" and flat.status(1) == "active"
    assert math.isnan(flat.to_rows()[0]["success_rate"])


def test_reprobe_reactivates_learnable_prompts_and_rearms_the_rest():
    pool = _pool(3, retire_after=1, reprobe_every=10, reprobe_fraction=0.5)
    pool.update([0, 1], _r([1.0, 1.0], [0.0, 0.0]), step=2)
    assert pool.status(0) == "saturated" and pool.status(1) == "impossible"
    assert pool.due_for_reprobe(step=11) == []
    assert pool.due_for_reprobe(step=12) == [0, 1]  # same retirement step: index order
    picks = pool.sample(2, step=12, generator=torch.Generator().manual_seed(0))
    assert picks[0] == 0 and len(picks) == 2  # ceil(0.5·2) = 1 slot for re-probes
    pool.update([1], _r([0.0, 1.0]), step=12)  # the policy now solves prompt 1 sometimes
    assert pool.status(1) == "active" and pool.to_rows()[1]["retired_step"] is None
    pool.update([0], _r([1.0, 1.0]), step=13)  # still saturated: one more interval
    assert pool.status(0) == "saturated" and pool.to_rows()[0]["retired_step"] == 13
    assert pool.due_for_reprobe(step=22) == [] and pool.due_for_reprobe(step=23) == [0]
    never = _pool(1, retire_after=1, reprobe_every=None)
    never.update([0], _r([1.0, 1.0]), step=0)
    assert never.due_for_reprobe(step=10**9) == []


def test_weights_follow_the_documented_formula_and_order():
    pool = _pool(6, weight_floor=0.01, unseen_weight=None)
    pool.update(
        [0, 1, 2, 3],
        _r([1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]),
        step=0,
    )
    w = pool.weights()
    std_q = math.sqrt(0.25 * 0.75)
    expected = [0.01 + 0.5 * 1.0, 0.01 + std_q * 0.75, 0.01 + std_q * 0.75, 0.01 + 0.0]
    torch.testing.assert_close(w[:4], torch.tensor(expected, dtype=F64))
    assert w[4] == w[5] == max(expected)  # unseen prompts: explored at the best seen weight
    assert w[0] > w[1] == w[2] > w[3]  # middling success first, saturated last
    # Continuous rewards: more spread, more weight; success_power = 0 ignores the rate.
    cont = _pool(3, success_threshold=None, weight_floor=0.0, unseen_weight=2.0)
    cont.update([0, 1], _r([0.4, 0.6], [0.1, 0.9]), step=0)
    torch.testing.assert_close(cont.weights(), torch.tensor([0.1, 0.4, 2.0], dtype=F64))
    flat = _pool(2, success_power=0.0, weight_floor=0.0)
    flat.update([0, 1], _r([1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]), step=0)
    torch.testing.assert_close(flat.weights(), torch.tensor([0.5, std_q], dtype=F64))


def test_retired_prompts_get_zero_weight_and_are_never_drawn_until_due():
    pool = _pool(4, retire_after=1, reprobe_every=100)
    pool.update([0, 1], _r([1.0, 1.0], [0.0, 0.0]), step=0)
    assert pool.weights()[:2].tolist() == [0.0, 0.0]
    g = torch.Generator().manual_seed(0)
    drawn = {i for _ in range(50) for i in pool.sample(2, step=1, generator=g)}
    assert drawn == {2, 3}


def test_sampling_is_deterministic_and_favours_heavy_prompts():
    def build():
        pool = _pool(5, weight_floor=0.0, unseen_weight=0.05)
        pool.update([0, 1], _r([1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]), step=0)
        return pool

    a, b = build(), build()
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [a.sample(3, step=1, generator=ga) for _ in range(5)] == [
        b.sample(3, step=1, generator=gb) for _ in range(5)
    ]
    counts = [0] * 5
    g = torch.Generator().manual_seed(4)
    for _ in range(400):
        counts[a.sample(1, step=1, generator=g)[0]] += 1
    w = a.weights()
    assert w[0] > w[1] > w[3] and counts[0] > counts[1] > counts[3]
    picks = a.sample(4, step=1, generator=g)
    assert len(set(picks)) == 4  # without replacement while enough prompts have weight


def test_sampling_fills_with_replacement_or_fails_clearly():
    pool = _pool(3, retire_after=1, reprobe_every=50)
    pool.update([0, 1], _r([1.0, 1.0], [0.0, 0.0]), step=0)
    picks = pool.sample(4, step=1, generator=torch.Generator().manual_seed(0))
    assert picks == [2, 2, 2, 2]
    pool.update([2], _r([0.0, 0.0]), step=1)
    with pytest.raises(RuntimeError, match="no prompt to sample"):
        pool.sample(1, step=2)
    assert pool.sample(1, step=50) == [0]  # a due re-probe is still available


def test_export_rows_csv_arrow_and_state_round_trip(tmp_path):
    pool = _pool(3, retire_after=1)
    pool.update([0, 2], _r([1.0, 1.0], [0.2, 0.8]), step=5)
    rows = pool.to_rows()
    assert [r["status"] for r in rows] == ["saturated", "active", "active"]
    assert rows[1]["visits"] == 0 and math.isnan(rows[1]["mean"])
    pool.to_csv(tmp_path / "pool.csv")
    with (tmp_path / "pool.csv").open() as f:
        read = list(csv.DictReader(f))
    assert [r["prompt"] for r in read] == ["prompt 0", "prompt 1", "prompt 2"]
    assert float(read[2]["mean"]) == pytest.approx(0.5)
    import pyarrow as pa

    table = pool.to_arrow()
    assert (
        isinstance(table, pa.Table) and table.num_rows == 3 and "recent_std" in table.column_names
    )
    clone = _pool(3, retire_after=1)
    clone.load_state_dict(pool.state_dict())
    assert clone.to_rows()[0] == rows[0] and clone.status(0) == "saturated"
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert clone.sample(2, step=6, generator=ga) == pool.sample(2, step=6, generator=gb)
    with pytest.raises(ValueError, match="prompts differ"):
        _pool(2).load_state_dict(pool.state_dict())


def test_bad_configs_and_updates_raise_clear_errors():
    with pytest.raises(ValueError, match="saturated_rate"):
        PromptPoolConfig(impossible_rate=0.6, saturated_rate=0.5)
    with pytest.raises(ValueError, match="retire_after"):
        PromptPoolConfig(retire_after=0)
    with pytest.raises(ValueError, match="reprobe_every"):
        PromptPoolConfig(reprobe_every=0)
    with pytest.raises(ValueError, match="ema_decay"):
        PromptPoolConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="at least one"):
        PromptPool([])
    pool = _pool(2)
    with pytest.raises(ValueError, match="group size"):
        pool.update([0], _r([1.0]), step=0)
    with pytest.raises(ValueError, match="len"):
        pool.update([0, 1], _r([1.0, 0.0]), step=0)
    with pytest.raises(ValueError, match="NaN"):
        pool.update([0], _r([1.0, math.nan]), step=0)
    with pytest.raises(IndexError, match="out of range"):
        pool.update([5], _r([1.0, 0.0]), step=0)
    with pytest.raises(ValueError, match="n="):
        pool.sample(0, step=0)
