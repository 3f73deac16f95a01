"""Batched generation with a local vision-language model (e.g. Qwen2-VL / Qwen3-VL)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from k2_data.hashing import ImageBatch, as_pil

try:
    import torch
except ImportError:  # only the VLM needs torch (the [embed] extra); probes and calibration do not
    torch = None  # type: ignore[assignment]

_NO_MODEL = (
    "no {what} checkpoint at {path} (config.json missing): put a transformers {kind} model "
    "with its processor/tokenizer files there, e.g. `hf download {example} --local-dir {path}`"
)


def check_checkpoint(path: str | os.PathLike[str], *, what: str, kind: str, example: str) -> Path:
    """The checkpoint directory, or FileNotFoundError naming the path and what to put there."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(_NO_MODEL.format(what=what, path=path, kind=kind, example=example))
    return path


def decode_new_tokens(output: torch.Tensor, prompt_length: int, tokenizer: Any) -> list[str]:
    """Decode only the generated continuation of each row (left-padded prompts)."""
    return [
        text.strip()
        for text in tokenizer.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
    ]


class VLMGenerator:
    """Answer one text prompt per image with a transformers image-text-to-text model.

    Greedy decoding by default, left padding so a batch of prompts of different lengths
    generates together. The system prompt is the task's (pseudo-labelling) or the
    captioning instruction.

    Args:
        model: e.g. `Qwen3VLForConditionalGeneration` / `Qwen2VLForConditionalGeneration`.
        processor: its processor (`processor(text=, images=, padding=True)`).
        text_template: full input text with `{system}` and `{prompt}` and the model's image
            placeholder; None uses the processor's chat template (system turn, then a user
            turn with the image and the prompt).
        max_new_tokens: generation length.
        batch_size: images per `generate` call.
        generate_kwargs: extra `generate` arguments (e.g. sampling).

    References:
        Krea 2 report, Data: "use a large VLM to craft a task-specific system prompt ...
        produce a pseudo-labeled dataset"; Captioning (VLM stage).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        text_template: str | None = None,
        max_new_tokens: int = 64,
        batch_size: int = 8,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(
                f"need batch_size, max_new_tokens >= 1, got {batch_size}, {max_new_tokens}"
            )
        if text_template is None and not getattr(processor, "chat_template", None):
            raise ValueError(
                "the processor has no chat template: pass text_template= with the model's image "
                "placeholder, '{system}' and '{prompt}'"
            )
        if text_template is not None and "{prompt}" not in text_template:
            raise ValueError("text_template must contain '{prompt}'")
        self.model = model.eval()
        self.processor = processor
        self.text_template = text_template
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.generate_kwargs = {"do_sample": False} | (generate_kwargs or {})

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype | str = "bfloat16",
        device: torch.device | str = "cpu",
        **kwargs: Any,
    ) -> VLMGenerator:
        """Load a VLM and its processor from a local directory only."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = check_checkpoint(
            path, what="VLM", kind="image-text-to-text", example="Qwen/Qwen3-VL-8B-Instruct"
        )
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, dtype=dtype
        )
        return cls(model.to(device), processor, **kwargs)

    def build_text(self, prompt: str, system_prompt: str | None = None) -> str:
        """The full input text for one image (the image itself goes through the processor)."""
        if self.text_template is not None:
            return self.text_template.format(system=system_prompt or "", prompt=prompt)
        messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        messages.append(
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        )
        return self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def __call__(
        self, images: ImageBatch, prompts: Sequence[str], system_prompt: str | None = None
    ) -> list[str]:
        """One reply per (image, prompt) pair."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        with torch.no_grad():
            return self._generate(images, prompts, system_prompt)

    def _generate(
        self, images: ImageBatch, prompts: Sequence[str], system_prompt: str | None
    ) -> list[str]:
        device = next(self.model.parameters()).device
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        replies: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            inputs = self.processor(
                text=[self.build_text(p, system_prompt) for p in prompts[start:stop]],
                images=[as_pil(im).convert("RGB") for im in images[start:stop]],
                padding=True,
                padding_side="left",
                return_tensors="pt",
            ).to(device)
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, **self.generate_kwargs
            )
            replies.extend(decode_new_tokens(out, inputs["input_ids"].shape[1], tokenizer))
        return replies
