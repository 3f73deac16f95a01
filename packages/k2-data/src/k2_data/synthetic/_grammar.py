"""Phrase tables shared by the caption writer and the prompt parser.

The caption writer only picks phrases from these tables, and the parser's lexicon is built
from the same tables, so every caption the world writes parses back by construction; the
tests check it over many seeds.
"""

from __future__ import annotations

from k2_data.synthetic._vocab import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, STYLES

COUNT_WORDS: dict[int, tuple[str, ...]] = {
    1: ("a", "one", "a single"),
    2: ("two", "a pair of"),
    3: ("three",),
}
"""How captions write a group's count (the article a/an is chosen by the next word)."""

PARSE_COUNTS: dict[str, int] = {
    "a": 1,
    "an": 1,
    "one": 1,
    "a single": 1,
    "single": 1,
    "two": 2,
    "a pair of": 2,
    "pair of": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    **{str(k): k for k in range(1, 10)},
}
"""Count words the parser accepts (more than the world uses, so 'four circles' parses)."""

SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium-sized", "medium", "mid-sized"),
    "large": ("large", "big"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLOURS} | {
    "purple": ("purple", "violet"),
    "pink": ("pink", "magenta"),
    "cyan": ("cyan", "turquoise"),
}
SHAPE_WORDS: dict[str, tuple[str, str]] = {s: (s, s + "s") for s in SHAPES}
"""Singular and plural of each shape."""

BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {b: (b,) for b in BACKGROUNDS}
BACKGROUND_NOUNS = ("background", "backdrop")

POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left corner", "at the top left", "in the upper left"),
    "top": ("at the top", "at the top centre", "near the top edge"),
    "top right": ("in the top right corner", "at the top right", "in the upper right"),
    "left": ("on the left", "on the left side", "at the middle left"),
    "centre": ("in the centre", "in the middle", "at the centre"),
    "right": ("on the right", "on the right side", "at the middle right"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left"),
    "bottom": ("at the bottom", "at the bottom centre", "near the bottom edge"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right"),
}
"""Position phrases captions use (preposition included)."""

PARSE_POSITIONS: dict[str, str] = {}
for _name in POSITIONS:
    _v, _, _h = _name.partition(" ")
    if _h:  # corners
        _alts = [f"{_v} {_h}", f"{'upper' if _v == 'top' else 'lower'} {_h}"]
        PARSE_POSITIONS |= {a: _name for a in _alts}
        PARSE_POSITIONS |= {f"{a} corner": _name for a in _alts}
    elif _name == "centre":
        PARSE_POSITIONS |= {"centre": _name, "middle": _name, "center": _name}
    elif _name in ("top", "bottom"):
        for _alt in (_name, f"{_name} centre", f"{_name} middle", f"{_name} edge"):
            PARSE_POSITIONS[_alt] = _name
        PARSE_POSITIONS[f"{'upper' if _name == 'top' else 'lower'} middle"] = _name
    else:  # left / right
        for _alt in (_name, f"{_name} side", f"middle {_name}", f"centre {_name}", f"{_name} edge"):
            PARSE_POSITIONS[_alt] = _name
"""Position phrases the parser accepts, without prepositions (those are filler words)."""

STYLE_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "flat": ("flat",),
    "outlined": ("outlined",),
    "striped": ("striped",),
    "gradient": ("gradient", "gradient-shaded"),
    "noisy": ("noisy", "grainy"),
    "pastel": ("pastel",),
    "neon": ("neon",),
}
"""Style words used as adjectives ('a striped illustration') or in 'in a X style'."""

STRIPE_DIRECTIONS = {0: "vertical", 45: "diagonal", 90: "horizontal", 135: "diagonal"}

STYLE_DETAILS: dict[str, tuple[str, ...]] = {
    "flat": ("the shapes are filled with solid flat colour", "everything is drawn in flat colours"),
    "outlined": (
        "each shape has a thick {outline} outline",
        "the shapes are drawn with bold {outline} outlines",
    ),
    "striped": (
        "the shapes are filled with {stripes} stripes",
        "each shape is painted with {stripes} stripes of a lighter and a darker shade",
    ),
    "gradient": (
        "soft gradient shading runs across the shapes and the background",
        "the shapes and the background are shaded with smooth gradients",
    ),
    "noisy": (
        "a grainy noise texture covers the whole image",
        "the whole picture has a noisy film grain texture",
    ),
    "pastel": ("the colours are soft pastel tones", "everything is painted in pale pastel colours"),
    "neon": (
        "the shapes glow in bright neon colours",
        "the shapes are bright neon lights with a soft glow",
    ),
}
"""A sentence per style describing how it looks; `{outline}` is dark/light, `{stripes}` a
direction. The parser reads each whole sentence as one style phrase."""


def style_phrases() -> dict[str, str]:
    """Every phrase that names a style, mapped to the style."""
    out: dict[str, str] = {}
    for style in STYLES:
        for adj in STYLE_ADJECTIVES[style]:
            out[adj] = style
            out[f"{adj} style"] = style
        for detail in STYLE_DETAILS[style]:
            for outline in ("dark", "light"):
                for stripes in set(STRIPE_DIRECTIONS.values()):
                    out[detail.format(outline=outline, stripes=stripes)] = style
    # Short forms a person might write in a prompt.
    out |= {
        "outline": "outlined",
        "outlines": "outlined",
        "stripes": "striped",
        "neon colours": "neon",
        "pastel colours": "pastel",
        "flat colours": "flat",
        "noise": "noisy",
        "noise texture": "noisy",
        "noisy texture": "noisy",
        "film grain": "noisy",
    }
    return out


FILLER_WORDS = frozenset(
    [
        "the",
        "a",
        "an",
        "this",
        "image",
        "picture",
        "illustration",
        "scene",
        "drawing",
        "shows",
        "showing",
        "show",
        "contains",
        "containing",
        "with",
        "there",
        "is",
        "are",
        "in",
        "at",
        "on",
        "near",
        "of",
        "sits",
        "sit",
        "sitting",
        "placed",
        "positioned",
        "located",
        "appears",
        "appear",
        "you",
        "can",
        "see",
        "style",
        "rendered",
        "drawn",
        "set",
        "against",
        "has",
        "have",
        "its",
        "canvas",
        "frame",
        "total",
        "altogether",
        "visible",
    ]
)
"""Words that carry no requirement; anything outside the lexicon and these is a parse error."""

TOTAL_NOUNS = ("objects", "object", "shapes", "shape", "things", "thing")
"""Nouns after a count that state the total number of objects ('three shapes')."""

SEPARATORS = frozenset({".", ",", ";", ":", "!", "and", "while", "plus"})
"""Clause boundaries: a position or background phrase attaches within its clause."""
