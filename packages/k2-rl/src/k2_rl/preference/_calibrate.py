"""Calibrate judges on human-labelled pairs: a Bradley-Terry temperature and a margin threshold each.

Records are JSON lines {"prompt", "image_a", "image_b", "preference": "a" | "b"}; a
score lookup gives each judge's reward for an image. Per judge k, T_k is the maximum
likelihood temperature of P(a ≻ b) = σ((r_a - r_b)/T_k), and δ_k is the smallest margin
on that scale above which the judge agrees with the humans often enough. Both feed
`build_preference_pairs`. This is k2's proposal (rl.md §1.4), not the report's method.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

ScoreLookup = (
    Callable[[str, str], Sequence[float] | Tensor] | Mapping[str, Sequence[float] | Tensor]
)
"""Scores of one image under every judge: lookup(prompt, image) or mapping[image]."""


@dataclass(frozen=True, kw_only=True)
class JudgeCalibration:
    """Per-judge temperatures and thresholds fitted on human-labelled pairs.

    Attributes:
        temperatures: [j] Bradley-Terry temperature T_k (inf: the judge does not
            agree with the humans better than chance, so it is muted).
        thresholds: [j] margin δ_k on the scaled margin (r_a - r_b)/T_k (inf: no
            threshold reached the requested precision).
        precision: [j] agreement with the humans on the labelled pairs the judge votes
            on at its threshold (nan where the threshold is inf).
        coverage: [j] fraction of labelled pairs on which the judge votes.
        n_pairs: number of labelled pairs used.
    """

    temperatures: Tensor
    thresholds: Tensor
    precision: Tensor
    coverage: Tensor
    n_pairs: int


def read_preference_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read human-labelled pairs, one JSON object per non-blank line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _parse(records: Iterable[Mapping[str, Any] | str]) -> list[tuple[str, str, str, bool]]:
    out = []
    for n, rec in enumerate(records):
        row = json.loads(rec) if isinstance(rec, str) else rec
        missing = [k for k in ("prompt", "image_a", "image_b", "preference") if k not in row]
        if missing:
            raise ValueError(
                f"record {n} lacks {missing}; each record needs prompt, image_a, image_b, preference"
            )
        if row["preference"] not in ("a", "b"):
            raise ValueError(
                f"record {n} has preference={row['preference']!r}; it must be 'a' or 'b' "
                "(drop ties before calibrating)"
            )
        out.append((row["prompt"], row["image_a"], row["image_b"], row["preference"] == "a"))
    if not out:
        raise ValueError("no labelled pairs were given; pass at least one record")
    return out


def _bt_objective(u: float, x: Tensor, ridge: float) -> float:
    return float(torch.nn.functional.logsigmoid(u * x).sum()) - 0.5 * ridge * u * u


def fit_bt_temperature(
    diffs: Float[Tensor, " n"],
    prefers_first: Bool[Tensor, " n"],
    *,
    ridge: float = 1e-3,
    max_iter: int = 100,
) -> float:
    """Maximum-likelihood T of the Bradley-Terry model P(a ≻ b) = σ((r_a - r_b)/T).

    The log-likelihood is concave in u = 1/T (a one-coefficient logistic regression), so
    damped Newton steps on u converge; u is constrained to u >= 0 (a judge that
    disagrees with the humans is muted, T = inf, instead of having its sign flipped). The
    margins are rescaled to unit RMS first and a ridge ½·ρ·u² keeps T > 0 on separable
    data.

    Args:
        diffs: [n] judge score of image a minus image b.
        prefers_first: [n] True where the humans preferred image a.
        ridge: ρ > 0 on u in the rescaled units.
        max_iter: Newton iterations (a handful suffice).

    Returns:
        T > 0, or inf when u = 0 maximises the likelihood.

    References:
        Bradley & Terry 1952; rl.md §1.4 (per-reward temperatures fitted on human pairs).
    """
    d = diffs.detach().to("cpu", torch.float64)
    scale = float(d.square().mean().sqrt())
    if not math.isfinite(scale):
        raise ValueError("diffs contain non-finite scores; rescore or drop those images")
    if scale == 0.0:
        return math.inf
    # x = y·d: the likelihood only sees the judge's margin signed by the human label.
    x = torch.where(prefers_first.detach().cpu(), d, -d) / scale
    if float(x.sum()) <= 0.0:  # the slope at u = 0 is Σx/2: the optimum over u >= 0 is 0
        return math.inf
    u = 0.0
    for _ in range(max_iter):
        p = torch.sigmoid(u * x)
        grad = float((x * (1 - p)).sum()) - ridge * u
        hess = -float((x * x * p * (1 - p)).sum()) - ridge
        step = -grad / hess
        f0 = _bt_objective(u, x, ridge)
        while step != 0.0 and _bt_objective(u + step, x, ridge) < f0:
            step /= 2  # damping: a Newton step can overshoot a logistic likelihood
        u += step
        if abs(step) <= 1e-12 * (1.0 + abs(u)):
            break
    return scale / u if u > 0 else math.inf


def fit_margin_threshold(
    margins: Float[Tensor, " n"],
    prefers_first: Bool[Tensor, " n"],
    *,
    precision: float = 0.8,
    min_pairs: int = 10,
) -> tuple[float, float, float]:
    """Smallest δ >= 0 such that, on pairs with |margin| > δ, the judge's sign agrees with the humans ≥ `precision`.

    Candidates are 0 and every observed |margin| (they give every distinct set of voted
    pairs); a candidate counts only if the judge votes on at least `min_pairs` pairs.

    Args:
        margins: [n] temperature-scaled judge margins (r_a - r_b)/T.
        prefers_first: [n] True where the humans preferred image a.
        precision: required agreement in (0, 1].
        min_pairs: the fewest voted pairs a threshold may rest on.

    Returns:
        (δ, achieved precision, coverage); (inf, nan, 0.0) when no δ reaches `precision`.

    References:
        rl.md §1.4 (fit δ on human pairs so accepted synthetic pairs match human agreement).
    """
    if not (0.0 < precision <= 1.0):
        raise ValueError(f"precision={precision!r} must lie in (0, 1], e.g. 0.8")
    if min_pairs < 1:
        raise ValueError(f"min_pairs={min_pairs!r} must be >= 1")
    m = margins.detach().to("cpu", torch.float64)
    agree = (m > 0) == prefers_first.detach().cpu()
    size = m.abs()
    for delta in [0.0, *sorted(set(size.tolist()))]:
        voted = size > delta
        count = int(voted.sum())
        if count < min_pairs:
            break  # larger δ only votes on fewer pairs
        achieved = float(agree[voted].double().mean())
        if achieved >= precision:
            return delta, achieved, count / len(m)
    return math.inf, math.nan, 0.0


def calibrate_judges(
    records: Iterable[Mapping[str, Any] | str],
    scores: ScoreLookup,
    *,
    precision: float = 0.8,
    min_pairs: int = 10,
    ridge: float = 1e-3,
) -> JudgeCalibration:
    """Fit each judge's Bradley-Terry temperature and margin threshold on human-labelled pairs.

    Args:
        records: dicts or JSON lines {"prompt", "image_a", "image_b", "preference": "a"|"b"}
            (see `read_preference_jsonl`).
        scores: lookup(prompt, image) -> [j] scores, or a mapping image -> [j] scores.
        precision: agreement with the humans each judge must reach above its threshold.
        min_pairs: the fewest labelled pairs a threshold may rest on.
        ridge: see `fit_bt_temperature`.

    Returns:
        JudgeCalibration; pass .temperatures and .thresholds to `build_preference_pairs`.

    References:
        Bradley & Terry 1952; Krea 2 report, "Preference optimization" (a calibration
        stage on in-house human annotations); rl.md §1.4.
    """
    parsed = _parse(records)

    def lookup(prompt: str, image: str) -> Tensor:
        try:
            got = scores(prompt, image) if callable(scores) else scores[image]
        except KeyError as err:
            raise ValueError(f"no judge scores for image {image!r}; score it first") from err
        return torch.as_tensor(got, dtype=torch.float64).flatten()

    diffs, labels = [], []
    for prompt, a, b, first in parsed:
        sa, sb = lookup(prompt, a), lookup(prompt, b)
        if diffs and (sa.shape != diffs[0].shape or sb.shape != diffs[0].shape):
            raise ValueError(
                f"scores for {a!r}/{b!r} have {sa.numel()}/{sb.numel()} judges but earlier "
                f"images have {diffs[0].numel()}; every image needs every judge's score"
            )
        diffs.append(sa - sb)
        labels.append(first)
    d = torch.stack(diffs)
    y = torch.tensor(labels)
    temps, thr, prec, cov = [], [], [], []
    for k in range(d.shape[1]):
        temp = fit_bt_temperature(d[:, k], y, ridge=ridge)
        delta, achieved, coverage = fit_margin_threshold(
            d[:, k] / temp, y, precision=precision, min_pairs=min_pairs
        )
        temps.append(temp)
        thr.append(delta)
        prec.append(achieved)
        cov.append(coverage)
    f64 = torch.float64
    return JudgeCalibration(
        temperatures=torch.tensor(temps, dtype=f64),
        thresholds=torch.tensor(thr, dtype=f64),
        precision=torch.tensor(prec, dtype=f64),
        coverage=torch.tensor(cov, dtype=f64),
        n_pairs=len(parsed),
    )
