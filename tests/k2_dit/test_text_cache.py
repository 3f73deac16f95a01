"""TextFeatureCache: the frozen encoder runs once per prompt and cached features equal fresh ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from k2_dit.text import TextEncoder, TextFeatureCache, build_tiny_text_encoder, encode_cached

CORPUS = ["a red cube on a blue sphere", "two green cones beside a yellow torus"]
PROMPTS = ["a red cube", "", "two green cones beside a yellow torus", "a blue sphere"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return build_tiny_text_encoder(CORPUS, hidden_size=16, num_layers=2, num_heads=2, seed=3)


class _CountingEncoder(TextEncoder):
    """Records which prompts reach the model."""

    def __init__(self, inner: TextEncoder) -> None:
        super().__init__(inner.model, inner.tokenizer)
        self.calls: list[list[str]] = []

    def encode(self, prompts, *, max_length):
        self.calls.append(list(prompts))
        return super().encode(prompts, max_length=max_length)


def test_miss_then_hit_equals_fresh(encoder: TextEncoder, tmp_path: Path) -> None:
    counting = _CountingEncoder(encoder)
    cache = TextFeatureCache(tmp_path)
    fresh, fresh_mask = encoder.encode(PROMPTS, max_length=8)
    first, first_mask = cache.encode(counting, PROMPTS, max_length=8)
    assert (cache.hits, cache.misses) == (0, len(PROMPTS))
    assert counting.calls == [PROMPTS]
    second, second_mask = cache.encode(counting, PROMPTS, max_length=8)
    assert (cache.hits, cache.misses) == (len(PROMPTS), len(PROMPTS))
    assert len(counting.calls) == 1
    for got, mask in ((first, first_mask), (second, second_mask)):
        assert got.shape == fresh.shape
        assert torch.equal(mask, fresh_mask)
        torch.testing.assert_close(got, fresh, rtol=1e-5, atol=1e-6)


def test_partial_hits_encode_only_new_prompts(encoder: TextEncoder, tmp_path: Path) -> None:
    counting = _CountingEncoder(encoder)
    cache = TextFeatureCache(tmp_path)
    cache.encode(counting, PROMPTS[:2], max_length=8)
    batch = [PROMPTS[1], PROMPTS[3], PROMPTS[0], PROMPTS[3]]
    got, mask = cache.encode(counting, batch, max_length=8)
    assert counting.calls[-1] == [PROMPTS[3]]
    assert (cache.hits, cache.misses) == (2, 4)
    fresh, fresh_mask = encoder.encode(batch, max_length=8)
    assert torch.equal(mask, fresh_mask)
    torch.testing.assert_close(got, fresh, rtol=1e-5, atol=1e-6)


def test_key_depends_on_prompt_encoder_and_max_length(encoder: TextEncoder, tmp_path: Path) -> None:
    cache = TextFeatureCache(tmp_path)
    other = build_tiny_text_encoder(CORPUS, hidden_size=16, num_layers=2, num_heads=2, seed=4)
    keys = {
        cache.key("a red cube", encoder, max_length=8),
        cache.key("a red cube", encoder, max_length=9),
        cache.key("a red cube", other, max_length=8),
        cache.key("a red cube ", encoder, max_length=8),
    }
    assert len(keys) == 4
    cache.encode(encoder, ["a red cube"], max_length=8)
    cache.encode(other, ["a red cube"], max_length=8)
    cache.encode(encoder, ["a red cube"], max_length=2)
    assert (cache.hits, cache.misses) == (0, 3)


def test_metadata_mismatch_is_a_miss(encoder: TextEncoder, tmp_path: Path) -> None:
    cache = TextFeatureCache(tmp_path)
    path = cache._path("a red cube", encoder, max_length=8)
    path.parent.mkdir(parents=True)
    bogus = torch.full((3, 3, 16), 7.0)
    save_file({"hidden": bogus}, str(path), metadata={"prompt": "something else"})
    got, _ = cache.encode(encoder, ["a red cube"], max_length=8)
    assert cache.misses == 1
    torch.testing.assert_close(got, encoder.encode(["a red cube"], max_length=8)[0])
    cache.encode(encoder, ["a red cube"], max_length=8)
    assert cache.hits == 1


def test_encode_cached(encoder: TextEncoder, tmp_path: Path) -> None:
    plain = encode_cached(encoder, PROMPTS, max_length=8, cache_dir=None)
    fresh = encoder.encode(PROMPTS, max_length=8)
    torch.testing.assert_close(plain[0], fresh[0], rtol=0, atol=0)
    cached = encode_cached(encoder, PROMPTS, max_length=8, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").rglob("*.safetensors"))) == len(PROMPTS)
    torch.testing.assert_close(cached[0], fresh[0], rtol=1e-5, atol=1e-6)
    assert torch.equal(cached[1], fresh[1])
    assert not list((tmp_path / "c").rglob("*.tmp"))
