"""What the curation dropped, why, and how that compares with the faults that were injected."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

from k2_data.hashing import hamming
from k2_recipes.curate._faults import EXPECTED_REASONS, EXPECTED_VARIANT_REASONS, FAULT_KINDS

DEDUP_PREFIXES = ("duplicate_of:", "md5_duplicate_of:")
IO_KINDS = (
    "unsafe_name",
    "not_a_file",
    "bad_name",
    "no_image",
    "duplicate_key",
    "duplicate_member",
    "corrupt_tar",
)


def reason_stage(reason: str) -> str:
    """Which step dropped a row: "" (kept), "shard I/O", "decode", "filter" or "dedup"."""
    if not reason:
        return ""
    if reason.startswith(DEDUP_PREFIXES):
        return "dedup"
    if reason.startswith("broken_file:"):
        return "decode"
    if reason.split(":", 1)[0] in IO_KINDS:
        return "shard I/O"
    return "filter"


def reason_kind(reason: str) -> str:
    """A reason without its per-sample detail: ``broken_file: truncated``, ``border_fraction>0.8``,
    ``duplicate_of``."""
    if reason.startswith(DEDUP_PREFIXES):
        return reason.split(":", 1)[0]
    if reason.startswith("broken_file:"):
        return ":".join(reason.split(":")[:2])
    return reason.split(":", 1)[0]


def expected_reason(kind: str, variant: str, reason: str) -> bool:
    """Whether a dropped fault was dropped for the reason its kind (and variant) calls for."""
    if kind == "clean" or not reason:
        return False
    prefixes = EXPECTED_VARIANT_REASONS.get(variant, EXPECTED_REASONS[kind])
    return reason.startswith(prefixes)


def drop_counts(manifest: pa.Table) -> list[dict[str, Any]]:
    """One row per (stage, reason kind): how many samples it dropped, most first."""
    counts = Counter((reason_stage(r), reason_kind(r)) for r in manifest["reason"].to_pylist() if r)
    order = {"shard I/O": 0, "decode": 1, "filter": 2, "dedup": 3}
    rows = sorted(counts.items(), key=lambda kv: (order[kv[0][0]], -kv[1], kv[0][1]))
    return [{"stage": s, "reason": k, "dropped": n} for (s, k), n in rows]


def fault_table(manifest: pa.Table) -> list[dict[str, Any]]:
    """Per injected kind and variant: injected, dropped, dropped for the expected reason, kept.

    The clean row counts clean scenes dropped; its "expected reason" column stays empty.
    """
    kinds = manifest["kind"].to_pylist()
    variants = manifest["variant"].to_pylist()
    reasons = manifest["reason"].to_pylist()
    keeps = manifest["keep"].to_pylist()
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (k, v) in enumerate(zip(kinds, variants, strict=True)):
        groups[(k, v)].append(i)
    rows = []
    for kind in (*FAULT_KINDS, "clean"):
        for (k, v), idx in sorted(groups.items()):
            if k != kind:
                continue
            dropped = [i for i in idx if not keeps[i]]
            right = [i for i in dropped if expected_reason(k, v, reasons[i])]
            seen = Counter(reason_kind(reasons[i]) for i in dropped).most_common(3)
            rows.append(
                {
                    "kind": k,
                    "variant": v or "-",
                    "injected": len(idx),
                    "dropped": len(dropped),
                    "expected reason": None if k == "clean" else len(right),
                    "kept": len(idx) - len(dropped),
                    "reasons seen": ", ".join(f"{r} ({n})" for r, n in seen),
                }
            )
    return rows


def catch_summary(manifest: pa.Table) -> dict[str, Any]:
    """Fault catching as a detector: a drop predicts "fault".

    precision = faults dropped / all dropped; recall = faults dropped / faults injected;
    ``recall_expected_reason`` counts only faults dropped for their kind's reason.
    """
    kinds = np.array(manifest["kind"].to_pylist(), dtype=object)
    variants = manifest["variant"].to_pylist()
    reasons = manifest["reason"].to_pylist()
    dropped = ~np.array(manifest["keep"].to_pylist(), dtype=bool)
    fault = kinds != "clean"
    right = np.array(
        [expected_reason(k, v, r) for k, v, r in zip(kinds, variants, reasons, strict=True)]
    )
    tp = int((dropped & fault).sum())
    n_dropped = int(dropped.sum())
    return {
        **layout_coverage(manifest),
        "faults": int(fault.sum()),
        "clean": int((~fault).sum()),
        "faults_dropped": tp,
        "faults_dropped_expected_reason": int((dropped & right).sum()),
        "clean_dropped": int((dropped & ~fault).sum()),
        "precision": tp / n_dropped if n_dropped else 1.0,
        "recall": tp / int(fault.sum()) if fault.any() else 1.0,
        "recall_expected_reason": int((dropped & right).sum()) / int(fault.sum())
        if fault.any()
        else 1.0,
    }


def layout_coverage(manifest: pa.Table) -> dict[str, int]:
    """Distinct layouts (`scene_layout`: what a caption can say) among the clean scenes, and how
    many of them some kept sample still shows."""
    kinds, keeps = manifest["kind"].to_pylist(), manifest["keep"].to_pylist()
    layouts = manifest["layout"].to_pylist()
    clean = {lay for lay, k in zip(layouts, kinds, strict=True) if k == "clean"}
    kept = {lay for lay, keep in zip(layouts, keeps, strict=True) if keep}
    return {"clean_layouts": len(clean), "kept_layouts": len(clean & kept)}


def clean_drops(manifest: pa.Table) -> list[dict[str, Any]]:
    """Clean scenes the curation dropped, by why: a near-duplicate of another clean scene with
    the same layout (the same objects, sizes and positions: what a caption says), with a
    different layout, or another reason."""
    col = {c: manifest[c].to_pylist() for c in ("__key__", "kind", "keep", "reason", "layout")}
    row_of = {k: i for i, k in enumerate(col["__key__"])}
    counts: Counter[str] = Counter()
    for i, kind in enumerate(col["kind"]):
        if kind != "clean" or col["keep"][i]:
            continue
        reason = col["reason"][i]
        if reason.startswith(DEDUP_PREFIXES):
            keeper = row_of.get(reason.split(":", 1)[1])
            same = keeper is not None and col["layout"][keeper] == col["layout"][i]
            keeper_kind = "clean" if keeper is None else col["kind"][keeper]
            label = f"near-duplicate of a {keeper_kind} sample, " + (
                "same layout" if same else "different layout"
            )
        else:
            label = f"filter: {reason_kind(reason)}"
        counts[label] += 1
    return [{"why": k, "clean scenes": n} for k, n in counts.most_common()]


_GROUP_BUCKETS = (
    ("2", 2),
    ("3", 3),
    ("4-5", 5),
    ("6-10", 10),
    ("11-20", 20),
    ("21-50", 50),
    ("51+", float("inf")),
)


def duplicate_groups(manifest: pa.Table) -> dict[str, Any]:
    """Groups of the dedup step (a keeper and the copies dropped for it) by size and content."""
    keeper = manifest["keeper"].to_pylist()
    kinds = manifest["kind"].to_pylist()
    members: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keeper):
        if k is not None:
            members[k].append(i)
    groups = [m for m in members.values() if len(m) > 1]
    sizes = Counter(next(label for label, hi in _GROUP_BUCKETS if len(m) <= hi) for m in groups)
    with_injected = sum(any(kinds[i] == "near_duplicate" for i in m) for m in groups)
    clean_only = sum(sum(kinds[i] == "clean" for i in m) >= 2 for m in groups)
    return {
        "groups": len(groups),
        "samples_in_groups": sum(len(m) for m in groups),
        "with_injected_copy": with_injected,
        "with_two_or_more_clean": clean_only,
        "largest": max((len(m) for m in groups), default=0),
        "size_histogram": [
            {"group size": label, "groups": sizes[label]}
            for label, _ in _GROUP_BUCKETS
            if sizes[label]
        ],
    }


def near_duplicate_distances(manifest: pa.Table, hashes: pa.Table) -> list[dict[str, Any]]:
    """Per near-duplicate variant: phash / colorhash distance to its source (mean and max), and
    how often its group kept the source itself, or some clean sample (the source may be a
    near-duplicate of an earlier clean scene, which then keeps the group)."""
    row = {k: i for i, k in enumerate(hashes["__key__"].to_pylist())}
    ph, ch = hashes["phash"].to_pylist(), hashes["colorhash"].to_pylist()
    col = {c: manifest[c].to_pylist() for c in ("__key__", "kind", "variant", "source", "keeper")}
    kind_of = dict(zip(col["__key__"], col["kind"], strict=True))
    pairs = [
        (i, row[col["__key__"][i]], row[col["source"][i]])
        for i, kind in enumerate(col["kind"])
        if kind == "near_duplicate"
    ]
    pairs = [(i, a, b) for i, a, b in pairs if ph[a] is not None and ph[b] is not None]
    if not pairs:
        return []

    def codes(values: list, idx: list[int]) -> np.ndarray:
        return np.stack([np.frombuffer(values[j], np.uint8) for j in idx])

    copies, sources = [a for _, a, _ in pairs], [b for _, _, b in pairs]
    dp = hamming(codes(ph, copies), codes(ph, sources))
    dc = hamming(codes(ch, copies), codes(ch, sources))
    by_variant: dict[str, list[tuple[int, int, bool, bool]]] = defaultdict(list)
    for (i, _, _), p, c in zip(pairs, dp.tolist(), dc.tolist(), strict=True):
        keeper = col["keeper"][i]
        by_variant[col["variant"][i]].append(
            (p, c, keeper == col["source"][i], kind_of.get(keeper) == "clean")
        )
    rows = []
    for variant, values in sorted(by_variant.items()):
        arr = np.array([(p, c) for p, c, _, _ in values])
        rows.append(
            {
                "variant": variant,
                "copies": len(values),
                "phash dist mean": float(arr[:, 0].mean()),
                "phash dist max": int(arr[:, 0].max()),
                "colorhash dist mean": float(arr[:, 1].mean()),
                "colorhash dist max": int(arr[:, 1].max()),
                "keeper is the source": sum(v[2] for v in values),
                "keeper is clean": sum(v[3] for v in values),
            }
        )
    return rows
