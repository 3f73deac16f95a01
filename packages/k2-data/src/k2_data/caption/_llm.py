"""Batched generation with a local text-only causal LM (the cheaper caption-rewrite model)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from k2_data.classify import check_checkpoint, decode_new_tokens


class LLMGenerator:
    """Answer text prompts with a transformers causal LM (greedy by default, left padding).

    Args:
        model: e.g. `Qwen3ForCausalLM`.
        tokenizer: its tokenizer.
        system_prompt: optional system turn (chat template only).
        text_template: full input text with `{prompt}`; None uses the tokenizer's chat
            template.
        max_new_tokens: generation length.
        batch_size: prompts per `generate` call.
        generate_kwargs: extra `generate` arguments.

    References:
        Krea 2 report, Captioning: "we use a cheaper LLM to reformat it into a variety of
        lengths and formats".
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        system_prompt: str | None = None,
        text_template: str | None = None,
        max_new_tokens: int = 128,
        batch_size: int = 16,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")
        if text_template is None and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "the tokenizer has no chat template: pass text_template= containing '{prompt}'"
            )
        if text_template is not None and "{prompt}" not in text_template:
            raise ValueError("text_template must contain '{prompt}'")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.system_prompt, self.text_template = system_prompt, text_template
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.generate_kwargs = {"do_sample": False} | (generate_kwargs or {})

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> LLMGenerator:
        """Load a causal LM and its tokenizer from a local directory only."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = check_checkpoint(path, what="LLM", kind="causal-LM", example="Qwen/Qwen3-4B")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
        return cls(model.to(device), tokenizer, **kwargs)

    def build_text(self, prompt: str) -> str:
        if self.text_template is not None:
            return self.text_template.format(prompt=prompt)
        messages = (
            []
            if self.system_prompt is None
            else [{"role": "system", "content": self.system_prompt}]
        )
        messages.append({"role": "user", "content": prompt})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> list[str]:
        """One reply per prompt."""
        device = next(self.model.parameters()).device
        replies: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            texts = [self.build_text(p) for p in prompts[start : start + self.batch_size]]
            inputs = self.tokenizer(
                texts, padding=True, padding_side="left", return_tensors="pt"
            ).to(device)
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, **self.generate_kwargs
            )
            replies.extend(decode_new_tokens(out, inputs["input_ids"].shape[1], self.tokenizer))
        return replies
