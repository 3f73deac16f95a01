"""Concept lists: danker PageRank TSVs, the top fraction, and dropping unrepresentable subjects."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float, Int

WIKIMEDIA_NON_ARTICLES: dict[str, str] = {
    "Q4167410": "Wikimedia disambiguation page",
    "Q13406463": "Wikimedia list article",
    "Q4167836": "Wikimedia category",
    "Q11266439": "Wikimedia template",
}
"""Wikidata classes (P31 values) of pages that are no subject at all; a starting exclusion list.
Add the classes your policy deems unrepresentable (abstract notions, events without a look)."""


def read_danker_tsv(path: str | os.PathLike[str]) -> tuple[list[str], Float[np.ndarray, " n"]]:
    """Read a danker output file: one `QID<TAB>score` per line, no header (.gz/.bz2 ok).

    Args:
        path: the TSV (compression inferred from the extension).

    Returns:
        (QIDs, float64 scores) in file order.

    References:
        danker (github.com/athalhammer/danker), output format only; its code is not used.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        table = pcsv.read_csv(
            os.fspath(path),
            read_options=pcsv.ReadOptions(column_names=["qid", "score"]),
            parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pcsv.ConvertOptions(
                column_types={"qid": pa.string(), "score": pa.float64()}
            ),
        )
    except (pa.ArrowInvalid, FileNotFoundError) as err:
        raise ValueError(
            f"{path} is not a readable danker TSV (one 'QID<TAB>score' per line): {err}"
        ) from err
    qids = table.column("qid").to_pylist()
    scores = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    if np.isnan(scores).any() or any(q is None or not q for q in qids):
        raise ValueError(f"{path} has empty QIDs or scores; every line needs 'QID<TAB>score'")
    return qids, scores


def top_fraction(scores: Float[np.ndarray, " n"], fraction: float) -> Int[np.ndarray, " k"]:
    """Indices of the ceil(fraction · n) highest scores, best first (ties: lower index first).

    Args:
        scores: one score per concept.
        fraction: share to keep, in (0, 1] (the report keeps the top 90% of articles).

    Returns:
        int64 indices into `scores`.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    keep = math.ceil(fraction * len(scores))
    return np.argsort(-scores, kind="stable")[:keep]


def instance_of_filter(
    excluded: Collection[str] = tuple(WIKIMEDIA_NON_ARTICLES), *, key: str = "instance_of"
) -> Callable[[Mapping[str, Any]], bool]:
    """A representability predicate: False when any `metadata[key]` value is excluded.

    Args:
        excluded: Wikidata class QIDs (P31 "instance of" values) to drop.
        key: the metadata field holding the concept's classes.

    Returns:
        metadata -> bool (True = representable, keep).
    """
    banned = frozenset(excluded)

    def representable(metadata: Mapping[str, Any]) -> bool:
        return banned.isdisjoint(metadata.get(key, ()))

    return representable


def select_concepts(
    qids: Sequence[str],
    scores: Float[np.ndarray, " n"],
    *,
    keep_fraction: float = 0.9,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    representable: Callable[[Mapping[str, Any]], bool] | None = None,
    keep_missing: bool = False,
) -> tuple[list[str], Float[np.ndarray, " k"]]:
    """Keep the top `keep_fraction` of concepts by rank, then drop unrepresentable ones.

    Args:
        qids: concept ids (e.g. from `read_danker_tsv`).
        scores: their PageRank scores.
        keep_fraction: share kept by rank, before the metadata filter.
        metadata: per-QID metadata (e.g. {"instance_of": [...]} from a Wikidata dump).
        representable: metadata -> keep?; e.g. `instance_of_filter(...)`. None keeps all.
        keep_missing: keep concepts that have no metadata entry.

    Returns:
        (kept QIDs, their scores), best first.

    References:
        Krea 2 report, Data: "retained the top 90% of articles by rank. We then filtered out
        all articles describing unrepresentable subjects based on their Wikidata metadata".
    """
    if len(qids) != len(scores):
        raise ValueError(f"got {len(qids)} QIDs but {len(scores)} scores")
    order = top_fraction(scores, keep_fraction)
    if representable is not None:
        if metadata is None:
            raise ValueError("representable= needs metadata= (QID -> metadata mapping)")
        kept = []
        for i in order.tolist():
            found = metadata.get(qids[i])
            if (found is None and keep_missing) or (found is not None and representable(found)):
                kept.append(i)
        order = np.asarray(kept, np.int64)
    return [qids[i] for i in order.tolist()], scores[order]
