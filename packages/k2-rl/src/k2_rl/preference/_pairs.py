"""Delta-learning preference pairs in which every pair holds at least one on-policy sample.

Rewards of several judges are put on one scale by per-judge temperatures (r / T_k is a
Bradley-Terry logit once `calibrate_judges` has fitted T_k), and each judge votes for a
side of a pair only when its scaled margin clears its own threshold. A pair is kept when
the judges agree ("all" of them, or a strict "majority"), so a kept pair is one the
calibrated judges are confident about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

SOURCES = ("on_policy", "weak", "curated")
"""Candidate tags: the current policy's sample, a weaker generator's (earlier checkpoint,
fewer steps, no CFG), or a curated / real image."""

PAIR_KINDS = ("within_group", "vs_weak", "vs_curated")
"""(a) best vs worst on-policy sample of a group; (b) on-policy vs weak; (c) on-policy vs curated."""

REJECTION_REASONS = ("judges_disagree", "below_threshold", "too_few_on_policy", "no_on_policy")


@dataclass(frozen=True, kw_only=True)
class PreferencePairs:
    """Kept pairs (one row each) and how many candidate pairs were rejected, by reason.

    Attributes:
        winner: [p] candidate index of each pair's winner.
        loser: [p] candidate index of each pair's loser.
        kind: p pair kinds from PAIR_KINDS.
        group: [p] the pair's group (prompt) id.
        margin: [p] mean over judges of the temperature-scaled reward margin r_w/T - r_l/T.
        agreement: [p] fraction of judges that voted for the winner.
        rejected: counts by reason: "judges_disagree" (judges voted for opposite sides),
            "below_threshold" (too few judges cleared their threshold), "too_few_on_policy"
            (groups with < 2 on-policy samples, so no within-group pair), "no_on_policy"
            (weak or curated candidates whose group has no on-policy sample to pair with).
    """

    winner: Tensor
    loser: Tensor
    kind: tuple[str, ...]
    group: Tensor
    margin: Tensor
    agreement: Tensor
    rejected: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.kind)

    def kept_by_kind(self) -> dict[str, int]:
        """Number of kept pairs of each kind."""
        return {k: self.kind.count(k) for k in PAIR_KINDS}

    def rows(self) -> list[dict[str, float | int | str]]:
        """One plain dict per pair (for JSONL or Parquet)."""
        cols = zip(
            self.winner.tolist(),
            self.loser.tolist(),
            self.kind,
            self.group.tolist(),
            self.margin.tolist(),
            self.agreement.tolist(),
            strict=True,
        )
        keys = ("winner", "loser", "kind", "group", "margin", "agreement")
        return [dict(zip(keys, row, strict=True)) for row in cols]


def _check_inputs(
    rewards: Tensor,
    sources: Sequence[str],
    groups: list[int],
    temperatures: Tensor,
    thresholds: Tensor,
    agreement: str,
    kinds: Sequence[str],
) -> None:
    n, j = rewards.shape
    if n != len(sources) or n != len(groups):
        raise ValueError(
            f"rewards has {n} rows but sources has {len(sources)} and groups {len(groups)}; "
            "give one source tag and one group id per candidate"
        )
    bad = sorted({s for s in sources if s not in SOURCES})
    if bad:
        raise ValueError(f"unknown source tags {bad}; tag each candidate with one of {SOURCES}")
    if not bool(torch.isfinite(rewards).all()):
        rows = torch.nonzero(~torch.isfinite(rewards).all(dim=1)).flatten().tolist()
        raise ValueError(f"rewards of candidates {rows[:10]} are not finite; drop or rescore them")
    if temperatures.shape != (j,) or not bool((temperatures > 0).all()):
        raise ValueError(
            f"temperatures must be {j} numbers > 0 (inf mutes a judge), got "
            f"{temperatures.tolist()}; use calibrate_judges(...).temperatures or ones"
        )
    if thresholds.shape != (j,) or not bool((thresholds >= 0).all()):
        raise ValueError(
            f"thresholds must be {j} numbers >= 0 on the temperature-scaled margin, got "
            f"{thresholds.tolist()}; use calibrate_judges(...).thresholds or zeros"
        )
    if agreement not in ("all", "majority"):
        raise ValueError(f"agreement={agreement!r} is unknown; use 'all' or 'majority'")
    bad_kinds = sorted(set(kinds) - set(PAIR_KINDS))
    if bad_kinds:
        raise ValueError(f"unknown pair kinds {bad_kinds}; choose from {PAIR_KINDS}")


def build_preference_pairs(
    rewards: Float[Tensor, "n j"],
    sources: Sequence[str],
    groups: Int[Tensor, " n"] | Sequence[int],
    *,
    temperatures: Float[Tensor, " j"] | None = None,
    thresholds: Float[Tensor, " j"] | None = None,
    agreement: Literal["all", "majority"] = "all",
    kinds: Sequence[str] = PAIR_KINDS,
) -> PreferencePairs:
    """Build winner/loser pairs from judged candidates, each pair with an on-policy sample.

    Per group (prompt), with combined score c_i = mean_k r_ik / T_k:
    (a) "within_group": the on-policy sample with the highest c (first on ties) vs the
    one with the lowest c (last on ties); (b) "vs_weak": every weak candidate vs the
    group's highest-c on-policy sample; (c) "vs_curated": every curated candidate vs the
    group's lowest-c on-policy sample. Each judge k votes for side a when
    (r_ak - r_bk)/T_k > δ_k, for side b when it is < -δ_k, and abstains otherwise. The
    side with the votes of all judges ("all") or of more than half ("majority") wins;
    otherwise the pair is rejected as "judges_disagree" if both sides got votes, else
    "below_threshold". The winner is whichever side the votes pick, so a weak sample
    can beat an on-policy one; the on-policy sample is then the loser.

    Args:
        rewards: [n, j] reward of each candidate under each of j judges.
        sources: n tags from SOURCES ("on_policy", "weak", "curated").
        groups: n group ids (candidates of one prompt share an id).
        temperatures: [j] T_k > 0 (inf mutes a judge); default ones.
        thresholds: [j] δ_k >= 0 on the scaled margin; default zeros (any sign counts).
        agreement: "all" judges must vote for the winner, or a strict "majority".
        kinds: the pair kinds to build (default all three).

    Returns:
        PreferencePairs, ordered by group (in order of first appearance), then kind
        (a, b, c), then candidate index; with rejection counts by reason.

    References:
        Geng et al. 2025, delta learning (arXiv 2507.06187); Krea 2 report, "Preference
        optimization" (on-policy pairs, delta-learning strategy); flow_grpo's DPO tracker
        (group max vs min); rl.md §1.4.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 1:
        raise ValueError(
            f"rewards has shape {tuple(rewards.shape)}; pass [n_candidates, n_judges] "
            "(unsqueeze(1) a single judge)"
        )
    n_judges = rewards.shape[1]
    r = rewards.detach().to("cpu", torch.float64)
    temps = torch.ones(n_judges, dtype=torch.float64) if temperatures is None else temperatures
    thr = torch.zeros(n_judges, dtype=torch.float64) if thresholds is None else thresholds
    temps, thr = temps.detach().to("cpu", torch.float64), thr.detach().to("cpu", torch.float64)
    group_ids = groups.tolist() if isinstance(groups, Tensor) else list(groups)
    _check_inputs(r, sources, group_ids, temps, thr, agreement, kinds)

    scaled = (r / temps).tolist()  # a muted judge (T = inf) scores 0 for everyone
    score = [sum(row) / n_judges for row in scaled]
    delta = thr.tolist()
    need = n_judges if agreement == "all" else n_judges // 2 + 1
    members: dict[int, dict[str, list[int]]] = {}
    for i, (src, g) in enumerate(zip(sources, group_ids, strict=True)):
        members.setdefault(g, {s: [] for s in SOURCES})[src].append(i)

    rows: list[tuple[int, int, str, int, float, float]] = []
    rejected = dict.fromkeys(REJECTION_REASONS, 0)

    def judge(a: int, b: int, kind: str, g: int) -> None:
        margins = [scaled[a][k] - scaled[b][k] for k in range(n_judges)]
        for_a = sum(m > d for m, d in zip(margins, delta, strict=True))
        for_b = sum(m < -d for m, d in zip(margins, delta, strict=True))
        if for_a >= need or for_b >= need:
            sign, votes = (1.0, for_a) if for_a >= need else (-1.0, for_b)
            w, lo = (a, b) if sign > 0 else (b, a)
            rows.append((w, lo, kind, g, sign * sum(margins) / n_judges, votes / n_judges))
        else:
            rejected["judges_disagree" if for_a and for_b else "below_threshold"] += 1

    for g, by_source in members.items():
        on = by_source["on_policy"]
        best = max(on, key=lambda i: score[i], default=None)  # max/min return the first
        worst = min(reversed(on), key=lambda i: score[i], default=None)  # ... so last min
        if "within_group" in kinds:
            if len(on) < 2:
                rejected["too_few_on_policy"] += 1
            else:
                judge(best, worst, "within_group", g)
        for kind, source, partner in (("vs_weak", "weak", best), ("vs_curated", "curated", worst)):
            if kind not in kinds:
                continue
            for i in by_source[source]:
                if partner is None:
                    rejected["no_on_policy"] += 1
                else:
                    judge(partner, i, kind, g)

    w, lo, kind, g, margin, agree = zip(*rows, strict=True) if rows else ((),) * 6
    return PreferencePairs(
        winner=torch.tensor(w, dtype=torch.long),
        loser=torch.tensor(lo, dtype=torch.long),
        kind=tuple(kind),
        group=torch.tensor(g, dtype=torch.long),
        margin=torch.tensor(margin, dtype=torch.float64),
        agreement=torch.tensor(agree, dtype=torch.float64),
        rejected=rejected,
    )
