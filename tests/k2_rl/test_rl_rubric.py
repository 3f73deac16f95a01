"""k2_rl.rewards: rubrics, dependency gating, LLM decomposition, the VLM yes/no verifier and
the text-rendering (OCR) reward."""

from __future__ import annotations

import itertools
import json
import math
import random
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from k2_rl.rewards import (
    LLMDecomposer,
    OCRVerifier,
    Requirement,
    RoutedVerifier,
    Rubric,
    RubricParseError,
    RubricReward,
    Verifier,
    VLMYesNoVerifier,
    levenshtein,
    parse_rubric,
    quoted_text,
    rubric_reward,
    text_rendering_reward,
    text_similarity,
    yes_no_probability,
)


def R(id, type="object", deps=(), weight=1.0, text=None, **params):
    return Requirement(
        id=id, type=type, text=text or f"claim {id}", weight=weight, depends_on=deps, params=params
    )


# ---- Requirement / Rubric ----


def test_rubric_validates_and_orders_topologically():
    rubric = Rubric(prompt="p", requirements=(R("c", deps=("b",)), R("a"), R("b", deps=("a",))))
    assert rubric.ids == ("a", "b", "c")
    with pytest.raises(ValueError, match="repeats requirement ids"):
        Rubric(prompt="p", requirements=(R("a"), R("a")))
    with pytest.raises(ValueError, match="unknown ids"):
        Rubric(prompt="p", requirements=(R("a", deps=("zz",)),))
    with pytest.raises(ValueError, match="cycle"):
        Rubric(prompt="p", requirements=(R("a", deps=("b",)), R("b", deps=("a",))))
    with pytest.raises(ValueError, match="no requirements"):
        Rubric(prompt="p", requirements=())
    with pytest.raises(ValueError, match="weight"):
        R("a", weight=0.0)
    with pytest.raises(ValueError, match="itself"):
        R("a", deps=("a",))


def test_rubric_json_round_trip():
    rubric = Rubric(
        prompt="a sign",
        requirements=(R("a", weight=2.0), R("t", type="text", deps=("a",), target="OPEN")),
    )
    again = Rubric.from_dict(json.loads(json.dumps(rubric.to_dict())))
    assert again == rubric


# ---- rubric_reward against an independent reference ----


def ref_rubric_score(rubric: Rubric, prob: dict[str, float], gating: str, threshold: float):
    """Recursive transcription: g(j) = p(j) · Π_parents gate(g(parent))."""
    by_id = {r.id: r for r in rubric.requirements}

    @cache
    def g(rid: str) -> float:
        value = prob[rid]
        for d in by_id[rid].depends_on:
            value *= g(d) if gating == "soft" else float(g(d) >= threshold)
        return value

    num = sum(r.weight * g(r.id) for r in rubric.requirements)
    return num / sum(r.weight for r in rubric.requirements), {
        r.id: g(r.id) for r in rubric.requirements
    }


def _random_rubric(rng: random.Random, name: str) -> Rubric:
    n = rng.randint(1, 7)
    reqs = []
    for j in range(n):
        deps = (
            tuple(sorted({f"{name}{rng.randrange(j)}" for _ in range(rng.randint(0, 2))}))
            if j
            else ()
        )
        reqs.append(R(f"{name}{j}", deps=deps, weight=rng.uniform(0.2, 3.0)))
    rng.shuffle(reqs)  # the rubric must restore a topological order
    return Rubric(prompt=name, requirements=tuple(reqs))


class TableVerifier:
    """Looks up a fixed float64 probability per (image, requirement id); records its calls."""

    def __init__(self, probs: dict[tuple[int, str], float]):
        self.probs = probs
        self.calls = []

    def __call__(self, images, requirements):
        self.calls.append((list(images), list(requirements)))
        return torch.tensor(
            [self.probs[(im, r.id)] for im, r in zip(images, requirements, strict=True)],
            dtype=torch.float64,
        )


