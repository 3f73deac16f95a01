"""Caption prompts (OCR text + metadata) and the short/medium rewrite: prompt and parser."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

CAPTION_INSTRUCTION = (
    "Write a long, detailed caption of this image in natural language. Describe the main "
    "subjects, their attributes, counts and positions, the setting, lighting, colours, "
    "composition, medium and style. Quote any visible text exactly, in double quotes. Use "
    "the context below where it is consistent with the image: name known entities, and "
    "correct obvious OCR mistakes."
)

REFORMAT_INSTRUCTION = (
    "Rewrite the image caption below into two shorter versions. short: a prompt of at most "
    "12 words with the main subject. medium: one or two sentences, at most 40 words, with "
    "the key subjects, attributes and style. Keep named entities and quoted text exactly. "
    'Reply with JSON only: {{"short": "...", "medium": "..."}}\n\nCaption: {caption}'
)


class CaptionParseError(ValueError):
    """The rewrite model's reply did not contain both variants."""


def _format_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={_format_value(v)}" for k, v in value.items())
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


def format_metadata(metadata: Mapping[str, Any] | None) -> str:
    """One "- key: value" line per non-empty field, in the mapping's order."""
    if not metadata:
        return ""
    lines = [
        f"- {key}: {_format_value(value)}"
        for key, value in metadata.items()
        if value is not None
        and value != ""
        and not (isinstance(value, Sequence | Mapping) and not value)
    ]
    return "\n".join(lines)


def caption_prompt(
    *,
    ocr_text: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    instruction: str = CAPTION_INSTRUCTION,
    max_ocr_chars: int = 2000,
) -> str:
    """The VLM's captioning prompt for one image: instruction, OCR text, metadata.

    Args:
        ocr_text: text OCR found; "" means OCR ran and found none; None means no OCR ran
            (the section is then left out rather than claiming there is no text).
        metadata: known context (camera settings, known entities, source page title, ...).
        instruction: the captioning instruction.
        max_ocr_chars: longer OCR text is cut (dense documents would crowd out the image).

    Returns:
        The prompt text.

    References:
        Krea 2 report, Captioning: "we provide both the OCR results and any available metadata
        (camera settings, known entities, and so on) to the captioning model".
    """
    parts = [instruction.strip()]
    if ocr_text is not None:
        text = ocr_text.strip()
        if len(text) > max_ocr_chars:
            text = text[:max_ocr_chars].rstrip() + " …"
        parts.append(
            f"Text detected in the image by OCR (may contain errors):\n{text}"
            if text
            else "OCR detected no text in the image."
        )
    context = format_metadata(metadata)
    if context:
        parts.append(f"Context about the image:\n{context}")
    return "\n\n".join(parts)


def reformat_prompt(long_caption: str, *, template: str = REFORMAT_INSTRUCTION) -> str:
    """The rewrite model's prompt for one long caption (template with `{caption}`)."""
    if "{caption}" not in template:
        raise ValueError("the reformat template must contain '{caption}'")
    return template.format(caption=long_caption.strip())


def _clean(text: str) -> str:
    text = text.strip().strip("*_` ").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _from_json(reply: str) -> dict[str, str] | None:
    """The variants of the first JSON object naming either; None when no object does."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", reply):
        try:
            obj, _ = decoder.raw_decode(reply, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            found = {str(k).strip().casefold(): v for k, v in obj.items()}
            if "short" in found or "medium" in found:
                return {
                    k: _clean(v) for k in ("short", "medium") if isinstance(v := found.get(k), str)
                }
    return None


# Leading bullets/markdown may not include a newline, or a label would swallow blank lines.
_LABEL = re.compile(r"^[^\w\n]*(short|medium)\b[^:\n]{0,20}:(.*)$", re.IGNORECASE | re.MULTILINE)


def parse_variants(reply: str) -> dict[str, str]:
    """Read {"short": ..., "medium": ...} from a rewrite model's reply.

    Accepts a JSON object anywhere in the reply (code fences and chatter around it are
    ignored) or labelled lines ("Short: ...", "**Medium caption:** ..."), where a label
    alone on its line takes the next non-empty line.

    Raises:
        CaptionParseError: naming the missing variants and quoting the reply.
    """
    found = _from_json(reply)
    if found is None:  # no JSON answer: labelled lines
        found = {}
        lines = reply.splitlines()
        for m in _LABEL.finditer(reply):
            key = m.group(1).casefold()
            text = _clean(m.group(2))
            if not text:  # label on its own line: the variant is on the next non-empty one
                row = reply.count("\n", 0, m.start(1))
                text = next((_clean(x) for x in lines[row + 1 :] if _clean(x)), "")
            found.setdefault(key, text)
    missing = [k for k in ("short", "medium") if not found.get(k)]
    if missing:
        raise CaptionParseError(
            f"the rewrite reply has no {' and no '.join(missing)} caption; model output was: "
            f"{reply!r}"
        )
    return {k: found[k] for k in ("short", "medium")}
