"""Captions of a scene: a dense long caption and medium / short prompt variants."""

from __future__ import annotations

import random
from dataclasses import dataclass

from k2_data.synthetic._grammar import (
    COUNT_WORDS,
    POSITION_WORDS,
    SIZE_WORDS,
    STRIPE_DIRECTIONS,
    STYLE_ADJECTIVES,
    STYLE_DETAILS,
)
from k2_data.synthetic._scene import Scene, SceneObject
from k2_data.synthetic._vocab import BACKGROUNDS, outline_level

_CAPTION_STREAM = 0x5EED_CA97
"""Mixed into the scene seed so phrasing is independent of the layout draws."""


@dataclass(frozen=True, kw_only=True)
class Captions:
    """The three text variants of one scene.

    Args:
        long: dense caption (main training text): every object with count, size, colour,
            shape and position, the background colour and the style.
        medium: every object with count, size, colour, shape and position.
        short: every object with count, colour and shape.
    """

    long: str
    medium: str
    short: str

    def variant(self, name: str) -> str:
        """The caption named "long", "medium" or "short"."""
        if name not in ("long", "medium", "short"):
            raise ValueError(f"unknown caption variant {name!r}; use long, medium or short")
        return getattr(self, name)


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _with_article(words: str) -> str:
    """Replace a leading count word 'a' by the article the next word needs."""
    head, _, rest = words.partition(" ")
    if head == "a" and rest:
        return f"{_article(rest)} {rest}"
    return words


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _noun(obj: SceneObject, rng: random.Random, *, size: bool) -> str:
    words = [rng.choice(COUNT_WORDS[obj.count])]
    if size:
        words.append(rng.choice(SIZE_WORDS[obj.size]))
    words += [obj.colour, obj.shape + ("s" if obj.count > 1 else "")]
    return _with_article(" ".join(words))


def _total(n: int, rng: random.Random) -> str:
    noun = rng.choice(("object", "shape"))
    if n == 1:
        return rng.choice(("one", "a single")) + f" {noun}"
    return f"{COUNT_WORDS[n][0]} {noun}s"


def _group_sentence(obj: SceneObject, rng: random.Random) -> str:
    noun = _noun(obj, rng, size=True)
    pos = rng.choice(POSITION_WORDS[obj.position])
    plural = obj.count > 1
    be = "are" if plural else "is"
    template = rng.randrange(5)
    if template == 0:
        text = f"{noun} {be} {pos}"
    elif template == 1:
        text = f"{pos} there {be} {noun}"
    elif template == 2:
        text = f"{noun} {'sit' if plural else 'sits'} {pos}"
    elif template == 3:
        text = f"there {be} {noun} {pos}"
    else:
        text = f"you can see {noun} {pos}"
    return _capitalise(text) + "."


def _opener(scene: Scene, rng: random.Random) -> str:
    style = rng.choice(STYLE_ADJECTIVES[scene.style])
    bg = scene.background
    total = _total(scene.num_objects, rng)
    template = rng.randrange(4)
    if template == 0:
        text = (
            f"{_article(style)} {style} illustration of {total} on {_article(bg)} {bg} background"
        )
    elif template == 1:
        text = f"an image in {_article(style)} {style} style showing {total} against "
        text += f"{_article(bg)} {bg} backdrop"
    elif template == 2:
        text = f"this {style} picture shows {total} on {_article(bg)} {bg} background"
    else:
        text = (
            f"{_article(bg)} {bg} background with {total}, drawn in {_article(style)} {style} style"
        )
    return _capitalise(text) + "."


def _style_detail(scene: Scene, rng: random.Random) -> str:
    outline = "dark" if outline_level(scene.background) < BACKGROUNDS["grey"] else "light"
    detail = rng.choice(STYLE_DETAILS[scene.style])
    text = detail.format(outline=outline, stripes=STRIPE_DIRECTIONS[scene.angle])
    return _capitalise(text) + "."


def captions(scene: Scene) -> Captions:
    """Write the long, medium and short captions of a scene, phrased deterministically from
    its seed (a few templates and synonyms, groups in a seeded order).

    Args:
        scene: the scene to describe.

    Returns:
        The three variants; each parses back with `parse_prompt`.
    """
    rng = random.Random(scene.seed ^ _CAPTION_STREAM)
    order = list(scene.objects)
    rng.shuffle(order)
    short = _join([_noun(o, rng, size=False) for o in order])
    medium = _join(
        [f"{_noun(o, rng, size=True)} {rng.choice(POSITION_WORDS[o.position])}" for o in order]
    )
    sentences = [_group_sentence(o, rng) for o in order]
    detail = _style_detail(scene, rng)
    if rng.random() < 0.5:
        sentences.append(detail)
    else:
        sentences.insert(0, detail)
    long = " ".join([_opener(scene, rng), *sentences])
    return Captions(long=long, medium=medium, short=short)
