"""k2_data.caption: OCR detection and backends, prompts, rewrite parsing, the resumable
pipeline with real tiny models, and the training-caption sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from k2_data.caption import (
    CAPTION_INSTRUCTION,
    CaptionMix,
    CaptionParseError,
    CaptionStore,
    LLMGenerator,
    OcrResult,
    TrOCRRecognizer,
    VLMGenerator,
    box_ocr,
    caption_images,
    caption_prompt,
    format_metadata,
    parse_variants,
    reformat_prompt,
    resolve_ocr,
    sample_caption_lengths,
    tesseract_status,
    tesseract_words,
    training_captions,
)

# ---- prompts and parsing ----


def test_caption_prompt_includes_ocr_and_metadata():
    meta = {"camera": {"make": "Canon", "f": 2.8}, "entities": ["Eiffel Tower"], "empty": []}
    p = caption_prompt(ocr_text="  OPEN 24h ", metadata=meta)
    assert p.startswith(CAPTION_INSTRUCTION)
    assert "OCR (may contain errors):\nOPEN 24h" in p
    assert "- camera: make=Canon; f=2.8\n- entities: Eiffel Tower" in p and "empty" not in p
    assert "OCR detected no text" in caption_prompt(ocr_text="")
    assert caption_prompt(ocr_text=None) == CAPTION_INSTRUCTION  # no engine ran: claim nothing
    assert caption_prompt(ocr_text="x" * 50, max_ocr_chars=10).endswith("errors):\nxxxxxxxxxx …")
    assert format_metadata(None) == "" and format_metadata({"a": None, "b": 0}) == "- b: 0"
    assert reformat_prompt(" a dog ").endswith("Caption: a dog")
    with pytest.raises(ValueError, match="caption"):
        reformat_prompt("a", template="no slot")


@pytest.mark.parametrize(
    "reply",
    [
        '{"short": "a red fox", "medium": "A red fox sits in snow at dusk."}',
        'Sure!\n```json\n{"Short": "a red fox", "MEDIUM": "A red fox sits in snow at dusk."}\n```',
        'Here {not json} then {"medium": "A red fox sits in snow at dusk.", "short": "a red fox"}',
        "Short: a red fox\nMedium: A red fox sits in snow at dusk.",
        '**Short caption:** "a red fox"\n\n**Medium caption:**\nA red fox sits in snow at dusk.',
        "- medium - one: A red fox sits in snow at dusk.\n- short: a red fox",
    ],
)
def test_parse_variants_accepts_common_reply_shapes(reply):
    assert parse_variants(reply) == {
        "short": "a red fox",
        "medium": "A red fox sits in snow at dusk.",
    }


def test_parse_variants_names_what_is_missing():
    with pytest.raises(CaptionParseError, match=r"no medium caption.*'Short: fox'"):
        parse_variants("Short: fox")
    with pytest.raises(CaptionParseError, match="no short and no medium"):
        parse_variants('{"short": 3, "medium": null}')


# ---- OCR ----


def test_tesseract_absence_is_a_clear_non_fatal_status(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    status = tesseract_status()
    assert not status.available and "apt-get install tesseract-ocr" in status.message
    engine, status = resolve_ocr()
    assert engine is None and not status.available
    with pytest.raises(ValueError, match="engine"):
        resolve_ocr(engine="paddle")
    assert resolve_ocr(engine="none")[0] is None


def test_tesseract_words_groups_lines_and_drops_low_confidence():
    # The layout of pytesseract.image_to_data(..., output_type=Output.DICT).
    data = {
        "text": ["", "OPEN", "24h", "~", "", "Main", "St"],
        "conf": [-1, 96.0, "91", 12.0, -1, 88, 90],
        "block_num": [1, 1, 1, 1, 2, 2, 2],
        "par_num": [1, 1, 1, 1, 1, 1, 1],
        "line_num": [1, 1, 1, 1, 1, 1, 1],
        "left": [0, 10, 60, 90, 0, 10, 50],
        "top": [0, 5, 5, 5, 0, 40, 40],
        "width": [100, 40, 20, 5, 100, 30, 20],
        "height": [50, 12, 12, 12, 50, 10, 10],
    }
    result = tesseract_words(data, min_confidence=60.0)
    assert result.text == "OPEN 24h\nMain St"
    assert result.boxes.tolist() == [
        [10, 5, 50, 17],
        [60, 5, 80, 17],
        [10, 40, 40, 50],
        [50, 40, 70, 50],
    ]
    assert result.confidences.tolist() == [96, 91, 88, 90]


@pytest.mark.skipif(not tesseract_status().available, reason="needs tesseract-ocr + pytesseract")
def test_real_tesseract_reads_rendered_text():
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (360, 80), "white")
    ImageDraw.Draw(image).text((10, 15), "HELLO 42", fill="black", font=ImageFont.load_default(40))
    engine, status = resolve_ocr(engine="tesseract", tesseract_options={"min_confidence": 0.0})
    assert status.engine == "tesseract"
    result = engine([np.asarray(image)])[0]
    assert "HELLO" in result.text.upper() and result.boxes.shape[1] == 4


SPECIALS = [
    "[PAD]",
    "[UNK]",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<s>",
    "</s>",
]
WORDS = 'a red fox dog in snow short medium caption text ocr open " { } : , .'
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([WORDS], trainer=trainers.WordLevelTrainer(special_tokens=SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=SPECIALS[2:6],
    )


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build().eval()


@pytest.fixture(scope="module")
def tiny_trocr(tokenizer):
    from transformers import (
        TrOCRConfig,
        TrOCRProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    encoder = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    decoder = TrOCRConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id, config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    model = _seeded(lambda: VisionEncoderDecoderModel(config=config))
    processor = TrOCRProcessor(
        image_processor=ViTImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    return model, processor


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (30 + 4 * i, 44, 3), dtype=np.uint8) for i in range(n)]


def test_trocr_recognizer_runs_a_real_model_and_loads_locally(tiny_trocr, tmp_path):
    model, processor = tiny_trocr
    images = _images(3)
    got = TrOCRRecognizer(model, processor, max_new_tokens=4, batch_size=2)(images)
    for im, result in zip(images, got, strict=True):
        pixels = processor(images=[im], return_tensors="pt").pixel_values
        ids = model.generate(pixels, max_new_tokens=4, do_sample=False)
        assert (
            result.text == processor.tokenizer.decode(ids[0, 1:], skip_special_tokens=True).strip()
        )
        assert result.boxes.shape == (0, 4)  # a recogniser without a detector
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    engine, status = resolve_ocr(
        engine="trocr", trocr_path=tmp_path, trocr_options={"max_new_tokens": 4}
    )
    assert status.engine == "trocr" and [r.text for r in engine(images)] == [r.text for r in got]
    with pytest.raises(FileNotFoundError, match=r"no OCR checkpoint at .*trocr-base-printed"):
        TrOCRRecognizer.from_pretrained(tmp_path / "missing")


def test_box_ocr_feeds_text_density():
    from k2_data.filters import ocr_text_density

    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float64)
    engine = lambda images: [OcrResult(text="x", boxes=boxes) for _ in images]  # noqa: E731
    image = np.zeros((20, 20, 3), np.uint8)
    assert ocr_text_density(image, box_ocr(engine)) == (pytest.approx(175 / 400), 2)  # union, count


# ---- tiny VLM + LLM through the pipeline ----


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
    return _seeded(lambda: Qwen2VLForConditionalGeneration(config)), processor


@pytest.fixture(scope="module")
def tiny_lm(tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    )
    config.pad_token_id, config.bos_token_id, config.eos_token_id = 0, None, None
    return _seeded(lambda: Qwen3ForCausalLM(config))


class Loader:
    def __init__(self, images):
        self.images, self.calls = images, []

    def __call__(self, keys):
        self.calls.append(list(keys))
        return [self.images[k] for k in keys]


def test_pipeline_with_real_tiny_models(tiny_vlm, tiny_lm, tiny_trocr, tokenizer, tmp_path):
    model, processor = tiny_vlm
    vlm = VLMGenerator(model, processor, text_template=IMAGE + " {prompt}", max_new_tokens=4)
    llm = LLMGenerator(tiny_lm, tokenizer, text_template="{prompt} :", max_new_tokens=5)
    ocr = TrOCRRecognizer(*tiny_trocr, max_new_tokens=3)
    images = dict(zip(["k0", "k1", "k2"], _images(3, seed=1), strict=True))
    store = CaptionStore(tmp_path)
    run = caption_images(
        list(images),
        Loader(images),
        store,
        vlm=vlm,
        llm=llm,
        ocr=ocr,
        metadata={"k1": {"entities": ["red fox"]}},
        batch_size=2,
    )
    rows = store.read().to_pylist()
    assert [r["__key__"] for r in rows] == ["k0", "k1", "k2"] and run.computed == 3
    # Independent recomputation of each stage for one key.
    ocr_text = ocr([images["k1"]])[0].text
    prompt = caption_prompt(ocr_text=ocr_text, metadata={"entities": ["red fox"]})
    long = vlm([images["k1"]], [prompt])[0]
    assert rows[1]["ocr_text"] == ocr_text and rows[1]["long"] == (long or None)
    if long:
        enc = tokenizer([reformat_prompt(long) + " :"], return_tensors="pt")
        out = tiny_lm.generate(**enc, max_new_tokens=5, do_sample=False)
        reply = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert llm([reformat_prompt(long)]) == [reply.strip()]
    # A random LM cannot write the variants: every record is accounted for with a reason.
    assert run.ok + run.unparsed + run.empty == 3
    for r in rows:
        assert r["status"] in ("ok", "reformat_unparsed", "caption_empty")
        assert r["status"] == "ok" or r["error"]


def test_pipeline_resumes_and_matches_an_uninterrupted_run(tmp_path):
    images = {f"k{i}": np.full((8, 8, 3), i, np.uint8) for i in range(5)}
    ocr = lambda ims: [OcrResult(text=f"T{int(im[0, 0, 0])}") for im in ims]  # noqa: E731

    def vlm(ims, prompts, system_prompt=None):
        return [
            "" if int(im[0, 0, 0]) == 3 else f"fox {int(im[0, 0, 0])} {p[-2:]}"
            for im, p in zip(ims, prompts, strict=True)
        ]

    def llm(prompts):
        return [
            "nonsense" if "fox 4" in p else '{"short": "fox", "medium": "a fox"}' for p in prompts
        ]

    def run(root, loader, **kw):
        return caption_images(
            list(images), loader, CaptionStore(root), vlm=vlm, llm=llm, ocr=ocr, batch_size=2, **kw
        )

    whole = run(tmp_path / "a", Loader(images))
    assert (whole.ok, whole.unparsed, whole.empty) == (3, 1, 1)

    class Crash(Loader):
        def __call__(self, keys):
            if len(self.calls) == 1:
                raise KeyboardInterrupt  # killed during the second batch
            return super().__call__(keys)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", Crash(images))
    assert len(CaptionStore(tmp_path / "b")) == 2
    resumed_loader = Loader(images)
    resumed = run(tmp_path / "b", resumed_loader)
    assert resumed.computed == 3 and resumed_loader.calls == [["k2", "k3"], ["k4"]]
    assert CaptionStore(tmp_path / "b").read().equals(CaptionStore(tmp_path / "a").read())
    rows = {r["__key__"]: r for r in CaptionStore(tmp_path / "a").read().to_pylist()}
    assert rows["k0"] | {} == {
        "__key__": "k0",
        "ocr_text": "T0",
        "long": "fox 0 T0",
        "medium": "a fox",
        "short": "fox",
        "status": "ok",
        "error": None,
    }
    assert rows["k3"]["status"] == "caption_empty" and rows["k3"]["long"] is None
    assert rows["k4"]["status"] == "reformat_unparsed" and "nonsense" in rows["k4"]["error"]
    assert run(tmp_path / "a", Loader(images)).computed == 0


def test_generators_validate(tiny_lm, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="no chat template"):
        LLMGenerator(tiny_lm, tokenizer)
    with pytest.raises(FileNotFoundError, match=r"no LLM checkpoint at .*Qwen3"):
        LLMGenerator.from_pretrained(tmp_path / "missing")
    tiny_lm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = LLMGenerator.from_pretrained(
        tmp_path, dtype=torch.float32, text_template="{prompt}", max_new_tokens=3
    )
    direct = LLMGenerator(tiny_lm, tokenizer, text_template="{prompt}", max_new_tokens=3)
    prompts = ["a red fox", "snow", "a dog in snow ."]
    assert loaded(prompts) == direct(prompts) == [direct([p])[0] for p in prompts]


# ---- the training-caption sampler ----


def test_caption_sampler_frequencies_determinism_and_fallback():
    mix = CaptionMix(long=6.0, medium=3.0, short=1.0)
    assert mix.probabilities.tolist() == pytest.approx([0.6, 0.3, 0.1])
    draws = sample_caption_lengths(20_000, mix=mix, generator=np.random.default_rng(0))
    freq = np.bincount(draws, minlength=3) / draws.size
    # Binomial standard error is <= 0.0035 here; 4 sigma bounds.
    assert np.abs(freq - [0.6, 0.3, 0.1]).max() < 0.014
    again = sample_caption_lengths(20_000, mix=mix, generator=np.random.default_rng(0))
    assert np.array_equal(draws, again)
    only_long = sample_caption_lengths(
        100, mix=CaptionMix(medium=0.0, short=0.0), generator=np.random.default_rng(1)
    )
    assert (only_long == 0).all()
    records = [
        {"long": "L", "medium": "M", "short": "S"},
        {"long": "L2", "medium": None, "short": ""},
    ]
    picked = training_captions(
        records * 500,
        mix=CaptionMix(long=0.0, medium=1.0, short=1.0),
        generator=np.random.default_rng(2),
    )
    assert set(picked[0::2]) == {"M", "S"} and set(picked[1::2]) == {"L2"}
    with pytest.raises(ValueError, match="no long caption"):
        training_captions([{"__key__": "x", "long": None}], generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match=">= 0"):
        CaptionMix(long=-1.0)