@pytest.mark.parametrize("gating", ["hard", "soft"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rubric_reward_matches_reference(gating, seed):
    rng = random.Random(seed)
    rubrics = [_random_rubric(rng, f"p{i}_") for i in range(6)]
    images = list(range(6))
    # Probabilities near the 0.5 pass mark too, so hard gating takes both branches.
    probs = {
        (i, r.id): rng.choice([0.0, 0.3, 0.5, 0.7, 1.0, rng.random()])
        for i, rb in enumerate(rubrics)
        for r in rb.requirements
    }
    verifier = TableVerifier(probs)
    scores, table = rubric_reward(images, rubrics, verifier, gating=gating, threshold=0.5)
    assert len(verifier.calls) == 1  # one batched call for all pairs
    assert scores.dtype == torch.float64 and scores.shape == (6,)
    rows = table.rows()
    for i, rb in enumerate(rubrics):
        want, gated = ref_rubric_score(
            rb, {r.id: probs[(i, r.id)] for r in rb.requirements}, gating, 0.5
        )
        assert math.isclose(scores[i].item(), want, rel_tol=1e-12, abs_tol=1e-15)
        mine = {row["id"]: row["gated"] for row in rows if row["image"] == i}
        assert mine == pytest.approx(gated, rel=1e-12, abs=1e-15)


def test_failed_dependency_zeroes_descendants_transitively():
    rubric = Rubric(
        prompt="p",
        requirements=(
            R("obj"),
            R("count", deps=("obj",)),
            R("pos", deps=("count",)),
            R("style", type="style"),
        ),
    )
    verifier = TableVerifier(
        {(0, "obj"): 0.1, (0, "count"): 1.0, (0, "pos"): 1.0, (0, "style"): 1.0}
    )
    scores, table = rubric_reward([0], [rubric], verifier)
    assert table.gated.tolist() == [0.1, 0.0, 0.0, 1.0]
    assert table.probability.tolist() == [0.1, 1.0, 1.0, 1.0]
    assert scores.item() == pytest.approx(1.1 / 4)
    assert table.mean_by_type() == pytest.approx({"object": 0.1 / 3, "style": 1.0})


def test_rubric_reward_passes_each_image_object_to_the_verifier():
    rubrics = [
        Rubric(prompt="a", requirements=(R("x"), R("y"))),
        Rubric(prompt="b", requirements=(R("z"),)),
    ]
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    seen = []

    def verifier(ims, reqs):
        seen.extend(ims)
        return torch.ones(len(reqs))

    rubric_reward(images, rubrics, verifier)
    assert seen[0] is seen[1] and seen[1] is not seen[2]  # dedupe by identity is possible


def test_rubric_reward_rejects_bad_verifier_output():
    rubric = Rubric(prompt="p", requirements=(R("a"), R("b")))
    with pytest.raises(ValueError, match="shape"):
        rubric_reward([0], [rubric], lambda ims, reqs: torch.ones(3))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        rubric_reward([0], [rubric], lambda ims, reqs: torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="2 images but 1 rubrics"):
        rubric_reward([0, 1], [rubric], lambda ims, reqs: torch.ones(2))
    with pytest.raises(ValueError, match="gating"):
        rubric_reward([0], [rubric], lambda ims, reqs: torch.ones(2), gating="fuzzy")


def test_routed_verifier_and_rubric_reward_cache():
    calls = {"det": 0, "vlm": 0}

    def det(ims, reqs):
        calls["det"] += 1
        return torch.tensor([0.25] * len(reqs))

    def vlm(ims, reqs):
        calls["vlm"] += 1
        return torch.tensor([0.75] * len(reqs), dtype=torch.float64)

    routed = RoutedVerifier({"count": det}, default=vlm)
    assert isinstance(routed, Verifier)
    reqs = [R("a"), R("b", type="count"), R("c", type="style")]
    out = routed([0, 0, 0], reqs)
    assert out.tolist() == [0.75, 0.25, 0.75] and calls == {"det": 1, "vlm": 1}
    with pytest.raises(ValueError, match="no verifier for requirement type 'style'"):
        RoutedVerifier({"count": det})([0], [reqs[2]])

    decomposed = []

    def decomposer(prompt):
        decomposed.append(prompt)
        return Rubric(prompt=prompt, requirements=tuple(reqs))

    reward = RubricReward(decomposer, routed)
    scores = reward([0, 1, 2], ["x", "y", "x"])
    assert decomposed == ["x", "y"] and scores.tolist() == pytest.approx([7 / 12] * 3)


# ---- parsing LLM output ----

GOOD = [
    {"id": "cat", "type": "object", "text": "a cat is present", "weight": 3, "depends_on": []},
    {
        "id": "black",
        "type": "Attribute",
        "text": "the cat is black",
        "weight": 2,
        "depends_on": "cat",
    },
    {"type": "text", "text": 'the sign reads "OPEN"'},
]


@pytest.mark.parametrize(
    "reply",
    [
        json.dumps(GOOD),
        "Sure! Here is the checklist:\n```json\n"
        + json.dumps(GOOD, indent=2)
        + "\n```\nHope it helps.",
        json.dumps({"requirements": GOOD}),
        json.dumps(GOOD).replace("}]", "},]"),  # trailing comma
        "[not json] then " + json.dumps(GOOD),
    ],
)
def test_parse_rubric_is_robust(reply):
    rubric = parse_rubric(reply, prompt="a black cat by a sign")
    assert rubric.ids == ("cat", "black", "r3")
    black = rubric.requirements[1]
    assert black.type == "attribute" and black.depends_on == ("cat",) and black.weight == 2.0
    assert rubric.requirements[2].weight == 1.0 and rubric.prompt == "a black cat by a sign"


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ("I cannot help with that.", "no JSON list"),
        ('[{"type": "object"}]', "no 'text'"),
        ('[{"text": "x", "type": "vibe"}]', "type 'vibe'"),
        ('[{"text": "x", "weight": "high"}]', "non-numeric weight"),
        ('[{"text": "x", "weight": -1}]', "must be > 0"),
        ('[{"id": "a", "text": "x", "depends_on": ["b"]}]', "inconsistent"),
    ],
)
def test_parse_rubric_errors_are_clear(reply, match):
    with pytest.raises(RubricParseError, match=match) as err:
        parse_rubric(reply, prompt="p")
    assert "model output was" in str(err.value)


