"""Synthetic world: scene sampling, configs and splits."""

import itertools

import pytest

from k2_data.synthetic import (
    POSITIONS,
    SHAPES,
    SIZES,
    STYLE_BACKGROUNDS,
    STYLES,
    WorldConfig,
    sample_scene,
    sample_scenes,
    scene_seed,
)
from k2_data.synthetic._vocab import SHAPE_SCALE


def _cell(x, y):
    # Reference: 3x3 grid, column/row from thirds, written independently of position_of.
    col = 0 if x < 1 / 3 else (1 if x < 2 / 3 else 2)
    row = 0 if y < 1 / 3 else (1 if y < 2 / 3 else 2)
    return {v: k for k, v in POSITIONS.items()}[(col, row)]


def test_same_seed_same_scene_and_different_seeds_differ():
    a = sample_scenes(50, seed=3)
    b = sample_scenes(50, seed=3)
    c = sample_scenes(50, seed=4)
    assert a == b
    assert sum(x != y for x, y in zip(a, c, strict=True)) >= 45
    assert len({s.seed for s in a}) == 50


def test_start_extends_a_dataset_without_redrawing():
    full = sample_scenes(20, seed=1)
    assert sample_scenes(5, seed=1, start=15) == full[15:]


def test_splits_are_disjoint_by_seed():
    train = {scene_seed(0, i, split="train") for i in range(2000)}
    heldout = {scene_seed(0, i, split="heldout") for i in range(2000)}
    other_dataset = {scene_seed(1, i, split="heldout") for i in range(2000)}
    assert len(train) == len(heldout) == 2000
    assert not train & heldout
    assert not train & other_dataset
    assert [s.seed for s in sample_scenes(3, seed=0, split="heldout")] == [
        scene_seed(0, i, split="heldout") for i in range(3)
    ]


def test_scenes_respect_geometry_and_the_full_vocabulary_is_used():
    scenes = sample_scenes(400, seed=5)
    seen = {"style": set(), "shape": set(), "size": set(), "position": set(), "count": set()}
    for s in scenes:
        assert 1 <= s.num_objects <= 3
        assert s.background in STYLE_BACKGROUNDS[s.style]
        boxes = []
        pairs = [(o.shape, o.colour) for o in s.objects]
        assert len(set(pairs)) == len(pairs)
        assert len({o.position for o in s.objects}) == len(s.objects)
        for o in s.objects:
            side = SIZES[o.size] * SHAPE_SCALE[o.shape]
            mx = sum(x for x, _ in o.centres) / o.count
            my = sum(y for _, y in o.centres) / o.count
            assert _cell(mx, my) == o.position
            for x, y in o.centres:
                boxes.append((x - side / 2, y - side / 2, x + side / 2, y + side / 2))
            seen["shape"].add(o.shape)
            seen["size"].add(o.size)
            seen["position"].add(o.position)
            seen["count"].add(o.count)
        seen["style"].add(s.style)
        for x0, y0, x1, y1 in boxes:
            assert 0 < x0 < x1 < 1 and 0 < y0 < y1 < 1
        for a, b in itertools.combinations(boxes, 2):
            # Boxes are disjoint with a visible gap on at least one axis.
            gap = max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])
            assert gap >= 0.05
    assert seen["style"] == set(STYLES)
    assert seen["shape"] == set(SHAPES)
    assert seen["size"] == set(SIZES)
    assert seen["position"] == set(POSITIONS)
    assert seen["count"] == {1, 2, 3}


def test_config_restricts_the_world():
    config = WorldConfig(
        min_objects=2,
        max_objects=2,
        max_count=1,
        shapes=("circle", "square"),
        colours=("red", "blue", "green"),
        styles=("neon", "pastel"),
        sizes=("small",),
    )
    for s in sample_scenes(100, seed=2, config=config):
        assert s.num_objects == 2 and len(s.objects) == 2
        assert s.style in ("neon", "pastel")
        for o in s.objects:
            assert o.shape in ("circle", "square")
            assert o.colour in ("red", "blue", "green")
            assert o.size == "small" and o.count == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"styles": ("flat", "watercolour")}, "unknown name.*watercolour"),
        ({"shapes": ("hexagon",)}, "unknown name.*hexagon"),
        ({"min_objects": 3, "max_objects": 2}, "min_objects <= max_objects"),
        ({"max_objects": 5}, "max_objects <= 3"),
        ({"styles": ()}, "styles is empty"),
        ({"styles": ("neon",), "backgrounds": ("white",)}, "style 'neon'.*backgrounds"),
        ({"min_objects": 3, "max_count": 1, "positions": ("top", "left")}, "distinct groups"),
        ({"colours": ("red", "red")}, "repeats"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(**kwargs)


def test_bad_sampling_arguments_raise():
    with pytest.raises(ValueError, match="unknown split"):
        sample_scenes(1, seed=0, split="validation")
    with pytest.raises(ValueError, match=">= 0"):
        sample_scene(-1)
    with pytest.raises(ValueError, match=">= 0"):
        sample_scenes(-1, seed=0)
