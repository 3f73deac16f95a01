"""The captioning pipeline: OCR -> VLM long caption -> LLM short/medium rewrite, resumable."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from k2_data.caption._ocr import OcrEngine
from k2_data.caption._prompts import (
    CAPTION_INSTRUCTION,
    REFORMAT_INSTRUCTION,
    CaptionParseError,
    caption_prompt,
    parse_variants,
    reformat_prompt,
)
from k2_data.caption._store import CaptionStore
from k2_data.hashing import ImageBatch

MetadataSource = Callable[[str], Mapping[str, Any] | None] | Mapping[str, Mapping[str, Any]]
"""Per-key metadata: a key -> metadata callable, or a mapping (missing keys have none)."""


@dataclass(frozen=True, kw_only=True)
class CaptionRun:
    """What one `caption_images` call did.

    Args:
        computed: images captioned by this call (the rest were already stored).
        ok: of those, records with all three variants.
        unparsed: records whose rewrite reply could not be parsed (long caption kept).
        empty: records whose long caption came back empty.
    """

    computed: int
    ok: int
    unparsed: int
    empty: int


def _metadata_for(source: MetadataSource | None, key: str) -> Mapping[str, Any] | None:
    if source is None:
        return None
    return source.get(key) if isinstance(source, Mapping) else source(key)


def caption_images(
    keys: Sequence[str],
    load_images: Callable[[Sequence[str]], ImageBatch],
    store: CaptionStore,
    *,
    vlm: Callable[..., Sequence[str]],
    llm: Callable[[Sequence[str]], Sequence[str]],
    ocr: OcrEngine | None = None,
    metadata: MetadataSource | None = None,
    batch_size: int = 32,
    instruction: str = CAPTION_INSTRUCTION,
    system_prompt: str | None = None,
    reformat_template: str = REFORMAT_INSTRUCTION,
) -> CaptionRun:
    """Caption every key the store lacks, one stored part per batch.

    Per batch: OCR (when an engine is given) -> `caption_prompt` with the OCR text and the
    key's metadata -> `vlm` writes the long caption -> `llm` rewrites each non-empty long
    caption into short and medium variants (`parse_variants`). Every image ends up with a
    record; failures are recorded in `status`/`error`, never raised.

    Args:
        keys: every key to caption.
        load_images: keys -> decoded images (called for missing keys only).
        store: where records go; keys already there are skipped.
        vlm: (images, prompts, system_prompt=) -> long captions (`VLMGenerator`).
        llm: prompts -> rewrite replies (`LLMGenerator`).
        ocr: an OCR engine, or None (then `ocr_text` is null and the prompt has no OCR part).
        metadata: per-key context for the prompt.
        batch_size: images per batch (and per stored part).
        instruction: the captioning instruction.
        system_prompt: the VLM's system prompt.
        reformat_template: the rewrite prompt template.

    Returns:
        A `CaptionRun` with counts.

    References:
        Krea 2 report, Captioning (OCR -> enriched VLM caption -> cheaper LLM reformat).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    todo = store.missing(keys)
    ok = unparsed = empty = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        images = load_images(batch)
        if len(images) != len(batch):
            raise ValueError(f"load_images returned {len(images)} images for {len(batch)} keys")
        ocr_text: list[str | None] = [None] * len(batch)
        if ocr is not None:
            ocr_text = [r.text for r in ocr(images)]
        prompts = [
            caption_prompt(
                ocr_text=text, metadata=_metadata_for(metadata, key), instruction=instruction
            )
            for key, text in zip(batch, ocr_text, strict=True)
        ]
        longs = [c.strip() for c in vlm(images, prompts, system_prompt=system_prompt)]
        if len(longs) != len(batch):
            raise ValueError(f"the VLM returned {len(longs)} captions for {len(batch)} images")
        todo_rewrite = [i for i, c in enumerate(longs) if c]
        replies = llm([reformat_prompt(longs[i], template=reformat_template) for i in todo_rewrite])
        reply_of = dict(zip(todo_rewrite, replies, strict=True))
        records = []
        for i, key in enumerate(batch):
            record = {"__key__": key, "ocr_text": ocr_text[i], "long": longs[i] or None}
            if i not in reply_of:
                record |= {"status": "caption_empty", "error": "the VLM returned no caption"}
                empty += 1
            else:
                try:
                    record |= parse_variants(reply_of[i]) | {"status": "ok"}
                    ok += 1
                except CaptionParseError as err:
                    record |= {"status": "reformat_unparsed", "error": str(err)}
                    unparsed += 1
            records.append(record)
        store.add(records)
    return CaptionRun(computed=len(todo), ok=ok, unparsed=unparsed, empty=empty)
