"""Image embeddings for curation: SigLIP-2 / DINOv3 (transformers) or timm encoders from local
paths, batched, L2-normalised, cached to disk by `__key__` (Krea 2 report, Data).

`load_image_encoder(path)` builds an `ImageEncoder`; `embed_images` runs it in batches;
`EmbeddingCache` + `embed_to_cache` store embeddings as .npy chunks with a Parquet key index
and resume where an interrupted run stopped. See docs/k2-data-models.md.
"""

from k2_data.embed._cache import EmbeddingCache, embed_to_cache
from k2_data.embed._encoder import (
    ImageEncoder,
    Preprocess,
    embed_images,
    l2_normalize,
    load_image_encoder,
)

__all__ = [
    "EmbeddingCache",
    "ImageEncoder",
    "Preprocess",
    "embed_images",
    "embed_to_cache",
    "l2_normalize",
    "load_image_encoder",
]
