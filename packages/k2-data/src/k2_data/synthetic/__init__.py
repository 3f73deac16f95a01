"""The embedded synthetic world: procedural compositional scenes, captions and a verifier.

Scenes hold 1-3 objects (shape, colour, size, count, coarse position) on a grey background
in one of several rendering styles; each renders at any resolution >= 16 px, comes with a
dense long caption plus medium and short prompts and per-object ground truth, and exports
to WebDataset shards. `verify` parses a prompt back into requirements (object, count,
position, style, background) and scores an image against them, so the toolkit's stages
can be trained and checked offline. See docs/k2-data.md.
"""

from k2_data.synthetic._captions import Captions, captions
from k2_data.synthetic._config import WorldConfig
from k2_data.synthetic._dataset import ObjectAnnotation, Sample, annotations, make_sample
from k2_data.synthetic._detect import DetectedObject, Detection
from k2_data.synthetic._parse import (
    REQUIREMENT_TYPES,
    ObjectSpec,
    PromptSpec,
    Requirement,
    parse_prompt,
)
from k2_data.synthetic._render import MIN_RESOLUTION, render
from k2_data.synthetic._scene import Scene, SceneObject, sample_scene, sample_scenes, scene_seed
from k2_data.synthetic._verify import (
    VerificationResult,
    check,
    detect,
    detect_batch,
    verify,
    verify_batch,
)
from k2_data.synthetic._vocab import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    STYLE_BACKGROUNDS,
    STYLES,
    palette_rgb,
)
from k2_data.synthetic._webdataset import write_webdataset

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "MIN_RESOLUTION",
    "POSITIONS",
    "REQUIREMENT_TYPES",
    "SHAPES",
    "SIZES",
    "STYLES",
    "STYLE_BACKGROUNDS",
    "Captions",
    "DetectedObject",
    "Detection",
    "ObjectAnnotation",
    "ObjectSpec",
    "PromptSpec",
    "Requirement",
    "Sample",
    "Scene",
    "SceneObject",
    "VerificationResult",
    "WorldConfig",
    "annotations",
    "captions",
    "check",
    "detect",
    "detect_batch",
    "make_sample",
    "palette_rgb",
    "parse_prompt",
    "render",
    "sample_scene",
    "sample_scenes",
    "scene_seed",
    "verify",
    "verify_batch",
    "write_webdataset",
]