# ---- tiny transformers models ----

SPECIALS = [
    "[PAD]",
    "[UNK]",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
WORDS = [
    "yes",
    "Yes",
    "no",
    "No",
    "does",
    "the",
    "image",
    "satisfy",
    "this",
    "requirement",
    "answer",
    "or",
    "a",
    "red",
    "circle",
    "is",
    "present",
    "claim",
    "prompt",
    "requirements",
    "json",
    "list",
]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        [" ".join(WORDS) + ' " ? : ( ) [ ] { } ,'],
        trainer=trainers.WordLevelTrainer(special_tokens=SPECIALS),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        additional_special_tokens=SPECIALS[2:],
    )


@pytest.fixture(scope="module")
def tiny_vlm(tokenizer):
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    ids = tokenizer.convert_tokens_to_ids
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer,
    )
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    text |= dict(
        rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )
    vision = dict(
        depth=1,
        embed_dim=32,
        hidden_size=32,
        num_heads=2,
        mlp_ratio=2,
        patch_size=14,
        spatial_merge_size=2,
    )
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2VLForConditionalGeneration(config).eval()
    return model, processor


IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def test_yes_no_probability_equals_softmax_ratio():
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    yes, no = torch.tensor([2, 7]), torch.tensor([4])
    got = yes_no_probability(logits, yes, no)
    for i in range(5):
        e = [math.exp(v) for v in logits[i].tolist()]
        p_yes, p_no = (e[2] + e[7]) / sum(e), e[4] / sum(e)
        assert math.isclose(got[i].item(), p_yes / (p_yes + p_no), rel_tol=1e-12)
    torch.testing.assert_close(yes_no_probability(logits + 100.0, yes, no), got)


def test_vlm_verifier_probability_matches_an_independent_forward(tiny_vlm, tokenizer):
    model, processor = tiny_vlm
    verifier = VLMYesNoVerifier(
        model, processor, text_template=IMAGE + " {question} answer", batch_size=2
    )
    reqs = [
        R("a", text="a red circle is present"),
        R("b", text="red"),
        R("c", text="a circle is a red circle is red"),
    ]
    images = _images(3)
    got = verifier(images, reqs)
    assert got.shape == (3,) and torch.all((got > 0) & (got < 1))
    yes = [tokenizer.convert_tokens_to_ids(w) for w in ("yes", "Yes")]
    no = [tokenizer.convert_tokens_to_ids(w) for w in ("no", "No")]
    for image, req, p in zip(images, reqs, got.tolist(), strict=True):
        question = f'Does the image satisfy this requirement: "{req.text}"? Answer yes or no.'
        inputs = processor(text=[f"{IMAGE} {question} answer"], images=[image], return_tensors="pt")
        with torch.no_grad():
            last = model(**inputs).logits[0, -1].double()
        probs = torch.softmax(last, -1)
        want = probs[yes].sum() / (probs[yes].sum() + probs[no].sum())
        assert p == pytest.approx(want.item(), rel=1e-5)
    # Padding in a batch changes nothing: one pair alone scores the same.
    torch.testing.assert_close(verifier(images[1:2], reqs[1:2]), got[1:2], rtol=1e-5, atol=1e-6)


