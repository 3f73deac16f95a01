"""Diffusers-backed codecs: normalisation against float64 formulas, round trips, loading, errors."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from k2_dit.latents import (
    CodecWeightsNotFoundError,
    DCAECodec,
    Flux2Codec,
    LatentCodec,
    QwenImageCodec,
)

D64 = torch.float64


def _flux2() -> Any:
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=32,
    )
    # Non-trivial BatchNorm statistics, so the normalisation is actually exercised.
    vae.bn.running_mean.copy_(torch.randn(16))
    vae.bn.running_var.copy_(torch.rand(16) + 0.5)
    return vae


def _qwen_image() -> Any:
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2],
        num_res_blocks=1,
        temperal_downsample=[False],
        latents_mean=[0.3, -0.2, 1.1, 0.05],
        latents_std=[1.7, 0.4, 2.5, 1.1],
    )


def _dcae() -> Any:
    from diffusers import AutoencoderDC

    torch.manual_seed(0)
    return AutoencoderDC(
        latent_channels=4,
        attention_head_dim=4,
        encoder_block_types=("ResBlock", "ResBlock"),
        decoder_block_types=("ResBlock", "ResBlock"),
        encoder_block_out_channels=(8, 16),
        decoder_block_out_channels=(8, 16),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1),
        encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()),
        scaling_factor=0.41,
    )


# --- float64 transcriptions of each pipeline's normalisation, written with explicit loops ---


def _flux2_raw(vae: Any, x: Tensor) -> Tensor:
    return vae.encode(x).latent_dist.mode()


def _flux2_normalise(vae: Any, raw: Tensor) -> Tensor:
    b, c, h, w = raw.shape
    patched = torch.empty(b, 4 * c, h // 2, w // 2, dtype=D64)
    for ch in range(c):
        for i in range(2):
            for j in range(2):
                patched[:, 4 * ch + 2 * i + j] = raw[:, ch, i::2, j::2]
    eps = vae.config.batch_norm_eps
    out = torch.empty_like(patched)
    for ch in range(4 * c):
        mean = float(vae.bn.running_mean[ch])
        std = math.sqrt(float(vae.bn.running_var[ch]) + eps)
        out[:, ch] = (patched[:, ch] - mean) / std
    return out


def _flux2_decode(vae: Any, z: Tensor) -> Tensor:
    b, c4, h, w = z.shape
    eps = vae.config.batch_norm_eps
    raw = torch.empty(b, c4 // 4, 2 * h, 2 * w, dtype=D64)
    for ch in range(c4):
        mean = float(vae.bn.running_mean[ch])
        std = math.sqrt(float(vae.bn.running_var[ch]) + eps)
        c, r = divmod(ch, 4)
        i, j = divmod(r, 2)
        raw[:, c, i::2, j::2] = z[:, ch] * std + mean
    return vae.decode(raw).sample.clamp(-1, 1)


def _qwen_raw(vae: Any, x: Tensor) -> Tensor:
    return vae.encode(x[:, :, None]).latent_dist.mode()[:, :, 0]


def _qwen_normalise(vae: Any, raw: Tensor) -> Tensor:
    out = torch.empty_like(raw)
    for ch, (m, s) in enumerate(zip(vae.config.latents_mean, vae.config.latents_std, strict=True)):
        out[:, ch] = (raw[:, ch] - m) / s
    return out


def _qwen_decode(vae: Any, z: Tensor) -> Tensor:
    raw = torch.empty_like(z)
    for ch, (m, s) in enumerate(zip(vae.config.latents_mean, vae.config.latents_std, strict=True)):
        raw[:, ch] = z[:, ch] * s + m
    return vae.decode(raw[:, :, None]).sample[:, :, 0]


def _dc_raw(vae: Any, x: Tensor) -> Tensor:
    return vae.encode(x).latent


def _dc_normalise(vae: Any, raw: Tensor) -> Tensor:
    return raw * 0.41


def _dc_decode(vae: Any, z: Tensor) -> Tensor:
    return vae.decode(z / 0.41).sample.clamp(-1, 1)


@dataclass(frozen=True)
class Case:
    codec: type
    build: Callable[[], Any]
    raw: Callable[[Any, Tensor], Tensor]
    normalise: Callable[[Any, Tensor], Tensor]
    decode: Callable[[Any, Tensor], Tensor]
    channels: int
    downsample: int
    hint: str


CASES = {
    "flux2": Case(
        Flux2Codec, _flux2, _flux2_raw, _flux2_normalise, _flux2_decode, 16, 4, "FLUX.2-dev"
    ),
    "qwen_image": Case(
        QwenImageCodec,
        _qwen_image,
        _qwen_raw,
        _qwen_normalise,
        _qwen_decode,
        4,
        2,
        "Qwen/Qwen-Image",
    ),
    "dcae": Case(DCAECodec, _dcae, _dc_raw, _dc_normalise, _dc_decode, 4, 2, "dc-ae-f32c32"),
}
cases = pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))


def _images(dtype: torch.dtype = D64) -> Tensor:
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=dtype) * 2 - 1


@cases
def test_encode_matches_pipeline_normalisation(case: Case) -> None:
    vae = case.build().to(D64)
    codec = case.codec(vae)
    x = _images()
    latents = codec.encode(x)
    assert (codec.channels, codec.downsample) == (case.channels, case.downsample)
    assert latents.shape == (2, case.channels, 16 // case.downsample, 16 // case.downsample)
    assert latents.dtype == D64
    with torch.no_grad():
        expected = case.normalise(vae, case.raw(vae, x))
    torch.testing.assert_close(latents, expected, rtol=1e-12, atol=1e-12)
    assert isinstance(codec, LatentCodec)


@cases
def test_decode_matches_reference_and_stays_in_range(case: Case) -> None:
    vae = case.build().to(D64)
    codec = case.codec(vae)
    z = torch.randn(2, case.channels, 4, 4, dtype=D64)
    images = codec.decode(z)
    assert images.shape == (2, 3, 4 * case.downsample, 4 * case.downsample)
    assert images.min() >= -1 and images.max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(images, case.decode(vae, z), rtol=1e-12, atol=1e-12)
    round_trip = codec.decode(codec.encode(_images()))
    assert round_trip.shape == (2, 3, 16, 16)


@cases
def test_normalise_and_denormalise_are_inverses(case: Case) -> None:
    codec = case.codec(case.build().to(D64))
    raw = torch.randn(3, case.channels, 5, 6, dtype=D64) * 3 + 1
    torch.testing.assert_close(codec.denormalize(codec.normalize(raw)), raw, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(codec.normalize(codec.denormalize(raw)), raw, rtol=1e-13, atol=1e-13)
    # bf16 inputs are normalised in float32, not rounded through bf16 statistics.
    assert codec.normalize(raw.to(torch.bfloat16)).dtype == torch.float32


@pytest.mark.parametrize("case", [CASES["flux2"], CASES["qwen_image"]], ids=["flux2", "qwen_image"])
def test_posterior_sampling_uses_generator(case: Case) -> None:
    codec = case.codec(case.build().to(D64))
    x = _images()
    a = codec.encode(x, generator=torch.Generator().manual_seed(7))
    b = codec.encode(x, generator=torch.Generator().manual_seed(7))
    c = codec.encode(x, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, codec.encode(x))


def test_dcae_is_deterministic() -> None:
    codec = DCAECodec(_dcae())
    with pytest.raises(ValueError, match="deterministic"):
        codec.encode(_images(torch.float32), generator=torch.Generator())


@cases
def test_save_load_round_trip(case: Case, tmp_path: Path) -> None:
    vae = case.build()
    vae.save_pretrained(tmp_path / "ckpt" / "vae")
    codec = case.codec(vae)
    loaded = case.codec.from_pretrained(tmp_path / "ckpt", subfolder="vae", dtype=torch.float32)
    x = _images(torch.float32)
    torch.testing.assert_close(loaded.encode(x), codec.encode(x), rtol=0, atol=0)
    z = torch.randn(1, case.channels, 4, 4)
    torch.testing.assert_close(loaded.decode(z), codec.decode(z), rtol=0, atol=0)
    half = case.codec.from_pretrained(tmp_path / "ckpt" / "vae", dtype=torch.bfloat16)
    assert half.vae.dtype == torch.bfloat16
    assert half.encode(x).dtype == torch.float32


@cases
def test_missing_directory_or_weights(case: Case, tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(CodecWeightsNotFoundError, match=case.hint) as info:
        case.codec.from_pretrained(missing)
    assert str(missing) in str(info.value) and isinstance(info.value, FileNotFoundError)
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "config.json").write_text(json.dumps({"_class_name": "X"}))
    with pytest.raises(CodecWeightsNotFoundError, match="no diffusion_pytorch_model") as info:
        case.codec.from_pretrained(config_only)
    assert str(config_only) in str(info.value)


def test_wrong_checkpoint_and_wrong_model(tmp_path: Path) -> None:
    _dcae().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="describes a AutoencoderDC, not a AutoencoderKLFlux2"):
        Flux2Codec.from_pretrained(tmp_path)
    with pytest.raises(
        TypeError, match=r"expected a diffusers\.AutoencoderKLQwenImage, got AutoencoderDC"
    ):
        QwenImageCodec(_dcae())


def test_image_size_must_match_downsample() -> None:
    codec = Flux2Codec(_flux2())
    with pytest.raises(ValueError, match="not divisible by the codec's downsample factor 4"):
        codec.encode(torch.zeros(1, 3, 16, 18))


def test_missing_diffusers_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)
    for codec in (Flux2Codec, QwenImageCodec, DCAECodec):
        with pytest.raises(ImportError, match=r'pip install "k2-dit\[vae\]"'):
            codec.from_pretrained(tmp_path)
