"""Choose a filter threshold on held-out data so that the flagged set reaches a target precision."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from jaxtyping import Bool, Float, Shaped


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """A threshold and what it achieved on the held-out split.

    Args:
        threshold: flag a sample when its score >= threshold.
        precision: TP / flagged at that threshold.
        precision_lower: its Wilson lower confidence bound (what was held to the target).
        recall: TP / positives at that threshold.
        flagged: how many held-out samples it flags.
        positives: held-out positives.
        total: held-out samples.
    """

    threshold: float
    precision: float
    precision_lower: float
    recall: float
    flagged: int
    positives: int
    total: int


def wilson_lower_bound(
    p: Float[np.ndarray, " n"], n: Shaped[np.ndarray, " n"], *, confidence: float
) -> Float[np.ndarray, " n"]:
    """One-sided Wilson score lower bound of a binomial proportion p observed in n trials.

    Args:
        p: observed proportions.
        n: trial counts (>= 1).
        confidence: one-sided confidence level in [0, 1); 0 returns p.

    Returns:
        (p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z the normal quantile.

    References:
        Wilson 1927, "Probable inference, the law of succession, and statistical inference".
    """
    z = NormalDist().inv_cdf(confidence) if confidence > 0 else 0.0
    n = n.astype(np.float64)
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def calibrate_threshold(
    scores: Float[np.ndarray, " n"],
    positive: Bool[np.ndarray, " n"],
    *,
    target_precision: float = 0.95,
    confidence: float = 0.95,
    min_flagged: int = 1,
) -> Calibration:
    """The lowest threshold whose flagged set `scores >= t` reaches the target precision.

    Every distinct score is tried as a cut (precision is not monotonic in the threshold).
    The lowest cut, i.e. the one with the highest recall, whose precision reaches the
    target is returned. Picking the lowest passing cut favours cuts whose held-out precision
    is lucky, so what must reach the target is the one-sided Wilson lower bound at
    `confidence`, not the raw precision: the threshold then holds on unseen data too.
    `confidence=0` compares the raw precision.

    Args:
        scores: classifier scores of the held-out samples.
        positive: their pseudo-labels (True = the class the filter removes).
        target_precision: required precision of the flagged set, in (0, 1].
        confidence: one-sided confidence of the Wilson lower bound, in [0, 1).
        min_flagged: smallest flagged set that counts as evidence.

    Returns:
        A `Calibration`.

    References:
        Krea 2 report, Data (small classifiers run as filters at scale).
    """
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and positive {positive.shape} must be equal 1-D")
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    if not 0.0 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0, 1), got {confidence}")
    positives = int(positive.sum())
    if positives == 0:
        raise ValueError("the held-out split has no positives: label more images")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], positive[order].astype(np.int64)
    tp = np.cumsum(hits)
    flagged = np.arange(1, len(scores) + 1)
    # A cut may only fall after the last copy of a tied score: `>=` flags all of them.
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    precision = tp / flagged
    lower = wilson_lower_bound(precision, flagged, confidence=confidence)
    ok = last_of_tie & (lower >= target_precision) & (flagged >= min_flagged)
    if not ok.any():
        feasible = last_of_tie & (flagged >= min_flagged)
        best = float(lower[feasible].max()) if feasible.any() else float("nan")
        raise ValueError(
            f"no threshold reaches precision {target_precision} at confidence {confidence} on "
            f"{len(scores)} held-out samples (best lower bound {best:.3f} with >= {min_flagged} "
            "flagged): lower target_precision, label more images, or improve the classifier"
        )
    i = int(np.flatnonzero(ok)[-1])
    return Calibration(
        threshold=float(sorted_scores[i]),
        precision=float(precision[i]),
        precision_lower=float(lower[i]),
        recall=float(tp[i] / positives),
        flagged=int(flagged[i]),
        positives=positives,
        total=len(scores),
    )
