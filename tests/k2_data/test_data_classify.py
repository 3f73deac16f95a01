"""k2_data.classify: answer parsing, the probe, threshold calibration, the pseudo-label loop."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from k2_data.classify import (
    AI_GENERATED,
    FLAT_BORDER,
    LABEL_TASKS,
    EmbeddingFilter,
    LabelTask,
    LinearProbe,
    VLMGenerator,
    apply_filter,
    calibrate_threshold,
    fit_linear_probe,
    parse_label,
    pseudo_label,
    stratified_split,
    train_filter,
    wilson_lower_bound,
)
from k2_data.embed import EmbeddingCache

# ---- parsing ----


@pytest.mark.parametrize(
    ("reply", "want"),
    [
        ("Yes.", "yes"),
        ("**No**, it is a photograph", "no"),
        ("I think yes, though no watermark", "yes"),
        ("It is not generated; nothing suggests it", None),  # "no" is not inside "not"/"nothing"
        ("", None),
        ("YES", "yes"),
    ],
)
def test_parse_label_yes_no(reply, want):
    assert parse_label(reply, ("yes", "no")) == want


def test_parse_label_class_names_prefers_earliest_then_longest():
    classes = ("dark", "dark grey", "white")
    assert parse_label("Background: dark-grey, not white", classes) == "dark grey"
    assert parse_label("white on dark", classes) == "white"
    assert parse_label("Dark", classes) == "dark"
    assert parse_label("darkness", classes) is None


def test_label_task_validation_and_presets():
    assert LABEL_TASKS["ai_generated"] is AI_GENERATED and LABEL_TASKS["flat_border"] is FLAT_BORDER
    with pytest.raises(ValueError, match="not one of classes"):
        LabelTask(name="x", system_prompt="s", question="q", positive="maybe")
    with pytest.raises(ValueError, match="distinct"):
        LabelTask(name="x", system_prompt="s", question="q", classes=("yes", "Yes"))


# ---- calibration against a brute-force reference ----


def ref_wilson(k, n, z):
    """Wilson 1927 score interval, lower end, from its quadratic: solve
    (p̂ - p)² = z² p (1 - p) / n for p and take the smaller root."""
    if z == 0:
        return k / n
    a = 1 + z * z / n
    b = -(2 * k / n + z * z / n)
    c = (k / n) ** 2
    return (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)


def ref_calibrate(scores, positive, target, min_flagged, z):
    """Try every distinct score as a threshold with explicit loops; keep the feasible lowest."""
    for t in sorted(set(scores.tolist())):
        flagged = [i for i in range(len(scores)) if scores[i] >= t]
        tp = sum(bool(positive[i]) for i in flagged)
        if len(flagged) >= min_flagged and ref_wilson(tp, len(flagged), z) >= target - 1e-12:
            return (t, tp / len(flagged), tp / sum(positive.tolist()), len(flagged))
    return None


@pytest.mark.parametrize("seed", range(6))
def test_calibrate_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 60
    positive = rng.random(n) < 0.4
    positive[0] = True
    # Coarse scores force ties, including ties between a positive and a negative.
    scores = np.round(rng.random(n) * 0.6 + 0.4 * positive, 1)
    for target, min_flagged, confidence in itertools.product((0.5, 0.8, 0.95), (1, 4), (0.0, 0.9)):
        kwargs = dict(target_precision=target, min_flagged=min_flagged, confidence=confidence)
        z = NormalDist().inv_cdf(confidence) if confidence else 0.0
        want = ref_calibrate(scores, positive, target, min_flagged, z)
        if want is None:
            with pytest.raises(ValueError, match="no threshold reaches"):
                calibrate_threshold(scores, positive, **kwargs)
            continue
        got = calibrate_threshold(scores, positive, **kwargs)
        assert (got.threshold, got.precision, got.recall, got.flagged) == pytest.approx(want)
        assert got.positives == positive.sum() and got.total == n
        assert got.precision_lower <= got.precision


def test_calibrate_threshold_rejects_bad_input():
    s, p = np.array([0.1, 0.9]), np.array([False, False])
    with pytest.raises(ValueError, match="no positives"):
        calibrate_threshold(s, p)
    with pytest.raises(ValueError, match="target_precision"):
        calibrate_threshold(s, ~p, target_precision=0.0)
    with pytest.raises(ValueError, match="confidence"):
        calibrate_threshold(s, ~p, confidence=1.0)


def test_wilson_lower_bound_matches_the_quadratic_and_is_below_p():
    k = np.array([0, 1, 5, 9, 10, 37])
    n = np.array([1, 3, 10, 10, 10, 40])
    p = k / n
    for confidence in (0.0, 0.8, 0.975):
        z = NormalDist().inv_cdf(confidence) if confidence else 0.0
        got = wilson_lower_bound(p, n, confidence=confidence)
        assert got.tolist() == pytest.approx(
            [ref_wilson(a, b, z) for a, b in zip(k, n, strict=True)], abs=1e-12
        )
        assert np.all(got <= p + 1e-15) and np.all(got >= 0)
    # More evidence at the same proportion tightens the bound.
    assert np.all(
        np.diff(
            wilson_lower_bound(np.full(4, 0.9), np.array([10, 100, 1000, 10000]), confidence=0.95)
        )
        > 0
    )


def _mixture(n, seed, d=16, positive_rate=0.3):
    """Two overlapping Gaussian classes: positives shifted along a fixed direction."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < positive_rate
    direction = np.ones(d) / math.sqrt(d)
    x = rng.standard_normal((n, d)) + 2.5 * y[:, None] * direction
    return x.astype(np.float32), y


