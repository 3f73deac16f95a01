"""k2_recipes.rubric_world: synthetic-world rubrics scored with k2_rl.rewards.rubric_reward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from k2_data.synthetic import Scene, SceneObject, captions, render, sample_scenes, verify_batch
from k2_recipes.rubric_world import WorldDecomposer, WorldVerifier, world_rubric_reward
from k2_rl.rewards import Decomposer, Verifier, rubric_reward


@pytest.fixture(scope="module")
def world():
    scenes = sample_scenes(60, seed=11, split="heldout")
    images = np.stack([render(s, 32) for s in scenes])
    return scenes, images, [captions(s).long for s in scenes]


def test_decomposer_builds_a_dependency_dag():
    decomposer = WorldDecomposer()
    assert isinstance(decomposer, Decomposer) and isinstance(WorldVerifier(), Verifier)
    rubric = decomposer("two red circles at the top left and a blue square. Flat style.")
    by_id = {r.id: r for r in rubric.requirements}
    assert set(by_id) == {"g0.object", "g0.count", "g0.position", "g1.object", "g1.count", "style"}
    assert by_id["g0.count"].depends_on == ("g0.object",)
    assert by_id["g0.position"].depends_on == ("g0.object",)
    assert by_id["g1.object"].depends_on == () and by_id["style"].depends_on == ()
    assert by_id["g0.count"].text == "exactly 2 red circles"
    with pytest.raises(ValueError, match="outside the synthetic world's grammar"):
        decomposer("a photograph of a horse")


def test_ground_truth_renders_score_near_one_and_mismatches_lower(world):
    _, images, prompts = world
    reward = world_rubric_reward()
    matched, table = reward.score(images, prompts)
    mismatched = reward(images, prompts[1:] + prompts[:1])
    assert matched.mean() >= 0.97
    assert mismatched.mean() < matched.mean() - 0.4
    assert (mismatched < matched).double().mean() >= 0.9
    assert set(table.mean_by_type()) == {"object", "count", "position", "style", "background"}
    assert len(reward.cache) == len(set(prompts))


def test_rubric_score_equals_the_verifiers_fraction_passed(world):
    # With unit weights and the world's rule (count and position fail whenever the object is
    # missing) gating never changes a verdict, so the rubric score is `verify`'s score.
    _, images, prompts = world
    shuffled = prompts[7:] + prompts[:7]
    decomposer = WorldDecomposer()
    for batch in (prompts, shuffled):
        scores, _ = rubric_reward(images, [decomposer(p) for p in batch], WorldVerifier())
        want = [r.score for r in verify_batch(images, batch)]
        assert scores.tolist() == pytest.approx(want)


def test_missing_object_gates_its_count_and_position():
    blue = SceneObject(
        shape="square",
        colour="blue",
        size="large",
        count=1,
        position="centre",
        centres=((0.5, 0.5),),
    )
    scene = Scene(seed=0, objects=(blue,), background="white", style="flat")
    image = render(scene, 32)
    prompt = "two red circles at the top left and a blue square"
    scores, table = rubric_reward([image], [WorldDecomposer()(prompt)], WorldVerifier())
    got = dict(zip(table.requirement_id, table.gated.tolist(), strict=True))
    assert got == {
        "g0.object": 0.0,
        "g0.count": 0.0,
        "g0.position": 0.0,
        "g1.object": 1.0,
        "g1.count": 1.0,
    }
    assert scores.item() == pytest.approx(2 / 5)


def test_verifier_accepts_tensors_and_dedupes_images(world, monkeypatch):
    _, images, prompts = world
    import k2_recipes.rubric_world as module

    seen = []

    def spy(ims, ps):
        seen.append(len(ims))
        return verify_batch(ims, ps)

    monkeypatch.setattr(module, "verify_batch", spy)
    chw = torch.from_numpy(images[:4]).permute(0, 3, 1, 2)
    from_tensor, _ = rubric_reward(
        chw, [WorldDecomposer()(p) for p in prompts[:4]], WorldVerifier()
    )
    from_array, _ = rubric_reward(
        images[:4], [WorldDecomposer()(p) for p in prompts[:4]], WorldVerifier()
    )
    assert seen == [4, 4]  # one verify call per distinct (image, prompt), not per requirement
    torch.testing.assert_close(from_tensor, from_array)
    with pytest.raises(ValueError, match="uint8 image tensor"):
        WorldVerifier()([chw[0].float()], [WorldDecomposer()(prompts[0]).requirements[0]])
