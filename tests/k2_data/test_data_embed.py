"""k2_data.embed: encoders loaded from local directories, batching, normalisation, the cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from k2_data.embed import (
    EmbeddingCache,
    ImageEncoder,
    embed_images,
    embed_to_cache,
    l2_normalize,
    load_image_encoder,
)


def _images(n, seed=0, size=(40, 30)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build().eval()


@pytest.fixture(scope="module")
def siglip2_dir(tmp_path_factory):
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    config = Siglip2VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        patch_size=8,
        num_patches=16,
    )
    model = _seeded(lambda: Siglip2VisionModel(config))
    path = tmp_path_factory.mktemp("siglip2")
    model.save_pretrained(path)
    Siglip2ImageProcessor(patch_size=8, max_num_patches=16).save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def dinov3_dir(tmp_path_factory):
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    config = DINOv3ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        patch_size=8,
        image_size=32,
        num_register_tokens=2,
    )
    model = _seeded(lambda: DINOv3ViTModel(config))
    path = tmp_path_factory.mktemp("dinov3")
    model.save_pretrained(path)
    DINOv3ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path, model


def test_siglip2_naflex_loads_and_matches_an_independent_forward(siglip2_dir):
    from transformers import Siglip2ImageProcessor

    path, model = siglip2_dir
    encoder = load_image_encoder(path)
    images = _images(3)
    got = embed_images(encoder, images, batch_size=2, normalize=False)
    inputs = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)(
        images=images, return_tensors="pt"
    )
    with torch.no_grad():
        want = model(**inputs).pooler_output  # the attention-pooling head
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    normed = embed_images(encoder, images, batch_size=3)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(normed, got / np.linalg.norm(got, axis=1, keepdims=True), rtol=1e-5)


def test_dual_siglip_model_uses_the_image_tower(tmp_path):
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = SiglipConfig(
        vision_config=tower | dict(image_size=32, patch_size=8),
        text_config=tower | dict(vocab_size=50, bos_token_id=1, eos_token_id=2, pad_token_id=0),
    )
    model = _seeded(lambda: SiglipModel(config))
    model.save_pretrained(tmp_path)
    processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(tmp_path)
    images = _images(2, seed=1)
    got = embed_images(load_image_encoder(tmp_path), images, normalize=False)
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt").pixel_values
        want = model.vision_model(pixel_values=pixels).pooler_output
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_dinov3_embedding_is_the_normalised_cls_token(dinov3_dir):
    path, model = dinov3_dir
    images = _images(4, seed=2)
    got = embed_images(load_image_encoder(path), images, batch_size=3, normalize=False)
    from transformers import DINOv3ViTImageProcessor

    pixels = DINOv3ViTImageProcessor(size={"height": 32, "width": 32})(
        images=images, return_tensors="pt"
    ).pixel_values
    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
    np.testing.assert_allclose(got, hidden[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_timm_local_directory(tmp_path):
    import timm
    from PIL import Image
    from timm.models import save_for_hf

    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    model = _seeded(lambda: timm.create_model("vit_tiny_patch16_224", num_classes=3, **args))
    save_for_hf(model, str(tmp_path), model_args=args, safe_serialization=True)
    encoder = load_image_encoder(tmp_path)
    images = _images(2, seed=3, size=(32, 32))
    got = embed_images(encoder, images, normalize=False)
    # Independent path: the same weights, pre-logits features of the saved model.
    # The saved pretrained_cfg: 32 px input, bicubic, crop 0.9, mean = std = 0.5.
    transform = timm.data.create_transform(
        input_size=(3, 32, 32),
        interpolation="bicubic",
        crop_pct=0.9,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    )
    x = torch.stack([transform(Image.fromarray(im)) for im in images])
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_missing_checkpoint_errors_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json missing.*hf download"):
        load_image_encoder(tmp_path / "nothing")
    (tmp_path / "config.json").write_text('{"model_type": "siglip2_vision_model"}')
    with pytest.raises(FileNotFoundError, match=r"no preprocessor_config\.json"):
        load_image_encoder(tmp_path)
    with pytest.raises(ValueError, match="backend"):
        load_image_encoder(tmp_path, backend="onnx")


def test_l2_normalize_matches_float64_formula_and_gradcheck():
    x = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[2] = 0.0
    got = l2_normalize(x)
    for i in range(5):
        norm = math.sqrt(sum(v * v for v in x[i].tolist()))
        want = [v / max(norm, 1e-12) for v in x[i].tolist()]
        assert got[i].tolist() == pytest.approx(want, rel=1e-12, abs=1e-300)
    assert torch.all(got[2] == 0)
    torch.autograd.gradcheck(l2_normalize, (x[[0, 1, 3]].clone().requires_grad_(),))


class CountingEncoder:
    """images -> deterministic features (mean colour and size), counting calls."""

    def __init__(self):
        self.seen = 0

    def __call__(self, images):
        self.seen += len(images)
        return torch.tensor([[float(np.mean(im)), float(im[0, 0, 0]) + 1.0, 3.0] for im in images])


def test_cache_round_trip_resume_and_crash_recovery(tmp_path):
    images = {f"k{i}": im for i, im in enumerate(_images(7, seed=4))}
    loads = []

    def load(keys):
        loads.extend(keys)
        return [images[k] for k in keys]

    cache = EmbeddingCache(tmp_path, dim=3, dtype="float32", model="counting")
    encoder = CountingEncoder()
    assert embed_to_cache(encoder, list(images)[:4], load, cache, batch_size=3) == 4
    assert sorted(p.name for p in tmp_path.glob("chunk-*")) == [
        "chunk-000000.npy",
        "chunk-000000.parquet",
        "chunk-000001.npy",
        "chunk-000001.parquet",
    ]
    # A crash after the rows but before the index: the orphan chunk is ignored, then replaced.
    np.save(tmp_path / "chunk-000002.npy", np.full((1, 3), 99.0, np.float32))
    reopened = EmbeddingCache(tmp_path, dim=3, dtype="float32", model="counting")
    assert len(reopened) == 4 and reopened.missing(list(images)) == ["k4", "k5", "k6"]
    loads.clear()
    assert embed_to_cache(encoder, list(images), load, reopened, batch_size=3) == 3
    assert loads == ["k4", "k5", "k6"]  # nothing decoded twice
    want = l2_normalize(CountingEncoder()(list(images.values()))).numpy()
    np.testing.assert_allclose(reopened.get(["k6", "k0", "k3"]), want[[6, 0, 3]], rtol=1e-6)
    batches = list(
        EmbeddingCache(tmp_path, dim=3, dtype="float32", model="counting").iter_batches(
            batch_size=2
        )
    )
    assert [k for keys, _ in batches for k in keys] == list(images)
    np.testing.assert_allclose(np.concatenate([e for _, e in batches]), want, rtol=1e-6)
    assert embed_to_cache(encoder, list(images), load, reopened) == 0


def test_cache_float16_storage_and_bad_input(tmp_path):
    cache = EmbeddingCache(tmp_path, dim=4)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert cache.add(["a", "b", "c"], x) == 3
    assert cache.add(["a", "d"], np.ones((2, 4))) == 1  # existing keys are kept, not rewritten
    got = cache.get(["a", "b", "c"])
    assert (
        got.dtype == np.float32 and (tmp_path / "chunk-000000.npy").stat().st_size < 3 * 4 * 4 + 200
    )
    np.testing.assert_allclose(got, x, rtol=1e-3, atol=1e-3)
    assert not np.array_equal(got, x)  # stored at half precision
    with pytest.raises(KeyError, match="not in the embedding cache"):
        cache.get(["a", "zz"])
    with pytest.raises(ValueError, match="shape"):
        cache.add(["e"], np.ones((1, 5)))
    with pytest.raises(ValueError, match="repeat"):
        cache.add(["e", "e"], np.ones((2, 4)))
    with pytest.raises(ValueError, match="another directory"):
        EmbeddingCache(tmp_path, dim=4, model="other")
    with pytest.raises(ValueError, match="dtype"):
        EmbeddingCache(tmp_path / "x", dim=4, dtype="int8")


def test_encoder_protocol_accepts_pil_and_arrays(dinov3_dir):
    from PIL import Image

    encoder = load_image_encoder(dinov3_dir[0])
    assert isinstance(encoder, ImageEncoder) and encoder.name == str(dinov3_dir[0])
    arrays = _images(2, seed=5)
    a = embed_images(encoder, arrays)
    b = embed_images(encoder, [Image.fromarray(im) for im in arrays])
    c = embed_images(encoder, np.stack(arrays), batch_size=1)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)  # batch size does not matter
    with pytest.raises(ValueError, match="no images"):
        embed_images(encoder, [])
