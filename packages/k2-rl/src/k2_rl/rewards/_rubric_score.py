"""Scoring images against rubrics: batched verification, dependency gating, weighted mean."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from k2_rl.rewards._rubric import Decomposer, ImageBatch, Requirement, Rubric, Verifier

_GATINGS = ("hard", "soft")


@dataclass(frozen=True, kw_only=True)
class RequirementTable:
    """One row per (image, requirement) pair scored by `rubric_reward`.

    Args:
        image_index: the image (and rubric) each row belongs to.
        requirement_id: the requirement's id.
        type: the requirement's type.
        weight: the requirement's weight.
        probability: the verifier's probability that the requirement holds.
        gated: the probability after dependency gating (what the score averages).
    """

    image_index: Int[Tensor, " m"]
    requirement_id: tuple[str, ...]
    type: tuple[str, ...]
    weight: Float[Tensor, " m"]
    probability: Float[Tensor, " m"]
    gated: Float[Tensor, " m"]

    def rows(self) -> list[dict[str, Any]]:
        """The table as a list of dicts (for logging; copies to the host)."""
        cols = (self.image_index, self.weight, self.probability, self.gated)
        idx, w, p, g = (c.detach().cpu().tolist() for c in cols)
        return [
            {"image": idx[j], "id": self.requirement_id[j], "type": self.type[j], "weight": w[j]}
            | {"probability": p[j], "gated": g[j]}
            for j in range(len(idx))
        ]

    def mean_by_type(self) -> dict[str, float]:
        """Mean gated probability per requirement type (for logging; copies to the host)."""
        gated = self.gated.detach().cpu().tolist()
        out: dict[str, list[float]] = {}
        for kind, g in zip(self.type, gated, strict=True):
            out.setdefault(kind, []).append(g)
        return {k: sum(v) / len(v) for k, v in out.items()}


def _edges(rubrics: Sequence[Rubric]) -> tuple[list[int], list[int], list[int]]:
    """Flat (child, parent) edge lists and the DAG depth of every flat requirement."""
    child, parent, depth = [], [], []
    offset = 0
    for rubric in rubrics:
        local = {r.id: offset + j for j, r in enumerate(rubric.requirements)}
        for r in rubric.requirements:
            parents = [local[d] for d in r.depends_on]
            # Requirements are in topological order, so parents already have their depth.
            depth.append(1 + max((depth[p] for p in parents), default=-1))
            child += [local[r.id]] * len(parents)
            parent += parents
        offset += len(rubric.requirements)
    return child, parent, depth


def _gate(
    probability: Tensor,
    child: Tensor,
    parent: Tensor,
    depth: Tensor,
    *,
    levels: int,
    gating: str,
    threshold: float,
) -> Tensor:
    gated = probability.clone()
    # Level by level so every parent is final before its children read it; the number of
    # levels comes from the rubrics on the Python side, so the loop needs no host sync.
    for level in range(1, levels + 1):
        edge = depth[child] == level
        c, p = child[edge], parent[edge]
        parent_value = gated[p]
        factor = parent_value if gating == "soft" else (parent_value >= threshold).to(gated.dtype)
        ones = torch.ones_like(gated)
        prod = ones.scatter_reduce(0, c, factor, reduce="prod", include_self=True)
        at_level = depth == level
        gated = torch.where(at_level, probability * prod, gated)
    return gated


def rubric_reward(
    images: ImageBatch,
    rubrics: Sequence[Rubric],
    verifier: Verifier,
    *,
    gating: str = "hard",
    threshold: float = 0.5,
) -> tuple[Float[Tensor, " n"], RequirementTable]:
    """Score each image against its rubric: verify every requirement, gate, weighted mean.

    All (image, requirement) pairs of the batch go to the verifier in one call. A requirement
    whose dependency fails scores 0 ("hard": a parent fails when its gated probability is
    below `threshold`), or is multiplied by its parents' gated probabilities ("soft": the
    chance that the whole chain holds, if the checks were independent). Gating is transitive.

    Args:
        images: one image per rubric, in whatever form the verifier takes.
        rubrics: one rubric per image.
        verifier: scores (image, requirement) pairs with probabilities in [0, 1].
        gating: "hard" or "soft" dependency gating.
        threshold: the pass mark of a parent under hard gating.

    Returns:
        (scores, table): score_i = Σ_j w_j g_ij / Σ_j w_j over image i's requirements, with
        g the gated probabilities, and the per-requirement table.

    References:
        Gunjal et al. 2025, Rubrics as Rewards (arXiv 2507.17746), explicit aggregation
        r = Σ_j w_j c_j / Σ_j w_j; Arena-T2I Hard (arXiv 2606.31711), constraints as a DAG
        where a failed parent zeroes its descendants; Krea 2 report, Reinforcement learning
        (prompt-specific rubric reward).
    """
    if len(images) != len(rubrics):
        raise ValueError(f"rubric_reward got {len(images)} images but {len(rubrics)} rubrics")
    if gating not in _GATINGS:
        raise ValueError(f"unknown gating {gating!r}; use 'hard' or 'soft'")
    if len(images) == 0:
        raise ValueError("rubric_reward got an empty batch")
    image_list = [images[i] for i in range(len(images))]
    flat_images = [image_list[i] for i, r in enumerate(rubrics) for _ in r.requirements]
    flat_reqs: list[Requirement] = [q for r in rubrics for q in r.requirements]
    probability = verifier(flat_images, flat_reqs)
    if not isinstance(probability, Tensor) or probability.shape != (len(flat_reqs),):
        got = tuple(probability.shape) if isinstance(probability, Tensor) else type(probability)
        raise ValueError(
            f"verifier must return a tensor of shape ({len(flat_reqs)},), one probability per "
            f"(image, requirement) pair; got {got}"
        )
    if not probability.is_floating_point() or not bool(
        ((probability >= 0) & (probability <= 1)).all()
    ):
        raise ValueError("verifier returned values outside [0, 1]; return probabilities")
    device = probability.device
    edges = _edges(rubrics)
    child, parent, depth = (torch.tensor(x, dtype=torch.long, device=device) for x in edges)
    levels = max(edges[2])
    gated = _gate(
        probability, child, parent, depth, levels=levels, gating=gating, threshold=threshold
    )
    weight = torch.tensor([q.weight for q in flat_reqs], dtype=probability.dtype, device=device)
    sizes = [len(r.requirements) for r in rubrics]
    image_index = torch.repeat_interleave(
        torch.arange(len(rubrics), device=device), torch.tensor(sizes, device=device)
    )
    num = torch.zeros(len(rubrics), dtype=probability.dtype, device=device).index_add(
        0, image_index, weight * gated
    )
    den = torch.zeros(len(rubrics), dtype=probability.dtype, device=device).index_add(
        0, image_index, weight
    )
    table = RequirementTable(
        image_index=image_index,
        requirement_id=tuple(q.id for q in flat_reqs),
        type=tuple(q.type for q in flat_reqs),
        weight=weight,
        probability=probability,
        gated=gated,
    )
    return num / den, table


class RoutedVerifier:
    """Sends each requirement to the verifier registered for its type (deterministic checks
    where they exist, a VLM judge otherwise), in one batched call per verifier.

    Args:
        routes: requirement type -> verifier.
        default: verifier for every other type, or None to raise on an unrouted type.
    """

    def __init__(self, routes: Mapping[str, Verifier], *, default: Verifier | None = None) -> None:
        self.routes = dict(routes)
        self.default = default

    def __call__(
        self, images: ImageBatch, requirements: Sequence[Requirement]
    ) -> Float[Tensor, " m"]:
        buckets: dict[int, tuple[Verifier, list[int]]] = {}
        for j, req in enumerate(requirements):
            v = self.routes.get(req.type, self.default)
            if v is None:
                raise ValueError(
                    f"no verifier for requirement type {req.type!r} (routes: "
                    f"{sorted(self.routes)}); add a route or pass default="
                )
            buckets.setdefault(id(v), (v, []))[1].append(j)
        parts = {}
        for v, idx in buckets.values():
            parts[tuple(idx)] = v([images[j] for j in idx], [requirements[j] for j in idx])
        dtype = torch.float32
        for p in parts.values():
            dtype = torch.promote_types(dtype, p.dtype)
        out = torch.empty(len(requirements), dtype=dtype, device=next(iter(parts.values())).device)
        for idx, p in parts.items():
            out[list(idx)] = p.to(out)
        return out


class RubricReward:
    """A batched reward (images, prompts) -> scores that decomposes each prompt once (cached)
    and scores it with `rubric_reward`.

    Args:
        decomposer: prompt -> rubric (called once per distinct prompt).
        verifier: scores (image, requirement) pairs.
        gating: "hard" or "soft" (see `rubric_reward`).
        threshold: the pass mark of a parent under hard gating.
    """

    def __init__(
        self,
        decomposer: Decomposer,
        verifier: Verifier,
        *,
        gating: str = "hard",
        threshold: float = 0.5,
    ) -> None:
        if gating not in _GATINGS:
            raise ValueError(f"unknown gating {gating!r}; use 'hard' or 'soft'")
        self.decomposer = decomposer
        self.verifier = verifier
        self.gating: str = gating
        self.threshold = threshold
        self.cache: dict[str, Rubric] = {}
        self._lock = threading.Lock()

    def rubric(self, prompt: str) -> Rubric:
        """The (cached) rubric of a prompt."""
        with self._lock:
            found = self.cache.get(prompt)
        if found is None:
            found = self.decomposer(prompt)
            with self._lock:
                self.cache[prompt] = found
        return found

    def score(
        self, images: ImageBatch, prompts: Sequence[str]
    ) -> tuple[Float[Tensor, " n"], RequirementTable]:
        """Scores and the per-requirement table for a batch."""
        rubrics = [self.rubric(p) for p in prompts]
        return rubric_reward(
            images, rubrics, self.verifier, gating=self.gating, threshold=self.threshold
        )

    def __call__(self, images: ImageBatch, prompts: Sequence[str]) -> Float[Tensor, " n"]:
        return self.score(images, prompts)[0]
