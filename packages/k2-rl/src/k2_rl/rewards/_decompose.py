"""Decomposing a prompt into a rubric with a local LLM (transformers), with robust parsing."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from k2_rl.rewards._rubric import RUBRIC_TYPES, Requirement, Rubric

INSTRUCTIONS = """You turn an image-generation prompt into a checklist of requirements that \
a judge can verify by looking at the image. Each requirement is one yes/no claim.
Reply with JSON only: a list of objects with the keys
  "id": a short unique name, "type": one of {types},
  "text": the claim, phrased so that yes means satisfied,
  "weight": importance from 0.1 to 3 (3 = essential),
  "depends_on": ids that must hold first (e.g. a count depends on the object being present).
Put text to be rendered in the image in double quotes inside "text".
Example for "two red apples on a wooden table":
[{{"id": "apples", "type": "object", "text": "apples are present", "weight": 3, "depends_on": []}},
 {{"id": "apples_count", "type": "count", "text": "there are exactly two apples", "weight": 2, "depends_on": ["apples"]}},
 {{"id": "apples_red", "type": "attribute", "text": "the apples are red", "weight": 2, "depends_on": ["apples"]}},
 {{"id": "table", "type": "object", "text": "there is a wooden table", "weight": 2, "depends_on": []}},
 {{"id": "on_table", "type": "relation", "text": "the apples are on the table", "weight": 1, "depends_on": ["apples", "table"]}}]"""


class RubricParseError(ValueError):
    """A decomposer's output could not be read as a list of requirements."""


def _error(msg: str, text: str) -> RubricParseError:
    snippet = text if len(text) <= 300 else text[:300] + "..."
    return RubricParseError(f"{msg}; model output was: {snippet!r}")


def _json_candidates(text: str) -> list[Any]:
    """Every JSON array or object that can be decoded starting at a bracket, in order."""
    text = re.sub(r"```(?:json)?", "", text)
    # Trailing commas are the most common slip of small models; JSON forbids them.
    text = re.sub(r",(\s*[\]}])", r"\1", text)
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        found.append(value)
    return found


def _items(value: Any) -> list[Any] | None:
    if isinstance(value, dict):
        value = value.get("requirements")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return value
    return None


def _requirement(item: dict[str, Any], i: int, allowed: Sequence[str], text: str) -> Requirement:
    claim = item.get("text") or item.get("requirement") or item.get("question")
    if not isinstance(claim, str) or not claim.strip():
        raise _error(f"requirement {i} has no 'text'", text)
    kind = str(item.get("type", "other")).strip().lower()
    if kind not in allowed:
        raise _error(f"requirement {i} has type {kind!r}, not one of {list(allowed)}", text)
    weight = item.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise _error(f"requirement {i} has non-numeric weight {weight!r}", text)
    if weight <= 0:
        raise _error(f"requirement {i} has weight {weight}; weights must be > 0", text)
    deps = item.get("depends_on") or []
    deps = [deps] if isinstance(deps, str) else deps
    if not isinstance(deps, list) or not all(isinstance(d, str | int) for d in deps):
        raise _error(f"requirement {i} has depends_on {deps!r}; expected a list of ids", text)
    params = item.get("params") or {}
    return Requirement(
        id=str(item.get("id") or f"r{i + 1}"),
        type=kind,
        text=claim.strip(),
        weight=float(weight),
        depends_on=tuple(str(d) for d in deps),
        params=params if isinstance(params, dict) else {},
    )


def parse_rubric(text: str, *, prompt: str, allowed_types: Sequence[str] = RUBRIC_TYPES) -> Rubric:
    """Read a rubric from a model's reply: the first JSON list of requirement objects (or an
    object with a "requirements" list), tolerating code fences, chatter and trailing commas.

    Args:
        text: the model's reply.
        prompt: the prompt the rubric belongs to.
        allowed_types: accepted requirement types (lower-cased).

    Returns:
        The validated rubric (ids default to r1, r2, ...; weights to 1).

    Raises:
        RubricParseError: naming what is missing or invalid, with the reply's start.
    """
    for value in _json_candidates(text):
        items = _items(value)
        if items is not None:
            reqs = tuple(_requirement(item, i, allowed_types, text) for i, item in enumerate(items))
            try:
                return Rubric(prompt=prompt, requirements=reqs)
            except ValueError as err:
                raise _error(f"the requirements are inconsistent ({err})", text) from err
    raise _error(
        "no JSON list of requirement objects found; the model must reply with "
        '[{"id": ..., "type": ..., "text": ..., "weight": ..., "depends_on": [...]}, ...]',
        text,
    )


class LLMDecomposer:
    """Decompose a prompt into a rubric by asking a local instruction-tuned LLM for JSON.

    Give either a transformers causal LM and its tokenizer, or `generate` (text -> reply),
    e.g. a client of an inference server. Decoding is greedy, so a prompt always gets the
    same rubric; cache decompositions offline (`Rubric.to_dict`) for training.

    Args:
        model: a transformers causal LM (or None when `generate` is given).
        tokenizer: its tokenizer; its chat template is used when it has one.
        generate: replaces the model call: takes the full input text, returns the reply.
        instructions: the task description; `{types}` is filled with `allowed_types`.
        allowed_types: requirement types the model may use.
        max_new_tokens: the reply's length limit.

    References:
        Krea 2 report, Reinforcement learning ("decompose each prompt into verifiable
        requirements"); Gunjal et al. 2025, Rubrics as Rewards (arXiv 2507.17746).
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        generate: Callable[[str], str] | None = None,
        instructions: str = INSTRUCTIONS,
        allowed_types: Sequence[str] = RUBRIC_TYPES,
        max_new_tokens: int = 768,
    ) -> None:
        if generate is None and (model is None or tokenizer is None):
            raise ValueError("LLMDecomposer needs a model and a tokenizer, or generate=")
        self.model = model.eval() if model is not None else None
        self.tokenizer = tokenizer
        self.instructions = instructions.format(types=", ".join(allowed_types))
        self.allowed_types = tuple(allowed_types)
        self.max_new_tokens = max_new_tokens
        self._generate = generate or self._generate_with_model

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> LLMDecomposer:
        """Load an instruction-tuned causal LM and its tokenizer from a local directory."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"no LLM checkpoint at {path} (config.json missing): put an instruction-tuned "
                "transformers causal LM there (config.json, tokenizer files, *.safetensors)"
            )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
        return cls(model.to(device), tokenizer, **kwargs)

    def build_prompt(self, prompt: str) -> str:
        """The full input text for one prompt (chat-templated when the tokenizer has one)."""
        user = f'Prompt: "{prompt}"\nRequirements (JSON list):'
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            messages = [
                {"role": "system", "content": self.instructions},
                {"role": "user", "content": user},
            ]
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return f"{self.instructions}\n\n{user}\n"

    def _generate_with_model(self, text: str) -> str:
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        inputs = inputs.to(next(self.model.parameters()).device)
        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        with torch.no_grad():
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad
            )
        reply = out[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(reply, skip_special_tokens=True)

    def __call__(self, prompt: str) -> Rubric:
        reply = self._generate(self.build_prompt(prompt))
        return parse_rubric(reply, prompt=prompt, allowed_types=self.allowed_types)
