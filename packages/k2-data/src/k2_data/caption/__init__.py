"""Captioning: OCR -> a VLM caption prompted with the OCR text and metadata -> an LLM rewrite
into short and medium variants, plus the training-caption sampler (Krea 2 report, Captioning).

`resolve_ocr` picks Tesseract (if installed) or a local TrOCR model and otherwise returns
None with an `OcrStatus` saying what to install (never fatal); `caption_images` runs the
three stages in batches into a resumable `CaptionStore`; `training_captions` draws mostly
long captions with short and medium ones mixed in (`CaptionMix`). The VLM is
`k2_data.classify.VLMGenerator`, re-exported here. See docs/k2-data-models.md.
"""

from k2_data.caption._llm import LLMGenerator
from k2_data.caption._ocr import (
    OcrEngine,
    OcrResult,
    OcrStatus,
    TesseractOCR,
    TrOCRRecognizer,
    box_ocr,
    resolve_ocr,
    tesseract_status,
    tesseract_words,
)
from k2_data.caption._pipeline import CaptionRun, MetadataSource, caption_images
from k2_data.caption._prompts import (
    CAPTION_INSTRUCTION,
    REFORMAT_INSTRUCTION,
    CaptionParseError,
    caption_prompt,
    format_metadata,
    parse_variants,
    reformat_prompt,
)
from k2_data.caption._sampler import (
    CAPTION_LENGTHS,
    CaptionMix,
    sample_caption_lengths,
    training_captions,
)
from k2_data.caption._store import CAPTION_SCHEMA, CaptionStore
from k2_data.classify import VLMGenerator

__all__ = [
    "CAPTION_INSTRUCTION",
    "CAPTION_LENGTHS",
    "CAPTION_SCHEMA",
    "REFORMAT_INSTRUCTION",
    "CaptionMix",
    "CaptionParseError",
    "CaptionRun",
    "CaptionStore",
    "LLMGenerator",
    "MetadataSource",
    "OcrEngine",
    "OcrResult",
    "OcrStatus",
    "TesseractOCR",
    "TrOCRRecognizer",
    "VLMGenerator",
    "box_ocr",
    "caption_images",
    "caption_prompt",
    "format_metadata",
    "parse_variants",
    "reformat_prompt",
    "resolve_ocr",
    "sample_caption_lengths",
    "tesseract_status",
    "tesseract_words",
    "training_captions",
]
