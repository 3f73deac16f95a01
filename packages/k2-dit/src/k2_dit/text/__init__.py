"""Text conditioning: frozen encoders, feature cache, layer aggregation, refiner, adapter.

References: Krea 2 report, Architecture / Text encoder; UniFusion (arXiv 2510.12789).
"""

from k2_dit.text._adapter import TextAdapter
from k2_dit.text._aggregation import LastLayerProjection, LayerAggregation
from k2_dit.text._cache import TextFeatureCache, encode_cached
from k2_dit.text._encoder import EncoderKind, TextEncoder, TextEncoderNotFoundError
from k2_dit.text._refiner import TextRefiner
from k2_dit.text._tiny import build_tiny_text_encoder

__all__ = [
    "EncoderKind",
    "LastLayerProjection",
    "LayerAggregation",
    "TextAdapter",
    "TextEncoder",
    "TextEncoderNotFoundError",
    "TextFeatureCache",
    "TextRefiner",
    "build_tiny_text_encoder",
    "encode_cached",
]
