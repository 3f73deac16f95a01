"""A VLM judge that scores a requirement as P(yes) / (P(yes) + P(no)) from next-token logits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from k2_rl.rewards._rubric import ImageBatch, Requirement

QUESTION = 'Does the image satisfy this requirement: "{requirement}"? Answer yes or no.'


def yes_no_probability(
    logits: Float[Tensor, "b v"], yes_ids: Int[Tensor, " y"], no_ids: Int[Tensor, " z"]
) -> Float[Tensor, " b"]:
    """P(yes) / (P(yes) + P(no)) from next-token logits, summing over spelling variants.

    Computed as sigmoid(logsumexp(yes logits) - logsumexp(no logits)): the softmax
    normaliser cancels, so no full-vocabulary softmax is needed and nothing underflows.

    Args:
        logits: next-token logits of each sequence.
        yes_ids: token ids counted as "yes" ("yes", "Yes", ...).
        no_ids: token ids counted as "no".

    Returns:
        The yes probability renormalised over {yes, no}, in [0, 1], in float32 or wider.

    References:
        Lin et al. 2024, VQAScore (arXiv 2404.01291), P("Yes") of a VLM as an alignment
        score; Flow-Factory `vllm_evaluate` (P(yes) from log-probabilities).
    """
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    yes = x[:, yes_ids].logsumexp(-1)
    no = x[:, no_ids].logsumexp(-1)
    return torch.sigmoid(yes - no)


def _single_token_ids(tokenizer: Any, words: Sequence[str], what: str) -> list[int]:
    ids = []
    for w in words:
        enc = tokenizer.encode(w, add_special_tokens=False)
        if len(enc) == 1 and enc[0] != getattr(tokenizer, "unk_token_id", None):
            ids.append(enc[0])
    if not ids:
        raise ValueError(
            f"none of the {what} words {list(words)} is a single known token of this tokenizer; "
            f"pass {what}_words= with words that are"
        )
    return sorted(set(ids))


def _last_positions(mask: Tensor) -> Tensor:
    # Index of the last real token per row; right or left padding alike.
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * positions).argmax(1)


class VLMYesNoVerifier:
    """Asks a vision-language model whether each (image, requirement) pair holds and reads the
    answer's probability from the first generated token's logits.

    Args:
        model: a transformers image-text-to-text model (e.g. Qwen2-VL / Qwen3-VL).
        processor: its processor: `processor(text=..., images=..., padding=True,
            return_tensors="pt")` builds the inputs; `processor.tokenizer` maps yes/no words.
        question: template of the question, with `{requirement}` for the requirement text.
        text_template: template of the full input text with `{question}`; None uses the
            processor's chat template (an image then the question as the user turn).
        yes_words: spellings counted as yes (each must be one token).
        no_words: spellings counted as no.
        batch_size: pairs per forward pass.

    References:
        Lin et al. 2024, VQAScore (arXiv 2404.01291); k2 research notes rl.md §3.3 (VLM
        P(yes) for requirements without a deterministic verifier).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        question: str = QUESTION,
        text_template: str | None = None,
        yes_words: Sequence[str] = ("yes", "Yes"),
        no_words: Sequence[str] = ("no", "No"),
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if "{requirement}" not in question:
            raise ValueError("question must contain '{requirement}'")
        if text_template is None and not getattr(processor, "chat_template", None):
            raise ValueError(
                "the processor has no chat template: pass text_template= with the model's image "
                "placeholder and '{question}'"
            )
        if text_template is not None and "{question}" not in text_template:
            raise ValueError("text_template must contain '{question}'")
        self.model = model.eval()
        self.processor = processor
        self.question = question
        self.text_template = text_template
        tokenizer = getattr(processor, "tokenizer", processor)
        self.yes_ids = torch.tensor(_single_token_ids(tokenizer, yes_words, "yes"))
        self.no_ids = torch.tensor(_single_token_ids(tokenizer, no_words, "no"))
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> VLMYesNoVerifier:
        """Load a VLM and its processor from a local directory only."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"no VLM checkpoint at {path} (config.json missing): put a transformers "
                "image-text-to-text model there, e.g. `hf download Qwen/Qwen3-VL-8B-Instruct "
                f"--local-dir {path}`"
            )
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, dtype=dtype
        )
        return cls(model.to(device), processor, **kwargs)

    def build_text(self, requirement: Requirement) -> str:
        """The full input text for one requirement (the image goes in through the processor)."""
        question = self.question.format(requirement=requirement.text)
        if self.text_template is not None:
            return self.text_template.format(question=question)
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    @torch.no_grad()
    def __call__(
        self, images: ImageBatch, requirements: Sequence[Requirement]
    ) -> Float[Tensor, " m"]:
        if len(images) != len(requirements):
            raise ValueError(f"got {len(images)} images but {len(requirements)} requirements")
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            texts = [self.build_text(r) for r in requirements[start:stop]]
            inputs = self.processor(
                text=texts,
                images=list(images[start:stop]),
                padding=True,
                padding_side="left",
                return_tensors="pt",
            )
            # Left padding puts every answer position last, so only one logit row per
            # sequence is computed (the full [b, L, vocab] tensor is gigabytes for a real VLM).
            mask = inputs["attention_mask"]
            left_padded = bool(mask[:, -1].all())  # still on the host: no device sync
            inputs = inputs.to(device)
            if left_padded:
                rows = self.model(**inputs, logits_to_keep=1).logits[:, -1]
            else:
                logits = self.model(**inputs).logits
                last = _last_positions(inputs["attention_mask"])
                rows = logits[torch.arange(logits.shape[0], device=device), last]
            out.append(yes_no_probability(rows, self.yes_ids.to(device), self.no_ids.to(device)))
        return torch.cat(out)