def test_vlm_verifier_chat_template_and_errors(tiny_vlm):
    model, processor = tiny_vlm
    with pytest.raises(ValueError, match="no chat template"):
        VLMYesNoVerifier(model, processor)
    with pytest.raises(ValueError, match="'\\{question\\}'"):
        VLMYesNoVerifier(model, processor, text_template=IMAGE)
    with pytest.raises(ValueError, match="single known token"):
        VLMYesNoVerifier(model, processor, text_template="{question}", yes_words=("absolutely",))
    plain = VLMYesNoVerifier(model, processor, text_template=IMAGE + " {question} answer")
    processor.chat_template = (
        "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
        + IMAGE
        + "{% else %} {{ c['text'] }}{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %} answer{% endif %}"
    )
    try:
        chat = VLMYesNoVerifier(model, processor)
        req = R("a", text="a red circle is present")
        assert chat.build_text(req) == plain.build_text(req)
        torch.testing.assert_close(chat(_images(1), [req]), plain(_images(1), [req]))
    finally:
        processor.chat_template = None


@pytest.fixture(scope="module")
def tiny_lm(tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    config.pad_token_id, config.bos_token_id, config.eos_token_id = 0, None, None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Qwen3ForCausalLM(config).eval()


def test_llm_decomposer_prompt_and_parsing_with_stub_generate():
    seen = []

    def generate(text):
        seen.append(text)
        return "```json\n" + json.dumps(GOOD) + "\n```"

    decomposer = LLMDecomposer(generate=generate, allowed_types=("object", "attribute", "text"))
    rubric = decomposer("a black cat by a sign")
    assert rubric.ids == ("cat", "black", "r3") and rubric.prompt == "a black cat by a sign"
    assert 'Prompt: "a black cat by a sign"' in seen[0] and "object, attribute, text" in seen[0]
    assert "JSON" in seen[0] and seen[0].index("Example") < seen[0].index("Prompt:")
    with pytest.raises(RubricParseError, match="'count'"):
        LLMDecomposer(
            generate=lambda t: '[{"text": "x", "type": "count"}]', allowed_types=("object",)
        )("p")
    with pytest.raises(ValueError, match="model and a tokenizer"):
        LLMDecomposer()
    with pytest.raises(FileNotFoundError, match=r"config\.json missing"):
        LLMDecomposer.from_pretrained("/nonexistent/llm")


def test_llm_decomposer_runs_a_real_model(tiny_lm, tokenizer):
    decomposer = LLMDecomposer(tiny_lm, tokenizer, max_new_tokens=6)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    )
    try:
        text = decomposer.build_prompt("a red circle")
        assert text.startswith("system: You turn") and text.endswith("assistant:")
        # A random model cannot write JSON: the plumbing runs and the error says what was wrong.
        with pytest.raises(RubricParseError, match="no JSON list") as err:
            decomposer("a red circle")
        reply = str(err.value).split("model output was: ")[1]
        assert len(reply.strip("'\"").split()) == 6  # word-level tokenizer: one word per new token
    finally:
        tokenizer.chat_template = None
    assert decomposer.build_prompt("x").endswith('Prompt: "x"\nRequirements (JSON list):\n')


# ---- OCR / text rendering ----


def ref_levenshtein(a: str, b: str) -> int:
    @cache
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("kitten", "sitting", 3),
        ("", "abc", 3),
        ("abc", "", 3),
        ("", "", 0),
        ("flaw", "lawn", 2),
        ("same", "same", 0),
        ("ab", "ba", 2),
    ],
)
def test_levenshtein_hand_cases(a, b, want):
    assert levenshtein(a, b) == want == levenshtein(b, a)


@settings(max_examples=60, deadline=None)
@given(a=st.text("abc ", max_size=8), b=st.text("abc ", max_size=8))
def test_levenshtein_matches_recursive_definition(a, b):
    assert levenshtein(a, b) == ref_levenshtein(a, b)


