"""Text-rendering reward: OCR the image and compare with the quoted text of the prompt."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from k2_rl.rewards._rubric import ImageBatch, Requirement

OCRFn = Callable[[Any], Sequence[tuple[str, float]]]
"""image -> recognised lines as (text, confidence), e.g. a wrapper around RapidOCR/PaddleOCR."""

_QUOTES = re.compile(r'"([^"]+)"|“([^”]+)”|«([^»]+)»|「([^」]+)」')


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1) between two strings.

    Written here (two-row dynamic programme, O(len(a)·len(b))) so k2-rl needs no C
    extension for a few short strings per image.

    Args:
        a: first string.
        b: second string.

    Returns:
        The minimum number of single-character edits turning `a` into `b`.

    References:
        Levenshtein 1966; Wagner & Fischer 1974 (the dynamic programme).
    """
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _normalise(text: str, *, case_sensitive: bool, ignore_spaces: bool) -> str:
    text = text if case_sensitive else text.lower()
    return re.sub(r"\s+", "" if ignore_spaces else " ", text).strip()


def text_similarity(
    prediction: str, target: str, *, case_sensitive: bool = False, ignore_spaces: bool = True
) -> float:
    """1 - min(d, |target|) / |target| with d the edit distance, after normalisation.

    Args:
        prediction: the recognised text.
        target: the text that should be rendered.
        case_sensitive: compare case too.
        ignore_spaces: drop all whitespace before comparing (OCR splits lines arbitrarily).

    Returns:
        A similarity in [0, 1]; 1 means identical. An empty target scores 1 only against
        an empty prediction.

    References:
        Liu et al. 2025, Flow-GRPO (arXiv 2505.05470), OCR reward 1 - min(d, |t|) / |t|.
    """
    p = _normalise(prediction, case_sensitive=case_sensitive, ignore_spaces=ignore_spaces)
    t = _normalise(target, case_sensitive=case_sensitive, ignore_spaces=ignore_spaces)
    if not t:
        return float(not p)
    return 1.0 - min(levenshtein(p, t), len(t)) / len(t)


def quoted_text(prompt: str) -> list[str]:
    """The spans of a prompt in double quotes ("...", “...”, «...», 「...」), in order."""
    return [next(g for g in m.groups() if g is not None) for m in _QUOTES.finditer(prompt)]


def _recognised(image: Any, ocr: OCRFn, min_confidence: float) -> str:
    return " ".join(text for text, conf in ocr(image) if conf >= min_confidence)


def text_rendering_reward(
    images: ImageBatch,
    prompts: Sequence[str],
    ocr: OCRFn,
    *,
    min_confidence: float = 0.0,
    case_sensitive: bool = False,
    ignore_spaces: bool = True,
    no_text_score: float = 1.0,
) -> Float[Tensor, " n"]:
    """Score how well each image renders the quoted text of its prompt.

    The target is all quoted spans joined by spaces; the prediction is every OCR line with
    confidence >= `min_confidence`, joined the same way.

    Args:
        images: one image per prompt, in whatever form `ocr` takes.
        prompts: the prompts.
        ocr: image -> [(text, confidence), ...].
        min_confidence: OCR lines below it are ignored.
        case_sensitive: compare case too.
        ignore_spaces: drop whitespace before comparing.
        no_text_score: the score of a prompt that quotes nothing (constant within a group,
            so it adds no advantage after group normalisation).

    Returns:
        `text_similarity` per image, float32.

    References:
        Krea 2 report, Reinforcement learning (text-rendering reward); Flow-GRPO OCR reward.
    """
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
    scores = []
    for image, prompt in zip(images, prompts, strict=True):
        spans = quoted_text(prompt)
        if not spans:
            scores.append(no_text_score)
            continue
        found = _recognised(image, ocr, min_confidence)
        scores.append(
            text_similarity(
                found, " ".join(spans), case_sensitive=case_sensitive, ignore_spaces=ignore_spaces
            )
        )
    return torch.tensor(scores, dtype=torch.float32)


class OCRVerifier:
    """A rubric `Verifier` for text requirements: the similarity of the OCR'd text to the
    requirement's target (`params["target"]`, else the quoted spans of its text).

    Args:
        ocr: image -> [(text, confidence), ...].
        min_confidence: OCR lines below it are ignored.
        case_sensitive: compare case too.
    """

    def __init__(self, ocr: OCRFn, *, min_confidence: float = 0.0, case_sensitive: bool = False):
        self.ocr = ocr
        self.min_confidence = min_confidence
        self.case_sensitive = case_sensitive

    def __call__(
        self, images: ImageBatch, requirements: Sequence[Requirement]
    ) -> Float[Tensor, " m"]:
        seen: dict[int, str] = {}
        out = []
        for image, req in zip(images, requirements, strict=True):
            target = req.params.get("target") or " ".join(quoted_text(req.text))
            if not target:
                raise ValueError(
                    f"text requirement {req.id!r} names no target: put it in params['target'] "
                    "or in double quotes in its text"
                )
            if id(image) not in seen:
                seen[id(image)] = _recognised(image, self.ocr, self.min_confidence)
            out.append(text_similarity(seen[id(image)], target, case_sensitive=self.case_sensitive))
        return torch.tensor(out, dtype=torch.float32)
