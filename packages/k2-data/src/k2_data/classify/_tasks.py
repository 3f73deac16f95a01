"""Labelling tasks for a VLM (system prompt, question, answer classes) and answer parsing."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class LabelTask:
    """What the VLM is asked, and which answers count as which class.

    Args:
        name: short identifier (used in file names and reports).
        system_prompt: the task-specific system prompt (the report has a large VLM draft it).
        question: the user turn shown next to each image.
        classes: answer classes, e.g. ("yes", "no") or class names; matched case-insensitively
            as whole words in the reply.
        positive: the class the filter flags (one of `classes`).
    """

    name: str
    system_prompt: str
    question: str
    classes: tuple[str, ...] = ("yes", "no")
    positive: str = "yes"

    def __post_init__(self) -> None:
        folded = [c.casefold().strip() for c in self.classes]
        if len(folded) < 2 or len(set(folded)) != len(folded) or not all(folded):
            raise ValueError(f"classes must be >= 2 distinct non-empty names, got {self.classes!r}")
        if self.positive.casefold() not in folded:
            raise ValueError(f"positive {self.positive!r} is not one of classes {self.classes!r}")
        if not self.question.strip():
            raise ValueError("question is empty")


AI_GENERATED = LabelTask(
    name="ai_generated",
    system_prompt=(
        "You are an image-forensics expert. Decide whether an image was produced by a "
        "generative model (diffusion, GAN, autoregressive) rather than captured by a camera, "
        "scanned, or made by a person with conventional tools. Look for telltale signs: "
        "malformed hands, teeth or text; inconsistent lighting, reflections and shadows; "
        "melted or repeating textures; over-smooth skin; a glossy 'default' aesthetic; "
        "objects merging into each other. Answer with one word: yes or no."
    ),
    question="Is this image AI-generated? Answer yes or no.",
)
"""The report's AI-generated-image filter ("we use no AI-generated images in our pretraining
mix"), run through the same pseudo-label loop as any other classifier."""

FLAT_BORDER = LabelTask(
    name="flat_border",
    system_prompt=(
        "You inspect images for training an image generator. Flag images whose content sits "
        "on a large flat single-colour background or inside flat-colour borders, bars or "
        "frames (letterboxing, padding, product shots on blank backdrops, screenshots with "
        "empty margins). Natural skies, walls with texture and shallow depth of field do not "
        "count. Answer with one word: yes or no."
    ),
    question="Does this image have a flat-colour background or flat borders? Answer yes or no.",
)
"""The report's flat-colour background and border-artifact filter."""

LABEL_TASKS: dict[str, LabelTask] = {t.name: t for t in (AI_GENERATED, FLAT_BORDER)}
"""Named presets of the pseudo-label prompt."""


def parse_label(reply: str, classes: Sequence[str]) -> str | None:
    """The class a free-text reply names first, or None when it names none.

    Classes match case-insensitively as whole words ("no" is not found in "not" or
    "nothing"); the earliest match wins, and at the same position the longer class
    ("dark grey" over "dark"). The returned name is spelt as in `classes`.

    Args:
        reply: the model's reply.
        classes: the answer classes.

    Returns:
        One of `classes`, or None (the sample is then left out of training and counted).
    """
    text = reply.casefold()
    best: tuple[int, int, str] | None = None
    for name in classes:
        words = name.casefold().split()
        if not words:
            continue
        # Whitespace inside a multi-word class may be any run of spaces or punctuation.
        pattern = r"(?<!\w)" + r"[\W_]+".join(map(re.escape, words)) + r"(?!\w)"
        match = re.search(pattern, text)
        if match and (best is None or (match.start(), -len(name)) < (best[0], best[1])):
            best = (match.start(), -len(name), name)
    return None if best is None else best[2]
