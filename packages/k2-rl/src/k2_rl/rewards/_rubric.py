"""Prompt rubrics: typed, weighted requirements with dependency edges, and the interfaces
that produce (decomposers) and check (verifiers) them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor

ImageBatch = Any
"""A batch of images in whatever form the reward or verifier takes: a list of PIL images or
arrays, or an array / tensor with a leading batch axis (indexing gives one image)."""

RUBRIC_TYPES: tuple[str, ...] = (
    "object",
    "attribute",
    "count",
    "position",
    "relation",
    "text",
    "style",
    "background",
    "other",
)
"""Requirement types the LLM decomposer accepts by default; verifiers route on them."""


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """One yes/no-checkable claim a prompt makes about the image.

    Args:
        id: unique within its rubric; dependencies refer to it.
        type: what kind of claim (see `RUBRIC_TYPES`); verifiers may route on it.
        text: the claim in words, phrased so that "yes" means satisfied.
        weight: relative importance in the rubric's weighted mean (> 0).
        depends_on: ids of requirements that must hold for this one to be meaningful
            (e.g. a count depends on the object being present).
        params: structured arguments for deterministic verifiers (e.g. the target text of
            a text requirement); JSON-serialisable.
    """

    id: str
    type: str
    text: str
    weight: float = 1.0
    depends_on: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str):
            raise ValueError(f"requirement id must be a non-empty string, got {self.id!r}")
        if not self.text.strip():
            raise ValueError(f"requirement {self.id!r} has empty text; state the claim in words")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(
                f"requirement {self.id!r} has weight {self.weight}; use a finite w > 0"
            )
        if isinstance(self.depends_on, str):
            raise ValueError(
                f"requirement {self.id!r}: depends_on must be a tuple of ids, got the string "
                f"{self.depends_on!r}; wrap it as ({self.depends_on!r},)"
            )
        if self.id in self.depends_on:
            raise ValueError(f"requirement {self.id!r} depends on itself")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (inverse of `Requirement(**d)` after tuple conversion)."""
        return {
            "id": self.id,
            "type": self.type,
            "text": self.text,
            "weight": self.weight,
            "depends_on": list(self.depends_on),
            "params": dict(self.params),
        }


@dataclass(frozen=True, kw_only=True)
class Rubric:
    """The requirements of one prompt, validated as a DAG and kept in topological order.

    Args:
        prompt: the prompt the rubric was made for.
        requirements: its requirements; every dependency must name one of them and the
            dependency graph must be acyclic. They are reordered so parents come first
            (stable for an already ordered list).
    """

    prompt: str
    requirements: tuple[Requirement, ...]

    def __post_init__(self) -> None:
        if not self.requirements:
            raise ValueError(f"rubric for {self.prompt!r} has no requirements; add at least one")
        ids = [r.id for r in self.requirements]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"rubric for {self.prompt!r} repeats requirement ids {dup}")
        known = set(ids)
        for r in self.requirements:
            missing = [d for d in r.depends_on if d not in known]
            if missing:
                raise ValueError(
                    f"requirement {r.id!r} depends on unknown ids {missing}; known ids: {ids}"
                )
        object.__setattr__(self, "requirements", _topological(self.requirements))

    @property
    def ids(self) -> tuple[str, ...]:
        """Requirement ids in topological order."""
        return tuple(r.id for r in self.requirements)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, for caching decompositions offline."""
        return {"prompt": self.prompt, "requirements": [r.to_dict() for r in self.requirements]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rubric:
        """Rebuild a rubric written by `to_dict`."""
        reqs = tuple(
            Requirement(
                id=r["id"],
                type=r["type"],
                text=r["text"],
                weight=float(r.get("weight", 1.0)),
                depends_on=tuple(r.get("depends_on", ())),
                params=dict(r.get("params", {})),
            )
            for r in data["requirements"]
        )
        return cls(prompt=data["prompt"], requirements=reqs)


def _topological(reqs: tuple[Requirement, ...]) -> tuple[Requirement, ...]:
    # Kahn's algorithm, always taking the earliest ready requirement so order is stable.
    remaining = list(reqs)
    done: set[str] = set()
    out: list[Requirement] = []
    while remaining:
        ready = next((r for r in remaining if all(d in done for d in r.depends_on)), None)
        if ready is None:
            cycle = sorted(r.id for r in remaining)
            raise ValueError(f"requirement dependencies form a cycle among {cycle}; remove an edge")
        out.append(ready)
        done.add(ready.id)
        remaining.remove(ready)
    return tuple(out)


@runtime_checkable
class Decomposer(Protocol):
    """Turns a prompt into its rubric (an LLM, a rule-based parser, a cache)."""

    def __call__(self, prompt: str) -> Rubric: ...


@runtime_checkable
class Verifier(Protocol):
    """Scores (image, requirement) pairs: `images[i]` against `requirements[i]`.

    Returns a tensor of shape [len(images)] with the probability, in [0, 1], that each
    requirement holds. Pairs of one image share the image object, so a verifier may
    deduplicate work by identity.
    """

    def __call__(
        self, images: ImageBatch, requirements: Sequence[Requirement]
    ) -> Float[Tensor, " m"]: ...