def test_calibrated_filter_reaches_target_precision_on_fresh_data():
    x, y = _mixture(3000, seed=0)
    labels = ["yes" if v else "no" for v in y]
    flt = train_filter(x, labels, AI_GENERATED, target_precision=0.95, seed=1)
    assert flt.calibration.precision >= 0.95 and flt.num_unparsed == 0
    fresh_x, fresh_y = _mixture(40_000, seed=2)
    flags = flt.flags(fresh_x)
    precision = (flags & fresh_y).sum() / flags.sum()
    recall = (flags & fresh_y).sum() / fresh_y.sum()
    # The classes overlap, so an untuned threshold (0.5, balanced probe) is far from 0.95.
    naive = flt.scores(fresh_x) >= 0.5
    assert (naive & fresh_y).sum() / naive.sum() < 0.9
    assert precision >= 0.95 and recall > 0.3
    assert abs(recall - flt.calibration.recall) < 0.08


# ---- probe ----


def test_linear_probe_matches_sklearn_and_a_float64_softmax(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.standard_normal((90, 5)).astype(np.float32)
    for classes in (("no", "yes"), ("a", "b", "c")):
        labels = [classes[i % len(classes)] for i in range(90)]
        x_shift = x + np.array([[classes.index(c)] * 5 for c in labels], np.float32)
        probe = fit_linear_probe(x_shift, labels, c=0.5)
        ref = LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000)
        ref.fit(x_shift.astype(np.float64), labels)
        got = probe.probabilities(x_shift[:7])
        np.testing.assert_allclose(got, ref.predict_proba(x_shift[:7]), atol=2e-5)
        for i in range(3):  # plain softmax of W x + b in float64
            z = [
                sum(float(w) * float(v) for w, v in zip(row, x_shift[i], strict=True)) + float(b)
                for row, b in zip(probe.weight, probe.bias, strict=True)
            ]
            e = [math.exp(v - max(z)) for v in z]
            assert got[i].tolist() == pytest.approx([v / sum(e) for v in e], rel=1e-5)
        probe.save(tmp_path / "p.safetensors")
        again = LinearProbe.load(tmp_path / "p.safetensors")
        assert again.classes == probe.classes
        np.testing.assert_array_equal(again.probabilities(x), probe.probabilities(x))
    with pytest.raises(ValueError, match="two classes"):
        fit_linear_probe(x, ["yes"] * 90)
    with pytest.raises(ValueError, match="not one of"):
        probe.score(x, "zzz")
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        probe.probabilities(x[:, :3])


def test_stratified_split_keeps_class_proportions():
    labels = ["a"] * 50 + ["b"] * 10
    train, hold = stratified_split(labels, holdout_fraction=0.3, seed=0)
    assert sorted(np.concatenate([train, hold]).tolist()) == list(range(60))
    assert sum(labels[i] == "a" for i in hold) == 15 and sum(labels[i] == "b" for i in hold) == 3


# ---- the loop, end to end, with a stub VLM ----


