"""TextEncoder: stacked hidden states, masks, padding, loading from local directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from k2_dit.text import TextEncoder, TextEncoderNotFoundError, build_tiny_text_encoder

CORPUS = [
    "a red cube on a blue sphere",
    "two green cones beside a yellow torus",
    "a small white cat sleeping under a wooden table",
    "the purple pyramid casts a long shadow",
]
PROMPTS = ["A red cube", "", "two green cones beside a yellow torus at dusk"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return build_tiny_text_encoder(CORPUS, hidden_size=32, num_layers=3, num_heads=4, seed=0)


def _word_count(prompt: str, max_length: int) -> int:
    # The tiny tokenizer is word level without special tokens: one token per word.
    return min(len(prompt.split()), max_length)


def test_shapes_mask_and_padding(encoder: TextEncoder) -> None:
    hidden, mask = encoder.encode(PROMPTS, max_length=32)
    lengths = [_word_count(p, 32) for p in PROMPTS]
    assert encoder.num_hidden_states == 4 and encoder.hidden_size == 32
    assert hidden.shape == (3, max(lengths), 4, 32)
    expected = torch.tensor([[j < n for j in range(max(lengths))] for n in lengths])
    assert torch.equal(mask.cpu(), expected)
    assert torch.all(hidden[~mask] == 0)
    assert torch.isfinite(hidden).all()
    assert hidden[mask].abs().sum(-1).min() > 0


def test_truncation_to_max_length(encoder: TextEncoder) -> None:
    hidden, mask = encoder.encode(PROMPTS, max_length=3)
    assert hidden.shape[1] == 3
    assert mask.sum(1).tolist() == [_word_count(p, 3) for p in PROMPTS]


def test_empty_prompts(encoder: TextEncoder) -> None:
    hidden, mask = encoder.encode(["", ""], max_length=8)
    assert hidden.shape == (2, 1, 4, 32)
    assert not mask.any()
    assert torch.all(hidden == 0)


def test_layers_match_model_outputs(encoder: TextEncoder) -> None:
    """Index 0 is the token embedding and index -1 the model's last hidden state."""
    hidden, mask = encoder.encode([PROMPTS[0]], max_length=16)
    ids = encoder.tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = encoder.model(input_ids=ids)
        emb = encoder.model.embed_tokens(ids)
    torch.testing.assert_close(hidden[0, :, 0], emb[0], rtol=0, atol=0)
    torch.testing.assert_close(hidden[0, :, -1], out.last_hidden_state[0], rtol=1e-6, atol=1e-6)
    assert mask.all()


def test_rows_do_not_depend_on_batch_padding(encoder: TextEncoder) -> None:
    batch, _ = encoder.encode(PROMPTS, max_length=32)
    for i, prompt in enumerate(PROMPTS):
        if not prompt:
            continue
        alone, alone_mask = encoder.encode([prompt], max_length=32)
        n = int(alone_mask.sum())
        torch.testing.assert_close(batch[i, :n], alone[0, :n], rtol=1e-5, atol=1e-6)


def test_frozen_and_deterministic(encoder: TextEncoder) -> None:
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())
    with torch.enable_grad():
        hidden, _ = encoder.encode(PROMPTS, max_length=8)
    assert not hidden.requires_grad
    same = build_tiny_text_encoder(CORPUS, hidden_size=32, num_layers=3, num_heads=4, seed=0)
    other = build_tiny_text_encoder(CORPUS, hidden_size=32, num_layers=3, num_heads=4, seed=1)
    torch.testing.assert_close(same.encode(PROMPTS, max_length=8)[0], hidden, rtol=0, atol=0)
    assert not torch.allclose(other.encode(PROMPTS, max_length=8)[0], hidden)
    assert same.fingerprint == encoder.fingerprint != other.fingerprint


def test_bad_arguments(encoder: TextEncoder) -> None:
    with pytest.raises(ValueError, match="max_length"):
        encoder.encode(PROMPTS, max_length=0)
    with pytest.raises(ValueError, match="at least one prompt"):
        encoder.encode([], max_length=4)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        build_tiny_text_encoder(CORPUS, hidden_size=30, num_heads=4)


