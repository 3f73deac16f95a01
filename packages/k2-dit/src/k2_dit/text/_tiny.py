"""A tiny, randomly initialised Qwen3 text encoder with a locally trained tokenizer."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from k2_dit.text._encoder import TextEncoder

_SPECIALS = ("[PAD]", "[UNK]")


def build_tiny_text_encoder(
    corpus: Iterable[str],
    *,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    vocab_size: int = 512,
    seed: int = 0,
) -> TextEncoder:
    """Build a CPU-sized `Qwen3Model` with seeded random weights and a word-level tokenizer.

    Same model family as production (Qwen3-VL's language model is a Qwen3 decoder), so the tiny
    preset and the tests exercise the real code path. The tokenizer is a lowercase word-level
    vocabulary trained on `corpus` with the `tokenizers` library; unseen words map to `[UNK]`.

    Args:
        corpus: texts the vocabulary is learned from.
        hidden_size: model width (divisible by `num_heads`).
        num_layers: decoder layers; the encoder yields `num_layers + 1` hidden states.
        num_heads: attention heads (and KV heads).
        vocab_size: upper bound on the vocabulary, specials included.
        seed: seed of the weight initialisation (the global RNG is left untouched).

    Returns:
        A frozen `TextEncoder`; `save_pretrained` + `TextEncoder.from_pretrained` round-trips it.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    if hidden_size % num_heads != 0:
        raise ValueError(
            f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}: "
            "pick a head count that divides the width"
        )
    if (hidden_size // num_heads) % 2 != 0:
        raise ValueError(
            f"head dim {hidden_size // num_heads} must be even for RoPE: change hidden_size or num_heads"
        )
    if vocab_size <= len(_SPECIALS):
        raise ValueError(f"vocab_size={vocab_size} leaves no room beyond {list(_SPECIALS)}")

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(_SPECIALS))
    tok.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=3 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3Model(config)
    return TextEncoder(model, tokenizer)
