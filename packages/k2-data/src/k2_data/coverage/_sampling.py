"""Rare-concept-first sampling: keep probabilities from concept counts (MetaCLIP balancing)."""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float, Int

from k2_data.coverage._match import ConceptMatches

_COMBINE = ("max", "any")


def concept_keep_probability(
    counts: Int[np.ndarray, " c"], threshold: float | Float[np.ndarray, " c"]
) -> Float[np.ndarray, " c"]:
    """p(e) = t / max(count_e, t): concepts at or below t keep all their samples, frequent
    ones are thinned to about t samples in expectation.

    Args:
        counts: samples mentioning each concept.
        threshold: t, one value or one per concept (> 0).

    Returns:
        float64 per-concept probabilities in (0, 1].

    References:
        Xu et al. 2023, MetaCLIP (arXiv 2309.16671), balancing with t = 20k per entry.
    """
    t = np.broadcast_to(np.asarray(threshold, np.float64), counts.shape)
    if (t <= 0).any():
        raise ValueError("threshold t must be > 0")
    return t / np.maximum(counts.astype(np.float64), t)


def metaclip_keep_probability(
    matches: ConceptMatches,
    *,
    threshold: float | Float[np.ndarray, " c"],
    counts: Int[np.ndarray, " c"] | None = None,
    combine: str = "max",
    unmatched: float = 0.0,
) -> Float[np.ndarray, " n"]:
    """Probability of keeping each sample from the concepts its caption mentions.

    With p(e) = t / max(count_e, t) per concept, a sample mentioning concepts E keeps with
    `combine="max"`: max_{e in E} p(e), so any sample carrying a concept at or below t is
    always kept; or `combine="any"`: 1 - Π_{e in E} (1 - p(e)), MetaCLIP's reference rule
    (one independent draw per matched entry, kept if any passes), which favours captions
    that list many frequent concepts.

    Args:
        matches: the concepts of each caption.
        threshold: t (scalar or per concept).
        counts: concept counts to use; default `matches.counts()` (this pool's own).
        combine: "max" or "any".
        unmatched: probability for samples that mention no concept (MetaCLIP drops them,
            0; when this is a priority on top of other sampling, use the base rate).

    Returns:
        float64 keep probability per sample.

    References:
        Xu et al. 2023, MetaCLIP (arXiv 2309.16671), Algorithm 1; Krea 2 report, Data:
        "When sampling, we prioritized images whose captions referenced rare concepts."
    """
    if combine not in _COMBINE:
        raise ValueError(f"combine must be one of {_COMBINE}, got {combine!r}")
    if not 0.0 <= unmatched <= 1.0:
        raise ValueError(f"unmatched must be a probability, got {unmatched}")
    counts = matches.counts() if counts is None else counts
    if counts.shape != (matches.num_concepts,):
        raise ValueError(f"counts has shape {counts.shape}, expected ({matches.num_concepts},)")
    per_entry = concept_keep_probability(counts, threshold)[matches.concepts]
    out = np.full(len(matches), unmatched, np.float64)
    starts = matches.offsets[:-1]
    has = matches.lengths > 0
    if per_entry.size:
        # reduceat over the non-empty rows only (an empty segment would repeat its start).
        if combine == "max":
            out[has] = np.maximum.reduceat(per_entry, starts[has])
        else:
            out[has] = 1.0 - np.multiply.reduceat(1.0 - per_entry, starts[has])
    return out


def sample_keep(
    probabilities: Float[np.ndarray, " n"], *, generator: np.random.Generator
) -> Bool[np.ndarray, " n"]:
    """Independent Bernoulli draws: sample i is kept with probability probabilities[i]."""
    if ((probabilities < 0) | (probabilities > 1)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    return generator.random(probabilities.shape[0]) < probabilities
