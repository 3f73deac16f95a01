"""PixelCodec: the pixel-unshuffle layout, exact inversion, and errors."""

from __future__ import annotations

import pytest
import torch

from k2_dit.latents import LatentCodec, PixelCodec


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_layout_matches_formula(patch: int) -> None:
    codec = PixelCodec(patch=patch)
    images = torch.rand(2, 3, 8, 12, dtype=torch.float64) * 2 - 1
    latents = codec.encode(images)
    assert latents.shape == (2, 3 * patch**2, 8 // patch, 12 // patch)
    assert (codec.channels, codec.downsample) == (3 * patch**2, patch)
    expected = torch.empty_like(latents)
    for c in range(3):
        for i in range(patch):
            for j in range(patch):
                for y in range(8 // patch):
                    for x in range(12 // patch):
                        expected[:, c * patch * patch + i * patch + j, y, x] = images[
                            :, c, y * patch + i, x * patch + j
                        ]
    assert torch.equal(latents, expected)
    assert torch.equal(codec.decode(latents), images)
    assert isinstance(codec, LatentCodec)


def test_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="patch=0"):
        PixelCodec(patch=0)
    codec = PixelCodec(patch=4)
    with pytest.raises(ValueError, match="not divisible by patch=4"):
        codec.encode(torch.zeros(1, 3, 6, 8))
    with pytest.raises(ValueError, match=r"have 3 channels but PixelCodec\(patch=4\) makes 48"):
        codec.decode(torch.zeros(1, 3, 2, 2))
