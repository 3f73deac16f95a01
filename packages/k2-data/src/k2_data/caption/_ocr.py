"""OCR backends (Tesseract, or a transformers TrOCR model), detected at run time, never fatal."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from k2_data.classify import check_checkpoint, decode_new_tokens
from k2_data.hashing import ImageBatch, as_pil


@dataclass(frozen=True, kw_only=True)
class OcrResult:
    """Text found in one image.

    Args:
        text: recognised lines joined by newlines ("" when none).
        boxes: (N, 4) word boxes (x0, y0, x1, y1) in pixels; empty for recognisers without a
            detector (TrOCR), which then says nothing about text density.
        confidences: (N,) per-box confidence in [0, 100] (Tesseract's scale).
    """

    text: str
    boxes: Float[np.ndarray, "n 4"] = field(default_factory=lambda: np.zeros((0, 4)))
    confidences: Float[np.ndarray, " n"] = field(default_factory=lambda: np.zeros(0))


OcrEngine = Callable[[ImageBatch], list[OcrResult]]
"""A batch of images -> one `OcrResult` per image."""


@dataclass(frozen=True, kw_only=True)
class OcrStatus:
    """Whether an OCR engine is usable, which one, and what to do if none is."""

    available: bool
    engine: str | None
    message: str


def tesseract_status() -> OcrStatus:
    """Detect the Tesseract binary and the pytesseract module; never raises."""
    binary = shutil.which("tesseract")
    module = importlib.util.find_spec("pytesseract") is not None
    if binary and module:
        return OcrStatus(available=True, engine="tesseract", message=f"tesseract at {binary}")
    missing = [n for n, ok in (("tesseract binary", binary), ("pytesseract", module)) if not ok]
    return OcrStatus(
        available=False,
        engine=None,
        message=(
            f"Tesseract OCR unavailable ({' and '.join(missing)} missing): install it with "
            "`apt-get install tesseract-ocr` and `pip install pytesseract`, or pass a TrOCR "
            "checkpoint directory; captions are written without OCR text meanwhile"
        ),
    )


def tesseract_words(data: Mapping[str, Sequence[Any]], *, min_confidence: float) -> OcrResult:
    """Turn `pytesseract.image_to_data(..., output_type=Output.DICT)` into an `OcrResult`.

    Words are grouped into lines by (block, paragraph, line) in reading order; words with
    empty text or confidence below `min_confidence` (layout rows have -1) are dropped.
    """
    lines: dict[tuple[int, int, int], list[str]] = {}
    boxes, confs = [], []
    for i, word in enumerate(data["text"]):
        conf = float(data["conf"][i])
        if not str(word).strip() or conf < min_confidence or conf < 0:
            continue
        key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        lines.setdefault(key, []).append(str(word).strip())
        x, y = float(data["left"][i]), float(data["top"][i])
        boxes.append((x, y, x + float(data["width"][i]), y + float(data["height"][i])))
        confs.append(conf)
    return OcrResult(
        text="\n".join(" ".join(words) for words in lines.values()),
        boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
        confidences=np.asarray(confs, np.float64),
    )


class TesseractOCR:
    """Tesseract through pytesseract (Debian package tesseract-ocr).

    Args:
        lang: Tesseract language codes, e.g. "eng" or "eng+deu".
        min_confidence: words below this confidence (0-100) are dropped.
        config: extra Tesseract flags, e.g. "--psm 11" (sparse text, good for photos).

    References:
        Smith 2007, "An overview of the Tesseract OCR engine"; Krea 2 report, Captioning:
        "we run an OCR model on each target image to extract any visible text".
    """

    def __init__(
        self, *, lang: str = "eng", min_confidence: float = 60.0, config: str = ""
    ) -> None:
        status = tesseract_status()
        if not status.available:
            raise RuntimeError(status.message)
        import pytesseract

        self._pytesseract = pytesseract
        self.lang, self.min_confidence, self.config = lang, min_confidence, config

    def __call__(self, images: ImageBatch) -> list[OcrResult]:
        out = []
        for image in images:
            data = self._pytesseract.image_to_data(
                as_pil(image).convert("RGB"),
                lang=self.lang,
                config=self.config,
                output_type=self._pytesseract.Output.DICT,
            )
            out.append(tesseract_words(data, min_confidence=self.min_confidence))
        return out


class TrOCRRecognizer:
    """A transformers vision-encoder-decoder OCR model (TrOCR) read from a local path.

    TrOCR recognises one text line per image crop and has no detector: run it on text-line
    crops, or on whole images that hold one line (signs, titles). It returns no boxes.

    Args:
        model: a `VisionEncoderDecoderModel`.
        processor: its processor (image processor + tokenizer).
        max_new_tokens: longest recognised line, in tokens.
        batch_size: images per `generate` call.

    References:
        Li et al. 2023, TrOCR (arXiv 2109.10282).
    """

    def __init__(
        self, model: Any, processor: Any, *, max_new_tokens: int = 32, batch_size: int = 16
    ) -> None:
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")
        self.model, self.processor = model.eval(), processor
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> TrOCRRecognizer:
        """Load model and processor from a local directory only."""
        from transformers import AutoProcessor, VisionEncoderDecoderModel

        path = check_checkpoint(
            path,
            what="OCR",
            kind="vision-encoder-decoder (TrOCR)",
            example="microsoft/trocr-base-printed",
        )
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = VisionEncoderDecoderModel.from_pretrained(path, local_files_only=True, dtype=dtype)
        return cls(model.to(device), processor, **kwargs)

    @torch.no_grad()
    def __call__(self, images: ImageBatch) -> list[OcrResult]:
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        out: list[OcrResult] = []
        for start in range(0, len(images), self.batch_size):
            batch = [as_pil(im).convert("RGB") for im in images[start : start + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt").pixel_values
            ids = self.model.generate(
                pixels.to(device, dtype), max_new_tokens=self.max_new_tokens, do_sample=False
            )
            # The decoder prompt is the start token only, so every token after it is new.
            out.extend(
                OcrResult(text=t) for t in decode_new_tokens(ids, 1, self.processor.tokenizer)
            )
        return out


def box_ocr(engine: OcrEngine) -> Callable[[np.ndarray], np.ndarray]:
    """Adapt an OCR engine to `k2_data.filters.OcrFn` (RGB array -> text boxes), so one
    engine feeds both the caption prompt and the text-density filter."""

    def boxes(image: np.ndarray) -> np.ndarray:
        return engine([image])[0].boxes

    return boxes


def resolve_ocr(
    *,
    engine: str = "auto",
    trocr_path: str | os.PathLike[str] | None = None,
    tesseract_options: Mapping[str, Any] | None = None,
    trocr_options: Mapping[str, Any] | None = None,
) -> tuple[OcrEngine | None, OcrStatus]:
    """Pick an OCR engine: Tesseract if installed, else TrOCR from `trocr_path`, else none.

    Args:
        engine: "auto", "tesseract", "trocr" or "none".
        trocr_path: a local TrOCR checkpoint directory.
        tesseract_options: keyword arguments of `TesseractOCR`.
        trocr_options: keyword arguments of `TrOCRRecognizer.from_pretrained`.

    Returns:
        (engine or None, status). None is not an error: the status message says what is
        missing and how to install it, for the run's log and report.
    """
    if engine not in ("auto", "tesseract", "trocr", "none"):
        raise ValueError(f"engine must be auto, tesseract, trocr or none, got {engine!r}")
    if engine == "none":
        return None, OcrStatus(available=False, engine=None, message="OCR disabled")
    tesseract = tesseract_status()
    if engine in ("auto", "tesseract") and tesseract.available:
        return TesseractOCR(**(tesseract_options or {})), tesseract
    if engine in ("auto", "trocr") and trocr_path is not None:
        status = OcrStatus(available=True, engine="trocr", message=f"TrOCR from {trocr_path}")
        return TrOCRRecognizer.from_pretrained(trocr_path, **(trocr_options or {})), status
    return None, tesseract
