"""k2_data.coverage: PageRank, danker TSVs, concept selection, Aho-Corasick caption search,
MetaCLIP-style rare-first sampling and the coverage re-check."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2_data.coverage import (
    WIKIMEDIA_NON_ARTICLES,
    ConceptMatcher,
    ConceptMatches,
    TokenAhoCorasick,
    concept_keep_probability,
    coverage_recheck,
    edges_from_pairs,
    instance_of_filter,
    metaclip_keep_probability,
    pagerank,
    read_danker_tsv,
    restore_coverage,
    sample_keep,
    select_concepts,
    tokenize,
    top_fraction,
)

# ---- PageRank against a dense float64 Google-matrix power iteration ----


def ref_pagerank(edges, n, damping, v=None):
    """Dense Google matrix G[j][i] = P(i -> j), dangling columns = v, iterated 3000 times."""
    v = [1.0 / n] * n if v is None else [x / sum(v) for x in v]
    out = [0] * n
    for a, _ in edges:
        out[a] += 1
    link = [[0.0] * n for _ in range(n)]
    for a, b in edges:
        link[b][a] += 1.0 / out[a]
    for i in range(n):
        if out[i] == 0:
            for j in range(n):
                link[j][i] = v[j]
    g = np.array(
        [[damping * link[j][i] + (1 - damping) * v[j] for i in range(n)] for j in range(n)],
        dtype=np.float64,
    )
    r = np.array(v, dtype=np.float64)
    for _ in range(3000):
        r = g @ r
    return r


@pytest.mark.parametrize("seed", range(8))
def test_pagerank_matches_dense_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    m = int(rng.integers(0, 3 * n))
    # Random edges include self-loops and parallel edges; some nodes end up dangling.
    edges = [(int(rng.integers(n)), int(rng.integers(n))) for _ in range(m)]
    src = np.array([a for a, _ in edges], np.int64)
    dst = np.array([b for _, b in edges], np.int64)
    for damping in (0.85, 0.5):
        got = pagerank(src, dst, n, damping=damping, tol=1e-13)
        np.testing.assert_allclose(got, ref_pagerank(edges, n, damping), rtol=1e-9, atol=1e-12)
        assert got.sum() == pytest.approx(1.0, abs=1e-12) and (got > 0).all()
    weights = rng.random(n)
    got = pagerank(src, dst, n, personalization=weights, tol=1e-13)
    np.testing.assert_allclose(got, ref_pagerank(edges, n, 0.85, list(weights)), rtol=1e-9)


def test_pagerank_hand_checked_graphs_and_errors():
    # A 2-cycle is symmetric; a node everyone links to outranks the others.
    assert pagerank(np.array([0, 1]), np.array([1, 0]), 2).tolist() == pytest.approx([0.5, 0.5])
    r = pagerank(np.array([1, 2, 3, 0]), np.array([0, 0, 0, 1]), 4)
    assert r.argmax() == 0 and r[2] == pytest.approx(r[3])
    # No edges at all: every node dangles, so teleporting gives the uniform distribution.
    assert pagerank(np.zeros(0, np.int64), np.zeros(0, np.int64), 3).tolist() == pytest.approx(
        [1 / 3] * 3
    )
    with pytest.raises(ValueError, match="renumber"):
        pagerank(np.array([0]), np.array([5]), 3)
    with pytest.raises(ValueError, match="damping"):
        pagerank(np.array([0]), np.array([1]), 2, damping=1.0)
    with pytest.raises(RuntimeError, match="did not converge"):
        pagerank(np.array([0, 1, 1]), np.array([1, 0, 2]), 3, max_iter=2)


def test_edges_from_pairs_numbers_nodes_in_order():
    nodes, src, dst = edges_from_pairs([("Q5", "Q1"), ("Q1", "Q7"), ("Q5", "Q7")])
    assert nodes == ["Q5", "Q1", "Q7"]
    assert src.tolist() == [0, 1, 0] and dst.tolist() == [1, 2, 2]


# ---- danker TSV, top fraction, representability ----


def test_read_danker_tsv_plain_and_gzip(tmp_path):
    lines = "Q1\t3.5\nQ42\t12.25\nQ5\t0.75\n"
    (tmp_path / "r.tsv").write_text(lines)
    with gzip.open(tmp_path / "r.tsv.gz", "wt") as f:
        f.write(lines)
    for name in ("r.tsv", "r.tsv.gz"):
        qids, scores = read_danker_tsv(tmp_path / name)
        assert qids == ["Q1", "Q42", "Q5"] and scores.tolist() == [3.5, 12.25, 0.75]
    (tmp_path / "bad.tsv").write_text("Q1\t3.5\nQ2 only\n")
    with pytest.raises(ValueError, match="QID<TAB>score"):
        read_danker_tsv(tmp_path / "bad.tsv")
    with pytest.raises(ValueError, match="QID<TAB>score"):
        read_danker_tsv(tmp_path / "missing.tsv")


def test_top_fraction_and_select_concepts():
    scores = np.array([5.0, 1.0, 9.0, 5.0, 0.5, 7.0, 2.0, 3.0, 4.0, 6.0])
    assert top_fraction(scores, 0.9).tolist() == [2, 5, 9, 0, 3, 8, 7, 6, 1]  # ceil(9.0)
    assert top_fraction(scores, 0.25).tolist() == [2, 5, 9]  # ceil(2.5) = 3; ties by index
    with pytest.raises(ValueError, match="fraction"):
        top_fraction(scores, 0.0)
    qids = [f"Q{i}" for i in range(10)]
    meta = {
        "Q2": {"instance_of": ["Q5"]},
        "Q5": {"instance_of": ["Q4167410"]},  # a disambiguation page
        "Q9": {"instance_of": ["Q13406463", "Q5"]},  # a list article
        "Q0": {},
    }
    keep = instance_of_filter()
    assert "Q4167410" in WIKIMEDIA_NON_ARTICLES
    kept, kept_scores = select_concepts(
        qids, scores, keep_fraction=0.5, metadata=meta, representable=keep
    )
    assert kept == ["Q2", "Q0"] and kept_scores.tolist() == [9.0, 5.0]
    kept, _ = select_concepts(
        qids, scores, keep_fraction=0.5, metadata=meta, representable=keep, keep_missing=True
    )
    assert kept == ["Q2", "Q0", "Q3"]
    assert select_concepts(qids, scores, keep_fraction=0.2)[0] == ["Q2", "Q5"]
    with pytest.raises(ValueError, match="needs metadata"):
        select_concepts(qids, scores, representable=keep)


# ---- Aho-Corasick against naive searches ----


def naive_token_search(patterns, tokens):
    return {
        (s, s + len(p), k)
        for k, p in enumerate(patterns)
        for s in range(len(tokens) - len(p) + 1)
        if list(tokens[s : s + len(p)]) == list(p)
    }


def regex_search(patterns, text):
    """Character-level whole-word search: a lookahead finds overlapping occurrences."""
    found = set()
    for k, p in enumerate(patterns):
        body = r"\W+".join(re.escape(w) for w in p)
        for m in re.finditer(rf"(?<!\w)(?=({body})(?!\w))", text.casefold()):
            found.add((m.start(), m.start() + len(m.group(1)), k))
    return found


WORDS = ["a", "b", "ab", "ba", "new", "york", "city"]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4), min_size=1, max_size=8),
    st.lists(st.sampled_from([*WORDS, "zz"]), max_size=30),
)
def test_token_aho_corasick_matches_naive_search(patterns, tokens):
    automaton = TokenAhoCorasick(patterns)
    hits = automaton.find(tokens)
    assert len(hits) == len(set(hits))
    assert set(hits) == naive_token_search(patterns, tokens)


def test_token_matches_agree_with_a_character_regex():
    rng = np.random.default_rng(0)
    patterns = [["new", "york"], ["new", "york", "city"], ["york"], ["ab", "ab"], ["a"]]
    automaton = TokenAhoCorasick(patterns)
    for _ in range(50):
        words = rng.choice([*WORDS, "abab", "newyork"], size=rng.integers(0, 20)).tolist()
        seps = rng.choice([" ", ", ", "-", " (", ". "], size=len(words)).tolist()
        text = "".join(s + w for s, w in zip(seps, words, strict=True)).upper()
        spans = [m.span() for m in re.finditer(r"\w+", text)]
        got = {(spans[s][0], spans[e - 1][1], k) for s, e, k in automaton.find(tokenize(text))}
        assert got == regex_search(patterns, text)


def test_concept_matcher_aliases_words_and_case():
    matcher = ConceptMatcher(
        {
            "Q1": ["cat", "house cat"],
            "Q2": ["New York", "NYC"],
            "Q3": ["New York City"],
            "Q4": ["Spider-Man"],
        }
    )
    assert matcher.match("A CAT in new-york city").tolist() == [0, 1, 2]
    assert matcher.match("concatenate the catalogue").tolist() == []  # whole words only
    assert matcher.match("spider man at NYC, cat, house cat").tolist() == [0, 1, 3]
    table = matcher.match_all(["cat", "", "nyc new york"])
    assert table.offsets.tolist() == [0, 1, 1, 2] and table.concepts.tolist() == [0, 1]
    assert ConceptMatcher(["Cat"], case_sensitive=True).match("cat Cat").tolist() == [0]
    with pytest.raises(ValueError, match="no word characters"):
        ConceptMatcher({"Q1": ["--"]})
    with pytest.raises(TypeError, match="list of strings"):
        ConceptMatcher({"Q1": "cat"})


# ---- MetaCLIP probabilities, hand-checked ----


def test_metaclip_probabilities_hand_checked():
    counts = np.array([1, 5, 10, 2])
    # t = 2: p(e) = 2 / max(count, 2) = [1, 0.4, 0.2, 1].
    assert concept_keep_probability(counts, 2.0).tolist() == pytest.approx([1, 0.4, 0.2, 1])
    matches = ConceptMatches.from_lists([[1, 2], [], [0, 2], [2], [2, 1, 1]], num_concepts=4)
    p_max = metaclip_keep_probability(matches, threshold=2.0, counts=counts)
    assert p_max.tolist() == pytest.approx([0.4, 0.0, 1.0, 0.2, 0.4])
    p_any = metaclip_keep_probability(
        matches, threshold=2.0, counts=counts, combine="any", unmatched=0.3
    )
    assert p_any.tolist() == pytest.approx([1 - 0.6 * 0.8, 0.3, 1.0, 0.2, 1 - 0.6 * 0.8])
    # Per-concept thresholds: t = [1, 5, 1, 1] -> p = [1, 1, 0.1, 0.5].
    p = metaclip_keep_probability(matches, threshold=np.array([1.0, 5, 1, 1]), counts=counts)
    assert p.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.1, 1.0])
    # Own counts by default: concept 2 appears in 4 captions, concept 1 in 2.
    assert metaclip_keep_probability(matches, threshold=1.0).tolist() == pytest.approx(
        [0.5, 0.0, 1.0, 0.25, 0.5]
    )
    with pytest.raises(ValueError, match="combine"):
        metaclip_keep_probability(matches, threshold=1.0, combine="min")
    with pytest.raises(ValueError, match="t must be > 0"):
        concept_keep_probability(counts, 0.0)


def test_rare_first_sampling_caps_head_concepts_in_expectation():
    # Single-concept captions: concept c appears count_c times; E[kept] = min(count_c, t).
    counts = [3, 30, 300, 3000]
    matches = ConceptMatches.from_lists(
        [[c] for c, k in enumerate(counts) for _ in range(k)], num_concepts=4
    )
    p = metaclip_keep_probability(matches, threshold=50.0)
    rng = np.random.default_rng(0)
    kept = np.mean([matches.counts(sample_keep(p, generator=rng)) for _ in range(200)], axis=0)
    np.testing.assert_allclose(kept, [3, 30, 50, 50], rtol=0.05)
    again = sample_keep(p, generator=np.random.default_rng(7))
    assert np.array_equal(again, sample_keep(p, generator=np.random.default_rng(7)))


# ---- the coverage re-check ----


def test_coverage_recheck_lists_dropped_concepts_and_restore_fixes_them():
    matches = ConceptMatches.from_lists([[0, 1], [1], [2], [2, 3], [1], [], [4]], num_concepts=6)
    keep = np.array([False, True, True, False, False, True, False])
    report = coverage_recheck(matches, keep, concept_ids=("a", "b", "c", "d", "e", "f"))
    assert report.input_counts.tolist() == [1, 3, 2, 1, 1, 0]
    assert report.sample_counts.tolist() == [0, 1, 1, 0, 0, 0]
    assert report.dropped.tolist() == [0, 3, 4] and report.dropped_ids == ["a", "d", "e"]
    assert not report.ok and report.coverage == pytest.approx(2 / 5)  # f was never present
    fixed = restore_coverage(matches, keep, generator=np.random.default_rng(0))
    assert coverage_recheck(matches, fixed).ok and (fixed | keep).tolist() == fixed.tolist()
    assert fixed.sum() - keep.sum() == 3  # each dropped concept has one carrier here
    assert coverage_recheck(matches, np.ones(7, bool)).ok
    with pytest.raises(ValueError, match="expected \\(7,\\)"):
        coverage_recheck(matches, np.ones(3, bool))


def test_end_to_end_coverage_on_captions():
    matcher = ConceptMatcher({"Q1": ["dog"], "Q2": ["cat"], "Q3": ["axolotl"]})
    captions = ["a dog"] * 200 + ["a cat and a dog"] * 20 + ["an axolotl"] + ["a tree"] * 5
    matches = matcher.match_all(captions)
    p = metaclip_keep_probability(matches, threshold=10.0)
    keep = sample_keep(p, generator=np.random.default_rng(1))
    assert keep[220] and not keep[221:].any()  # the rare concept always stays; no-concept go
    report = coverage_recheck(matches, keep, concept_ids=matcher.concept_ids)
    assert report.ok and report.sample_counts[2] == 1
