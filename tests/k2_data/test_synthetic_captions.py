"""Synthetic world: captions and the prompt parser."""

import dataclasses

import pytest

from k2_data.synthetic import (
    ObjectSpec,
    PromptSpec,
    captions,
    parse_prompt,
    sample_scenes,
)

NUMBER = {1: "one", 2: "two", 3: "three"}


def _expected(scene, variant):
    """Ground-truth spec of what each variant states, built from the scene's fields."""
    objs = set()
    for o in scene.objects:
        size = o.size if variant != "short" else None
        position = o.position if variant != "short" else None
        objs.add((o.shape, o.colour, o.count, size, position))
    style = scene.style if variant == "long" else None
    background = scene.background if variant == "long" else None
    return objs, style, background


def _as_sets(spec):
    objs = {(o.shape, o.colour, o.count, o.size, o.position) for o in spec.objects}
    return objs, spec.style, spec.background


def test_every_variant_parses_back_to_the_ground_truth():
    for scene in sample_scenes(400, seed=21):
        caps = captions(scene)
        for variant in ("long", "medium", "short"):
            text = caps.variant(variant)
            assert _as_sets(parse_prompt(text)) == _expected(scene, variant), text


def test_captions_are_deterministic_and_phrasing_varies():
    scenes = sample_scenes(300, seed=22)
    assert [captions(s) for s in scenes] == [captions(s) for s in scenes]
    openers = {captions(s).long.split()[0] for s in scenes}
    assert len(openers) >= 3  # "A", "An", "This", ...
    # Same layout, different seed: phrasing changes for most scenes.
    reseeded = [dataclasses.replace(s, seed=s.seed + 4) for s in scenes[:50]]
    changed = sum(
        captions(a).long != captions(b).long for a, b in zip(scenes[:50], reseeded, strict=True)
    )
    assert changed >= 40


def test_long_caption_mentions_everything():
    for scene in sample_scenes(100, seed=23):
        long = captions(scene).long.lower()
        assert scene.background in long
        for o in scene.objects:
            assert f"{o.colour} {o.shape}" in long
        short = captions(scene).short
        assert len(short) < len(captions(scene).medium) < len(long)


def test_hand_written_prompts():
    spec = parse_prompt("two red circles and a blue square")
    assert spec == PromptSpec(
        objects=(
            ObjectSpec(shape="circle", colour="red", count=2),
            ObjectSpec(shape="square", colour="blue", count=1),
        )
    )
    spec = parse_prompt(
        "A neon picture: in the upper left there is a big Magenta diamond, "
        "and 3 small green triangles sit at the bottom. The background is dark gray."
    )
    assert spec.style == "neon" and spec.background == "dark grey"
    assert set(spec.objects) == {
        ObjectSpec(shape="diamond", colour="pink", count=1, size="large", position="top left"),
        ObjectSpec(shape="triangle", colour="green", count=3, size="small", position="bottom"),
    }
    types = [r.type for r in spec.requirements]
    assert types == ["object", "count", "position"] * 2 + ["style", "background"]
    assert all(r.passed is None for r in spec.requirements)
    # A group mentioned twice is merged; center/gray spellings are accepted.
    spec = parse_prompt("a red circle. The red circle is in the center.")
    assert spec.objects == (ObjectSpec(shape="circle", colour="red", count=1, position="centre"),)


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ("a red circle and a fluffy dog", r"cannot parse 'fluffy dog'"),
        ("a red circle on a wooden table", r"cannot parse 'wooden table'"),
        ("two red circle", r"does not agree"),
        ("red circles", r"needs a count"),
        ("a red", r"expected a shape after 'red'"),
        ("a circle", r"'circle' .* needs a colour"),
        ("two circles", r"'two' .* not followed by a colour"),
        ("a red circle in a flat style with neon colours", r"conflicting styles"),
        ("a red circle, on the left", r"names no object"),
        ("a red circle on white", r"does not say 'background'"),
        ("three objects: a red circle", r"says 3 objects but describes 1"),
        ("a red circle. two red circles", r"different counts"),
        ("", r"empty prompt"),
        ("on a white background", r"names no object"),
    ],
)
def test_prompts_outside_the_grammar_raise(prompt, match):
    with pytest.raises(ValueError, match=match):
        parse_prompt(prompt)
