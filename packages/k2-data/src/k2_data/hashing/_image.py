"""Accept decoded images as Pillow images or uint8 arrays, and say what is wrong otherwise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Shaped
from PIL import Image

ImageLike = Image.Image | Shaped[np.ndarray, "_h _w *_c"]
"""A decoded image: a Pillow image (any mode) or a uint8 array (H, W), (H, W, 3) or (H, W, 4)."""

ImageBatch = Sequence[ImageLike] | Shaped[np.ndarray, "_b _h _w *_c"]
"""Several decoded images: a sequence of `ImageLike`, or one stacked uint8 array."""

_CHANNEL_MODES = {3: "RGB", 4: "RGBA"}


def as_pil(image: ImageLike) -> Image.Image:
    """The image as Pillow sees it: arrays become L / RGB / RGBA images without copying pixels.

    Args:
        image: a Pillow image, or a uint8 array (H, W), (H, W, 3) or (H, W, 4).

    Returns:
        A Pillow image.
    """
    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(
            f"image arrays must be uint8, got {array.dtype}; decode to uint8 pixels first "
            "(e.g. k2_data.filters.decode) or pass a PIL image"
        )
    mode = (
        "L" if array.ndim == 2 else _CHANNEL_MODES.get(array.shape[-1]) if array.ndim == 3 else None
    )
    if mode is None or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"image array has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4) "
            "with H, W >= 1"
        )
    return Image.fromarray(np.ascontiguousarray(array), mode)


def as_pil_list(images: ImageBatch) -> list[Image.Image]:
    """`as_pil` over a batch (a sequence, or a stacked (B, H, W[, C]) uint8 array)."""
    return [as_pil(image) for image in images]
