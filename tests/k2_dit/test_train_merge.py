"""State-dict averaging and PMA (SMA / WMA / EMA) against float64 formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from k2_dit.train import PMA, average_state_dicts, merge_weights, task_arithmetic


def _sd(seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(4, 3, generator=g).to(dtype),
        "b": torch.randn(3, generator=g).to(dtype),
        "steps": torch.tensor(seed, dtype=torch.int64),
    }


def _ref_average(sds, weights):
    total = sum(weights)
    out = {}
    for k in ("w", "b"):
        acc = torch.zeros_like(sds[0][k], dtype=torch.float64)
        for w, sd in zip(weights, sds, strict=True):
            acc = acc + (w / total) * sd[k].double()
        out[k] = acc
    return out


@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.0, 5.0]])
def test_average_matches_float64_reference(weights):
    sds = [_sd(i) for i in range(4)]
    out = average_state_dicts(sds, weights)
    ref = _ref_average(sds, weights or [1.0] * 4)
    for k in ("w", "b"):
        assert out[k].dtype == torch.float32
        torch.testing.assert_close(out[k].double(), ref[k], rtol=1e-6, atol=1e-6)
    assert torch.equal(out["steps"], sds[-1]["steps"])  # integers come from the newest


def test_average_preserves_bf16_and_accumulates_in_float32():
    sds = [_sd(i, torch.bfloat16) for i in range(16)]
    out = average_state_dicts(sds)
    assert out["w"].dtype == torch.bfloat16
    ref = _ref_average(sds, [1.0] * 16)["w"]
    # Within one bf16 rounding of the exact mean (a bf16 running sum would drift further).
    torch.testing.assert_close(out["w"].double(), ref, rtol=2**-8, atol=1e-6)


def test_average_of_identical_dicts_is_identity_and_errors_are_clear():
    sd = _sd(3)
    same = average_state_dicts([sd, sd, sd], [0.2, 0.3, 0.5])
    torch.testing.assert_close(same["w"], sd["w"])
    with pytest.raises(ValueError, match="at least one"):
        average_state_dicts([])
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        average_state_dicts([sd, {"w": sd["w"], "steps": sd["steps"]}])
    with pytest.raises(ValueError, match="shape"):
        average_state_dicts([sd, {**sd, "w": torch.zeros(3, 4)}])
    with pytest.raises(ValueError, match="weights"):
        average_state_dicts([sd, sd], [1.0, -1.0])
    with pytest.raises(ValueError, match="one weight each"):
        average_state_dicts([sd, sd], [1.0])


@pytest.mark.parametrize("method", ["sma", "wma", "ema"])
def test_merge_weights_match_their_definitions(method):
    n, alpha = 5, 0.3
    # Run each rule on scalar "checkpoints" theta_i = e_i (unit vectors) to read off weights.
    thetas = torch.eye(n, dtype=torch.float64)
    if method == "sma":
        merged = thetas.sum(0) / n
    elif method == "wma":
        merged = sum((i + 1) * thetas[i] for i in range(n)) / sum(range(1, n + 1))
    else:
        merged = thetas[0]
        for i in range(1, n):
            merged = alpha * thetas[i] + (1 - alpha) * merged
    w = merge_weights(method, n, ema_alpha=alpha)
    assert w == pytest.approx(merged.tolist(), abs=1e-15)
    assert sum(w) == pytest.approx(1.0)


def test_pma_snapshots_on_schedule_and_averages_the_window():
    model = nn.Linear(3, 2)
    pma = PMA(window=3, interval=10, start_step=20, end_step=80)
    history = {}
    for step in range(100):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * (step + 1))
        if pma.maybe_update(step, model):
            history[step] = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    assert sorted(history) == [20, 30, 40, 50, 60, 70]
    assert pma.steps == [50, 60, 70] and len(pma) == 3
    merged = pma.average()
    for k in ("weight", "bias"):
        ref = (history[50][k] + history[60][k] + history[70][k]) / 3
        torch.testing.assert_close(merged[k].double(), ref)
    fresh = pma.load_into(nn.Linear(3, 2))
    torch.testing.assert_close(fresh.weight, merged["weight"])


def test_pma_ema_matches_recursion_and_snapshots_are_copies():
    pma = PMA(window=4, interval=1, method="ema", ema_alpha=0.25)
    sds = [_sd(i) for i in range(6)]
    for i, sd in enumerate(sds):
        pma.update(sd, step=i)
    sds[-1]["w"].add_(100.0)  # mutating the source must not touch the snapshot
    ref = sds[2]["w"].double()
    for i in (3, 4, 5):
        src = sds[i]["w"].double() - (100.0 if i == 5 else 0.0)
        ref = 0.25 * src + 0.75 * ref
    torch.testing.assert_close(pma.average()["w"].double(), ref, rtol=1e-6, atol=1e-6)


def test_pma_validation():
    with pytest.raises(RuntimeError, match="no snapshots"):
        PMA(window=2, interval=5).average()
    with pytest.raises(ValueError, match="window"):
        PMA(window=0, interval=5)
    with pytest.raises(ValueError, match="interval"):
        PMA(window=2, interval=0)
    with pytest.raises(ValueError, match="end_step"):
        PMA(window=2, interval=1, start_step=10, end_step=10)
    with pytest.raises(ValueError, match="ema_alpha"):
        PMA(window=2, interval=1, method="ema", ema_alpha=0.0)


def _ref_task_arithmetic(base, finetuned, scales):
    # θ_base + Σ_i λ_i (θ_i - θ_base), element by element in float64.
    out = {}
    for k in ("w", "b"):
        b = base[k].double()
        acc = b.clone()
        for lam, sd in zip(scales, finetuned, strict=True):
            acc = acc + lam * (sd[k].double() - b)
        out[k] = acc
    return out


@pytest.mark.parametrize("scales", [[0.3, -0.5, 1.25], [1.0, 1.0, 1.0]])
def test_task_arithmetic_matches_float64_reference(scales):
    base, tuned = _sd(10), [_sd(i) for i in range(3)]
    out = task_arithmetic(base, tuned, scales=scales)
    ref = _ref_task_arithmetic(base, tuned, scales)
    for k in ("w", "b"):
        assert out[k].dtype == torch.float32
        torch.testing.assert_close(out[k].double(), ref[k], rtol=1e-6, atol=1e-6)
    assert torch.equal(out["steps"], base["steps"])  # integers come from the base
    shared = task_arithmetic(base, tuned, scales=0.4)  # one float scales every task vector
    ref = _ref_task_arithmetic(base, tuned, [0.4] * 3)
    torch.testing.assert_close(shared["w"].double(), ref["w"], rtol=1e-6, atol=1e-6)


def test_task_arithmetic_bf16_returns_base_dtype_from_float32_sum():
    base, tuned = _sd(10, torch.bfloat16), [_sd(i, torch.bfloat16) for i in range(2)]
    out = task_arithmetic(base, tuned, scales=[0.7, 0.6])
    assert out["w"].dtype == torch.bfloat16
    ref = _ref_task_arithmetic(base, tuned, [0.7, 0.6])["w"]
    torch.testing.assert_close(out["w"].double(), ref, rtol=2**-8, atol=1e-6)
    # One model at λ = 1 is that model exactly: θ_1 - θ_base of two bf16 numbers is exact in
    # float32, so adding θ_base back recovers θ_1 (a bf16 subtraction would round it away).
    one = task_arithmetic(base, tuned[:1], scales=[1.0])
    assert torch.equal(one["w"], tuned[0]["w"]) and torch.equal(one["b"], tuned[0]["b"])
    bf16_diff = (tuned[0]["w"] - base["w"]) + base["w"]
    assert not torch.equal(bf16_diff, tuned[0]["w"])  # the property above is not free


def test_task_arithmetic_identities():
    base, tuned = _sd(10), [_sd(i) for i in range(3)]
    zero = task_arithmetic(base, tuned, scales=[0.0, 0.0, 0.0])
    assert all(torch.equal(zero[k], base[k]) for k in base)
    one = task_arithmetic(base, tuned[1:2], scales=[1.0])
    torch.testing.assert_close(one["w"], tuned[1]["w"], rtol=0, atol=1e-6)
    # λ_i = w_i / Σ w: the base cancels and this is the weighted average (a model soup).
    w = [1.0, 2.0, 5.0]
    soup = task_arithmetic(base, tuned, scales=[x / sum(w) for x in w])
    avg = average_state_dicts(tuned, w)
    torch.testing.assert_close(soup["w"], avg["w"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(soup["b"], avg["b"], rtol=1e-6, atol=1e-6)


def test_task_arithmetic_errors_are_clear():
    base, tuned = _sd(10), [_sd(i) for i in range(2)]
    with pytest.raises(ValueError, match="at least one"):
        task_arithmetic(base, [], scales=[])
    with pytest.raises(ValueError, match="2 scales for 1 fine-tuned"):
        task_arithmetic(base, tuned[:1], scales=[1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        task_arithmetic(base, tuned, scales=[1.0, float("nan")])
    with pytest.raises(ValueError, match=r"fine-tuned state dict 1 .*missing \['b'\]"):
        task_arithmetic(base, [tuned[0], {"w": base["w"], "steps": base["steps"]}], scales=1.0)
    with pytest.raises(ValueError, match=r"'w' has shape \(3, 4\) in fine-tuned state dict 0"):
        task_arithmetic(base, [{**tuned[0], "w": torch.zeros(3, 4)}], scales=1.0)
