"""The coverage re-check: which concepts of the input did the sample lose entirely."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Int

from k2_data.coverage._match import ConceptMatches


@dataclass(frozen=True, kw_only=True)
class CoverageReport:
    """Concept counts before and after sampling.

    Args:
        input_counts: captions per concept in the input.
        sample_counts: captions per concept in the sample.
        concept_ids: names of the concepts, when known.
    """

    input_counts: Int[np.ndarray, " c"]
    sample_counts: Int[np.ndarray, " c"]
    concept_ids: tuple[str, ...] | None = None

    @property
    def dropped(self) -> Int[np.ndarray, " k"]:
        """Indices of concepts present in the input but absent from the sample."""
        return np.flatnonzero((self.input_counts > 0) & (self.sample_counts == 0))

    @property
    def dropped_ids(self) -> list[str]:
        if self.concept_ids is None:
            return [str(i) for i in self.dropped.tolist()]
        return [self.concept_ids[i] for i in self.dropped.tolist()]

    @property
    def ok(self) -> bool:
        """True when no concept of the input was dropped entirely."""
        return self.dropped.size == 0

    @property
    def coverage(self) -> float:
        """Share of the input's concepts that the sample still contains."""
        present = int((self.input_counts > 0).sum())
        return 1.0 if present == 0 else 1.0 - self.dropped.size / present


def coverage_recheck(
    matches: ConceptMatches,
    keep: Bool[np.ndarray, " n"],
    *,
    concept_ids: tuple[str, ...] | None = None,
) -> CoverageReport:
    """Compare concept counts of the whole input with those of the kept samples.

    Args:
        matches: the concepts of every input caption.
        keep: which samples the sampler kept.
        concept_ids: concept names for the report.

    Returns:
        A `CoverageReport`; `.dropped_ids` lists concepts the sample lost.

    References:
        Krea 2 report, Data: "we repeated this coverage analysis on the resulting sample to
        confirm that no concepts present in the initial dataset had been dropped entirely."
    """
    if keep.shape != (len(matches),):
        raise ValueError(f"keep has shape {keep.shape}, expected ({len(matches)},)")
    return CoverageReport(
        input_counts=matches.counts(), sample_counts=matches.counts(keep), concept_ids=concept_ids
    )


def restore_coverage(
    matches: ConceptMatches, keep: Bool[np.ndarray, " n"], *, generator: np.random.Generator
) -> Bool[np.ndarray, " n"]:
    """Add back one random sample for every concept the sample dropped.

    Concepts are visited rarest first; a concept already covered by a sample added for an
    earlier one needs nothing more. The result passes `coverage_recheck`.

    Args:
        matches: the concepts of every input caption.
        keep: the sampler's decisions.
        generator: picks which sample carrying a dropped concept is added.

    Returns:
        A new keep mask, a superset of `keep`.
    """
    report = coverage_recheck(matches, keep)
    keep = keep.copy()
    if report.ok:
        return keep
    covered = report.sample_counts > 0
    rows = matches.rows
    order = np.argsort(matches.concepts, kind="stable")
    bounds = np.searchsorted(matches.concepts[order], np.arange(matches.num_concepts + 1))
    dropped = report.dropped[np.argsort(report.input_counts[report.dropped], kind="stable")]
    for concept in dropped.tolist():
        if covered[concept]:
            continue
        carriers = rows[order[bounds[concept] : bounds[concept + 1]]]
        pick = int(carriers[generator.integers(carriers.size)])
        keep[pick] = True
        covered[matches[pick]] = True
    return keep