class StubVLM:
    """Replies from ground truth hidden in the image (its mean colour), like a good VLM would;
    every 13th reply is unusable."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, prompts, system_prompt=None):
        self.calls.append((len(images), prompts[0], system_prompt))
        out = []
        for im in images:
            idx = int(im[0, 0, 1])
            if idx % 13 == 0:
                out.append("I cannot tell.")
            else:
                out.append("Yes, this is generated." if im[0, 0, 0] > 127 else "No.")
        return out


def test_pseudo_label_loop_end_to_end(tmp_path):
    n = 600
    x, y = _mixture(n, seed=4)
    images = [np.full((4, 4, 3), (200 if v else 50, i % 256, 0), np.uint8) for i, v in enumerate(y)]
    vlm = StubVLM()
    labels = pseudo_label(vlm, images, AI_GENERATED, batch_size=256)
    assert [c[0] for c in vlm.calls] == [256, 256, 88]
    assert all(c[1:] == (AI_GENERATED.question, AI_GENERATED.system_prompt) for c in vlm.calls)
    unusable = [i for i in range(n) if i % 256 % 13 == 0]
    assert [i for i, label in enumerate(labels) if label is None] == unusable
    flt = train_filter(x, labels, AI_GENERATED, target_precision=0.9, seed=0)
    assert flt.num_labelled == n and flt.num_unparsed == len(unusable)
    # Score a corpus at scale from an embedding cache, in batches.
    corpus_x, corpus_y = _mixture(2000, seed=5)
    cache = EmbeddingCache(tmp_path / "emb", dim=16, dtype="float32")
    keys = [f"{i:05d}" for i in range(2000)]
    for start in range(0, 2000, 700):
        cache.add(keys[start : start + 700], corpus_x[start : start + 700])
    table = apply_filter(flt, cache.iter_batches(batch_size=300))
    assert table.column("__key__").to_pylist() == keys
    flags = np.asarray(table.column("ai_generated_flag"))
    np.testing.assert_allclose(np.asarray(table.column("ai_generated_score")), flt.scores(corpus_x))
    assert (flags & corpus_y).sum() / flags.sum() >= 0.85
    flt.save(tmp_path / "filter.safetensors")
    again = EmbeddingFilter.load(tmp_path / "filter.safetensors")
    assert again.calibration == flt.calibration and again.task == "ai_generated"
    np.testing.assert_array_equal(again.flags(corpus_x), flags)
    with pytest.raises(ValueError, match="no image was labelled 'yes'"):
        train_filter(x, ["no"] * n, AI_GENERATED)


# ---- one real tiny VLM to prove the plumbing ----

SPECIALS = [
    "[PAD]",
    "[UNK]",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def tiny_vlm():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = "yes no is this image ai generated answer or . ? : , a photo"
    tok.train_from_iterator([words], trainer=trainers.WordLevelTrainer(special_tokens=SPECIALS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        additional_special_tokens=SPECIALS[2:],
    )
    ids = tokenizer.convert_tokens_to_ids
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=56 * 56),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=tokenizer,
    )
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=0,
            bos_token_id=None,
            eos_token_id=None,
            rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        ),
        vision_config=dict(
            depth=1,
            embed_dim=32,
            hidden_size=32,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2VLForConditionalGeneration(config).eval()
    return model, processor


def test_real_tiny_vlm_labels_through_the_loop(tiny_vlm, tmp_path):
    model, processor = tiny_vlm
    template = IMAGE + " {system} {prompt}"
    vlm = VLMGenerator(model, processor, text_template=template, max_new_tokens=3, batch_size=2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (28 + 8 * i, 36, 3), dtype=np.uint8) for i in range(3)]
    labels = pseudo_label(vlm, images, AI_GENERATED)
    replies = []
    for im in images:  # independent single-image greedy generation
        text = template.format(system=AI_GENERATED.system_prompt, prompt=AI_GENERATED.question)
        inputs = processor(text=[text], images=[im], return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1] :]
        replies.append(processor.tokenizer.decode(new, skip_special_tokens=True).strip())
    assert labels == [parse_label(r, ("yes", "no")) for r in replies]
    assert vlm(images, ["a photo"] * 3, system_prompt="is this") == [
        r for r in vlm(images[:2], ["a photo"] * 2, system_prompt="is this")
    ] + vlm(images[2:], ["a photo"], system_prompt="is this")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = VLMGenerator.from_pretrained(
        tmp_path, dtype=torch.float32, text_template=template, max_new_tokens=3
    )
    assert pseudo_label(loaded, images, AI_GENERATED) == labels


def test_vlm_generator_errors(tiny_vlm, tmp_path):
    model, processor = tiny_vlm
    with pytest.raises(ValueError, match="no chat template"):
        VLMGenerator(model, processor)
    with pytest.raises(ValueError, match="'\\{prompt\\}'"):
        VLMGenerator(model, processor, text_template=IMAGE)
    with pytest.raises(FileNotFoundError, match=r"no VLM checkpoint at .*hf download"):
        VLMGenerator.from_pretrained(tmp_path / "missing")
    vlm = VLMGenerator(model, processor, text_template=IMAGE + "{prompt}")
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        vlm([np.zeros((28, 28, 3), np.uint8)] * 2, ["x"])
