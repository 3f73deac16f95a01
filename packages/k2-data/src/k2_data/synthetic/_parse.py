"""Parsing a prompt of the synthetic world back into typed requirements."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from k2_data.synthetic._grammar import (
    BACKGROUND_NOUNS,
    BACKGROUND_WORDS,
    COLOUR_WORDS,
    FILLER_WORDS,
    PARSE_COUNTS,
    PARSE_POSITIONS,
    SEPARATORS,
    SHAPE_WORDS,
    SIZE_WORDS,
    TOTAL_NOUNS,
    style_phrases,
)

RequirementType = Literal["object", "count", "position", "style", "background"]
REQUIREMENT_TYPES: tuple[str, ...] = ("object", "count", "position", "style", "background")


@dataclass(frozen=True, kw_only=True)
class ObjectSpec:
    """One object group named by a prompt ("two small red circles at the top").

    Args:
        shape: one of `SHAPES`.
        colour: one of `COLOURS`.
        count: how many identical objects.
        size: one of `SIZES`, or None when the prompt does not say (never scored).
        position: one of `POSITIONS`, or None when the prompt does not say.
    """

    shape: str
    colour: str
    count: int
    size: str | None = None
    position: str | None = None

    @property
    def noun(self) -> str:
        """'red circle' or 'red circles'."""
        return f"{self.colour} {self.shape}{'s' if self.count > 1 else ''}"


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """One checkable claim of a prompt.

    Types: `object` (at least one object of that colour and shape is present), `count`
    (exactly that many of them), `position` (their mean centre lies in the named 3x3 cell),
    `style` (the image is in the named rendering style), `background` (the background has
    the named grey level). `passed` is None until `verify` fills it in.

    Args:
        type: the requirement type.
        text: a short human-readable statement.
        group: index of the object group in `PromptSpec.objects` (None for style/background).
        shape, colour, count, position: the group's target (object/count/position types).
        style: the named style (style type).
        background: the named background (background type).
        passed: the verdict, once verified.
    """

    type: RequirementType
    text: str
    group: int | None = None
    shape: str | None = None
    colour: str | None = None
    count: int | None = None
    position: str | None = None
    style: str | None = None
    background: str | None = None
    passed: bool | None = None


@dataclass(frozen=True, kw_only=True)
class PromptSpec:
    """Everything a prompt asks for.

    Args:
        objects: the object groups, in order of first mention.
        style: the named style, or None.
        background: the named background, or None.
    """

    objects: tuple[ObjectSpec, ...]
    style: str | None = None
    background: str | None = None

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        """Per group: object, count, then position if named; then style, then background."""
        reqs: list[Requirement] = []
        for i, o in enumerate(self.objects):
            common = {"group": i, "shape": o.shape, "colour": o.colour, "count": o.count}
            reqs.append(Requirement(type="object", text=f"{o.colour} {o.shape} present", **common))
            reqs.append(Requirement(type="count", text=f"exactly {o.count} {o.noun}", **common))
            if o.position is not None:
                text = f"{o.noun} at {o.position}"
                reqs.append(Requirement(type="position", text=text, position=o.position, **common))
        if self.style is not None:
            reqs.append(Requirement(type="style", text=f"{self.style} style", style=self.style))
        if self.background is not None:
            text = f"{self.background} background"
            reqs.append(Requirement(type="background", text=text, background=self.background))
        return tuple(reqs)


def _normalise(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"\bgray\b", "grey", text)
    text = re.sub(r"\bcenter\b", "centre", text)
    text = re.sub(r"\bcolor(s?)\b", r"colour\1", text)
    return text


_TOKEN = re.compile(r"[a-z]+|\d+|[.,;:!]|\S")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(_normalise(text))


@dataclass(frozen=True)
class _Lexeme:
    kind: str
    value: object
    text: str


def _build_lexicon() -> dict[tuple[str, ...], tuple[str, object]]:
    lex: dict[tuple[str, ...], tuple[str, object]] = {}

    def add(phrase: str, kind: str, value: object) -> None:
        lex[tuple(_tokens(phrase))] = (kind, value)

    for word in FILLER_WORDS:
        add(word, "filler", None)
    for word in TOTAL_NOUNS:
        add(word, "total", None)
    for word in SEPARATORS:
        add(word, "sep", None)
    for phrase, n in PARSE_COUNTS.items():
        add(phrase, "count", n)
    for size, words in SIZE_WORDS.items():
        for w in words:
            add(w, "size", size)
    for colour, words in COLOUR_WORDS.items():
        for w in words:
            add(w, "colour", colour)
    for shape, (one, many) in SHAPE_WORDS.items():
        add(one, "shape", (shape, False))
        add(many, "shape", (shape, True))
    for bg, words in BACKGROUND_WORDS.items():
        for w in words:
            add(w, "bg_colour", bg)
    for noun in BACKGROUND_NOUNS:
        add(noun, "bg_noun", None)
    for phrase, position in PARSE_POSITIONS.items():
        add(phrase, "position", position)
    for phrase, style in style_phrases().items():
        add(phrase, "style", style)
    return lex


_LEXICON = _build_lexicon()
_LONGEST = max(len(k) for k in _LEXICON)


def _lex(prompt: str) -> list[_Lexeme]:
    tokens = _tokens(prompt)
    out: list[_Lexeme] = []
    unknown: list[str] = []
    i = 0
    while i < len(tokens):
        for n in range(min(_LONGEST, len(tokens) - i), 0, -1):
            hit = _LEXICON.get(tuple(tokens[i : i + n]))
            if hit is not None:
                break
        else:
            unknown.append(tokens[i])
            i += 1
            continue
        if unknown:
            break
        out.append(_Lexeme(hit[0], hit[1], " ".join(tokens[i : i + n])))
        i += n
    if unknown:
        raise ValueError(
            f"cannot parse {' '.join(unknown)!r} in prompt {prompt!r}: it is outside the "
            "synthetic world's grammar (object colours, shapes, counts, sizes, 3x3 positions, "
            "grey backgrounds and the rendering styles)"
        )
    return out


def _clauses(lexemes: list[_Lexeme]) -> list[list[_Lexeme]]:
    clauses: list[list[_Lexeme]] = [[]]
    for lx in lexemes:
        if lx.kind == "sep":
            clauses.append([])
        else:
            clauses[-1].append(lx)
    return [c for c in clauses if c]


@dataclass
class _Mention:
    shape: str
    colour: str
    count: int
    size: str | None
    position: str | None = None


def _read_mention(clause: list[_Lexeme], i: int, prompt: str) -> tuple[_Mention | None, int]:
    """Read `[count] [size] colour shape` at i; (None, i + 1) for a bare article."""
    j, count, size = i, None, None
    start = clause[i].text
    if clause[j].kind == "count":
        count = clause[j].value
        j += 1
    if j < len(clause) and clause[j].kind == "size":
        size = clause[j].value
        j += 1
    if j < len(clause) and clause[j].kind == "colour":
        colour = clause[j].value
        j += 1
        if j >= len(clause) or clause[j].kind != "shape":
            raise ValueError(f"expected a shape after {colour!r} in prompt {prompt!r}")
        shape, plural = clause[j].value
        if count is None:
            if plural:
                raise ValueError(f"{colour} {shape}s in prompt {prompt!r} needs a count")
            count = 1
        if (count > 1) != plural:
            raise ValueError(
                f"count {start!r} does not agree with {clause[j].text!r} in prompt {prompt!r}"
            )
        return _Mention(shape=shape, colour=colour, count=count, size=size), j + 1
    if count is not None and size is None and clause[i].text in ("a", "an"):
        return None, i + 1  # an article ("on a white background")
    raise ValueError(f"{start!r} in prompt {prompt!r} is not followed by a colour and a shape")


def _parse(prompt: str) -> PromptSpec:
    if not prompt.strip():
        raise ValueError("cannot parse an empty prompt")
    groups: dict[tuple[str, str], _Mention] = {}
    styles: set[str] = set()
    backgrounds: set[str] = set()
    total: int | None = None
    for clause in _clauses(_lex(prompt)):
        mentions: list[_Mention] = []
        positions: list[tuple[int, str]] = []
        bg_colours: list[str] = []
        has_bg_noun = False
        i = 0
        while i < len(clause):
            lx = clause[i]
            if lx.kind == "count" and i + 1 < len(clause) and clause[i + 1].kind == "total":
                total = lx.value
                i += 2
            elif lx.kind in ("count", "size", "colour"):
                mention, i = _read_mention(clause, i, prompt)
                if mention is not None:
                    mentions.append(mention)
            elif lx.kind == "shape":
                raise ValueError(f"{lx.text!r} in prompt {prompt!r} needs a colour before it")
            else:
                if lx.kind == "position":
                    positions.append((len(mentions), lx.value))
                elif lx.kind == "style":
                    styles.add(lx.value)
                elif lx.kind == "bg_colour":
                    bg_colours.append(lx.value)
                elif lx.kind == "bg_noun":
                    has_bg_noun = True
                i += 1
        if bg_colours and not has_bg_noun:
            raise ValueError(
                f"{bg_colours[0]!r} in prompt {prompt!r} is a background colour, but the clause "
                "does not say 'background'"
            )
        backgrounds.update(bg_colours)
        for before, position in positions:
            if not mentions:
                raise ValueError(f"position {position!r} in prompt {prompt!r} names no object")
            # Attach to the nearest object named before the phrase, else the first one after.
            target = mentions[before - 1] if before > 0 else mentions[0]
            if target.position not in (None, position):
                raise ValueError(f"{target.colour} {target.shape} has two positions in {prompt!r}")
            target.position = position
        for m in mentions:
            key = (m.colour, m.shape)
            if key not in groups:
                groups[key] = m
                continue
            old = groups[key]
            for field in ("count", "size", "position"):
                a, b = getattr(old, field), getattr(m, field)
                if a is not None and b is not None and a != b:
                    raise ValueError(
                        f"prompt {prompt!r} describes the {m.colour} {m.shape} group twice "
                        f"with different {field}s ({a!r} and {b!r})"
                    )
                if a is None:
                    setattr(old, field, b)
    if not groups:
        raise ValueError(f"prompt {prompt!r} names no object (a colour followed by a shape)")
    for name, found in (("styles", styles), ("backgrounds", backgrounds)):
        if len(found) > 1:
            raise ValueError(f"prompt {prompt!r} names conflicting {name}: {sorted(found)}")
    described = sum(m.count for m in groups.values())
    if total is not None and total != described:
        raise ValueError(f"prompt {prompt!r} says {total} objects but describes {described}")
    objects = tuple(
        ObjectSpec(shape=m.shape, colour=m.colour, count=m.count, size=m.size, position=m.position)
        for m in groups.values()
    )
    return PromptSpec(
        objects=objects,
        style=next(iter(styles), None),
        background=next(iter(backgrounds), None),
    )


_parse_cached = lru_cache(maxsize=8192)(_parse)


def parse_prompt(prompt: str) -> PromptSpec:
    """Parse a prompt of the world's grammar (any caption variant) into a `PromptSpec`.

    The grammar: object mentions `[count] [size] colour shape`, each optionally with a 3x3
    position phrase in the same clause (clauses end at '.', ',', ';', 'and'); a grey
    background colour with the word 'background'/'backdrop'; style words or style sentences;
    an optional total ('three objects', checked against the mentions); and filler words.
    Mentions of the same colour and shape are merged.

    Args:
        prompt: the text.

    Returns:
        The typed specification; `.requirements` lists what `verify` checks.

    Raises:
        ValueError: naming the text that falls outside the grammar or is contradictory.
    """
    return _parse_cached(prompt)