def test_save_load_round_trip(encoder: TextEncoder, tmp_path: Path) -> None:
    encoder.save_pretrained(tmp_path)
    loaded = TextEncoder.from_pretrained(tmp_path, dtype=torch.float32)
    assert type(loaded.model).__name__ == "Qwen3Model"
    a, mask_a = encoder.encode(PROMPTS, max_length=16)
    b, mask_b = loaded.encode(PROMPTS, max_length=16)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(mask_a, mask_b)
    assert loaded.fingerprint == encoder.fingerprint
    bf16 = TextEncoder.from_pretrained(tmp_path)
    assert bf16.dtype == torch.bfloat16
    assert bf16.encode(PROMPTS, max_length=16)[0].dtype == torch.bfloat16


def _tiny_qwen3_vl(encoder: TextEncoder, tmp_path: Path):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(encoder.tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e4,
                "mrope_section": [2, 1, 1],
            },
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": 32,
            "deepstack_visual_indexes": [0],
        },
    )
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path)
    encoder.tokenizer.save_pretrained(tmp_path)
    return model


def test_qwen3_vl_loads_language_model_only(encoder: TextEncoder, tmp_path: Path) -> None:
    full = _tiny_qwen3_vl(encoder, tmp_path)
    loaded = TextEncoder.from_pretrained(tmp_path, dtype=torch.float32)
    names = [n for n, _ in loaded.model.named_parameters()]
    assert not any("visual" in n or "lm_head" in n for n in names)
    assert loaded.num_hidden_states == 3 and loaded.hidden_size == 32
    hidden, mask = loaded.encode(PROMPTS, max_length=16)
    reference = TextEncoder(full.model.language_model, encoder.tokenizer)
    expected, expected_mask = reference.encode(PROMPTS, max_length=16)
    torch.testing.assert_close(hidden, expected, rtol=0, atol=0)
    assert torch.equal(mask, expected_mask)
    with pytest.raises(ValueError, match="model_type is 'qwen3_vl'"):
        TextEncoder.from_pretrained(tmp_path, kind="t5")


def test_qwen3_vl_without_language_weights(encoder: TextEncoder, tmp_path: Path) -> None:
    _tiny_qwen3_vl(encoder, tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if "language_model" not in k}, weights)
    with pytest.raises(TextEncoderNotFoundError, match="lack the language model"):
        TextEncoder.from_pretrained(tmp_path, dtype=torch.float32)


def test_t5_encoder_and_special_tokens_of_empty_prompt(
    encoder: TextEncoder, tmp_path: Path
) -> None:
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    backend = encoder.tokenizer.backend_tokenizer
    spec = json.loads(backend.to_str())
    vocab = dict(spec["model"]["vocab"])
    vocab["</s>"] = len(vocab)
    spec["model"]["vocab"] = vocab
    spec["added_tokens"].append(
        {
            "id": vocab["</s>"],
            "content": "</s>",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(spec))
    # Like T5's tokenizer: every sequence ends with </s>, so "" is one token long.
    tok.post_processor = TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="</s>"
    )
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = TextEncoder.from_pretrained(tmp_path, dtype=torch.float32)
    assert type(loaded.model).__name__ == "T5EncoderModel"
    assert loaded.num_hidden_states == 3 and loaded.hidden_size == 16
    hidden, mask = loaded.encode(PROMPTS, max_length=32)
    # Real tokens are the words plus </s>; the empty prompt's lone </s> is not a prompt.
    assert mask.sum(1).tolist() == [len(p.split()) + 1 if p else 0 for p in PROMPTS]
    assert hidden.shape == (3, len(PROMPTS[2].split()) + 1, 3, 16)
    assert torch.all(hidden[1] == 0)


def test_missing_directory_and_weights(tmp_path: Path, encoder: TextEncoder) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(TextEncoderNotFoundError, match="Qwen/Qwen3-VL-8B-Instruct") as info:
        TextEncoder.from_pretrained(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    encoder.save_pretrained(tmp_path / "ok")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (no_weights / name).write_bytes((tmp_path / "ok" / name).read_bytes())
    with pytest.raises(TextEncoderNotFoundError, match=r"lacks weights") as info:
        TextEncoder.from_pretrained(no_weights, kind="t5")
    assert str(no_weights) in str(info.value) and "t5-v1_1-xxl" in str(info.value)
