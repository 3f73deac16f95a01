"""Which concepts each caption mentions: aliases -> automaton -> a ragged (CSR) match table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Int

from k2_data.coverage._aho import TokenAhoCorasick, tokenize


@dataclass(frozen=True, kw_only=True)
class ConceptMatches:
    """The distinct concepts of each of n captions, stored as CSR arrays.

    Args:
        offsets: (n + 1,) int64; caption i's concepts are concepts[offsets[i]:offsets[i+1]].
        concepts: concept indices, sorted and unique within each caption.
        num_concepts: size of the concept list the indices refer to.
    """

    offsets: Int[np.ndarray, " n1"]
    concepts: Int[np.ndarray, " m"]
    num_concepts: int

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or self.offsets.size < 1 or self.offsets[0] != 0:
            raise ValueError("offsets must be 1-D and start at 0")
        if self.offsets[-1] != self.concepts.size or (np.diff(self.offsets) < 0).any():
            raise ValueError("offsets must be non-decreasing and end at len(concepts)")
        if self.concepts.size and (
            self.concepts.min() < 0 or self.concepts.max() >= self.num_concepts
        ):
            raise ValueError(f"concept indices must lie in [0, {self.num_concepts})")

    @classmethod
    def from_lists(cls, rows: Iterable[Iterable[int]], num_concepts: int) -> ConceptMatches:
        """Build from one iterable of concept indices per caption (deduplicated here)."""
        arrays = [np.unique(np.asarray(list(r), np.int64)) for r in rows]
        lengths = np.asarray([a.size for a in arrays], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        concepts = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        return cls(offsets=offsets, concepts=concepts.astype(np.int64), num_concepts=num_concepts)

    def __len__(self) -> int:
        return self.offsets.size - 1

    def __getitem__(self, i: int) -> Int[np.ndarray, " k"]:
        return self.concepts[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> Int[np.ndarray, " n"]:
        return np.diff(self.offsets)

    @property
    def rows(self) -> Int[np.ndarray, " m"]:
        """The caption index of every entry of `concepts`."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def counts(self, mask: Bool[np.ndarray, " n"] | None = None) -> Int[np.ndarray, " c"]:
        """Captions mentioning each concept (only those where `mask` is True, if given)."""
        concepts = self.concepts if mask is None else self.concepts[mask[self.rows]]
        return np.bincount(concepts, minlength=self.num_concepts)


class ConceptMatcher:
    """Find which concepts (each with one or more aliases) a caption mentions, as whole words.

    Args:
        concepts: concept id -> aliases (e.g. QID -> [English label, aliases]) or a sequence
            of names (each its own single alias).
        case_sensitive: match case; default folds case on both sides.

    References:
        Krea 2 report, Data: "a full-text search across all captions in our dataset to assess
        coverage"; Xu et al. 2023, MetaCLIP (arXiv 2309.16671), caption-to-entry matching.
    """

    def __init__(
        self, concepts: Mapping[str, Sequence[str]] | Sequence[str], *, case_sensitive: bool = False
    ) -> None:
        items = (
            list(concepts.items())
            if isinstance(concepts, Mapping)
            else [(name, [name]) for name in concepts]
        )
        if len({cid for cid, _ in items}) != len(items):
            raise ValueError("concept ids repeat; give each concept one entry with all aliases")
        self.concept_ids: tuple[str, ...] = tuple(cid for cid, _ in items)
        self.case_sensitive = case_sensitive
        patterns: list[list[str]] = []
        owner: list[int] = []
        for index, (cid, aliases) in enumerate(items):
            if isinstance(aliases, str):
                raise TypeError(f"aliases of {cid!r} must be a list of strings, not one string")
            for alias in aliases:
                tokens = tokenize(alias, case_sensitive=case_sensitive)
                if not tokens:
                    raise ValueError(f"alias {alias!r} of {cid!r} has no word characters")
                patterns.append(tokens)
                owner.append(index)
        self.automaton = TokenAhoCorasick(patterns)
        self._owner = owner

    @property
    def num_concepts(self) -> int:
        return len(self.concept_ids)

    def match(self, caption: str) -> Int[np.ndarray, " k"]:
        """Sorted distinct indices of the concepts the caption mentions."""
        hits = self.automaton.find(tokenize(caption, case_sensitive=self.case_sensitive))
        return np.unique(np.asarray([self._owner[p] for _, _, p in hits], np.int64))

    def match_all(self, captions: Iterable[str]) -> ConceptMatches:
        """`match` over many captions, as one CSR table."""
        return ConceptMatches.from_lists(
            (self.match(c) for c in captions), num_concepts=self.num_concepts
        )