def test_text_similarity_and_quotes():
    assert text_similarity("OPEN", "open") == 1.0
    assert text_similarity("OPEN", "open", case_sensitive=True) == 0.0
    assert text_similarity("Grand  Opening", "grandopening") == 1.0
    assert text_similarity("opem", "open") == 0.75
    assert text_similarity("completely different and long", "abc") == 0.0
    assert text_similarity("", "") == 1.0 and text_similarity("x", "") == 0.0
    assert quoted_text('a sign saying "OPEN" and “24/7” «ok»') == ["OPEN", "24/7", "ok"]
    assert quoted_text("no text here, it's fine") == []


def test_text_rendering_reward_with_stub_ocr():
    lines = {0: [("GRAND", 0.9), ("0PENING", 0.8)], 1: [("sale", 0.95), ("noise", 0.1)], 2: []}

    def ocr(image):
        return lines[image]

    prompts = ['a banner "Grand Opening"', 'a poster reading "SALE"', "a quiet lake"]
    got = text_rendering_reward([0, 1, 2], prompts, ocr, min_confidence=0.5)
    want = [1 - 1 / len("grandopening"), 1.0, 1.0]  # one substitution; noise line dropped; no text
    assert got.tolist() == pytest.approx(want)
    # Without the confidence filter "salenoise" vs "sale" is 5 deletions, clipped to |target|.
    assert text_rendering_reward([1], ['"SALE"'], ocr)[0].item() == 0.0
    verifier = OCRVerifier(ocr, min_confidence=0.5)
    reqs = [
        R("t", type="text", text='reads "sale"'),
        R("u", type="text", text="reads it", target="grand opening"),
    ]
    assert verifier([1, 0], reqs).tolist() == pytest.approx([1.0, want[0]])
    with pytest.raises(ValueError, match="names no target"):
        verifier([0], [R("v", type="text", text="has text")])


def test_rubric_reward_with_permutations_is_consistent():
    # Shuffling the batch permutes the scores: no cross-talk between images.
    rng = random.Random(5)
    rubrics = [_random_rubric(rng, f"q{i}_") for i in range(4)]
    probs = {(i, r.id): rng.random() for i, rb in enumerate(rubrics) for r in rb.requirements}
    base, _ = rubric_reward(list(range(4)), rubrics, TableVerifier(probs))
    for perm in itertools.islice(itertools.permutations(range(4)), 5):
        got, _ = rubric_reward(list(perm), [rubrics[i] for i in perm], TableVerifier(probs))
        torch.testing.assert_close(got, base[list(perm)])


class _RightPadding:
    """A processor that ignores padding_side and pads on the right."""

    def __init__(self, processor):
        self.processor, self.tokenizer, self.chat_template = processor, processor.tokenizer, None

    def __call__(self, **kwargs):
        return self.processor(**(kwargs | {"padding_side": "right"}))


def test_vlm_verifier_right_padding_fallback_agrees(tiny_vlm):
    model, processor = tiny_vlm
    template = IMAGE + " {question} answer"
    reqs = [R("a", text="red"), R("b", text="a red circle is a circle is present")]
    left = VLMYesNoVerifier(model, processor, text_template=template)(_images(2), reqs)
    right = VLMYesNoVerifier(model, _RightPadding(processor), text_template=template)(
        _images(2), reqs
    )
    torch.testing.assert_close(right, left, rtol=1e-5, atol=1e-6)


def test_from_pretrained_loads_local_directories(tiny_lm, tiny_vlm, tokenizer, tmp_path):
    tiny_lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    decomposer = LLMDecomposer.from_pretrained(
        tmp_path / "lm", dtype=torch.float32, max_new_tokens=3
    )
    assert decomposer.max_new_tokens == 3
    for a, b in zip(decomposer.model.parameters(), tiny_lm.parameters(), strict=True):
        assert torch.equal(a, b)
    model, processor = tiny_vlm
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    template = IMAGE + " {question} answer"
    loaded = VLMYesNoVerifier.from_pretrained(
        tmp_path / "vlm", dtype=torch.float32, text_template=template
    )
    reqs = [R("a", text="a red circle is present")]
    want = VLMYesNoVerifier(model, processor, text_template=template)(_images(1), reqs)
    torch.testing.assert_close(loaded(_images(1), reqs), want)
    with pytest.raises(FileNotFoundError, match="no VLM checkpoint"):
        VLMYesNoVerifier.from_pretrained(tmp_path / "missing")
