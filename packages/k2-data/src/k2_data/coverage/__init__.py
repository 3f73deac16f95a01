"""Entity coverage: PageRank-ranked concepts, caption search, rare-concept-first sampling and
the coverage re-check (Krea 2 report, Data).

`pagerank` (or `read_danker_tsv`) ranks concepts; `select_concepts` keeps the top fraction
and drops unrepresentable ones by a metadata predicate (`instance_of_filter`);
`ConceptMatcher` finds every concept alias in captions as whole words with a token-level
Aho-Corasick automaton; `metaclip_keep_probability` + `sample_keep` sample rare concepts
first; `coverage_recheck` lists concepts the sample lost and `restore_coverage` adds them
back. See docs/k2-data-models.md.
"""

from k2_data.coverage._aho import TokenAhoCorasick, tokenize
from k2_data.coverage._concepts import (
    WIKIMEDIA_NON_ARTICLES,
    instance_of_filter,
    read_danker_tsv,
    select_concepts,
    top_fraction,
)
from k2_data.coverage._match import ConceptMatcher, ConceptMatches
from k2_data.coverage._pagerank import edges_from_pairs, pagerank
from k2_data.coverage._recheck import CoverageReport, coverage_recheck, restore_coverage
from k2_data.coverage._sampling import (
    concept_keep_probability,
    metaclip_keep_probability,
    sample_keep,
)

__all__ = [
    "WIKIMEDIA_NON_ARTICLES",
    "ConceptMatcher",
    "ConceptMatches",
    "CoverageReport",
    "TokenAhoCorasick",
    "concept_keep_probability",
    "coverage_recheck",
    "edges_from_pairs",
    "instance_of_filter",
    "metaclip_keep_probability",
    "pagerank",
    "read_danker_tsv",
    "restore_coverage",
    "sample_keep",
    "select_concepts",
    "tokenize",
    "top_fraction",
]
