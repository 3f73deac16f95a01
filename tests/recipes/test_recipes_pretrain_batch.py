"""The pretraining batch: caption-variant mix, CFG drops, and text padding (trimmed or fixed)."""

from __future__ import annotations

from dataclasses import replace

import torch

from k2_recipes.presets import PRETRAIN_PRESETS
from k2_recipes.pretrain import _batch
from k2_recipes.world import TrainingSet


def _data(n: int = 40, length: int = 12) -> TrainingSet:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, length + 1, (n, 3), generator=gen)
    lengths[:, 0] = length  # long captions fill the padding
    lengths[:, 1] = lengths[:, 1].clamp(max=length - 4)  # medium ones never reach it
    mask = torch.arange(length)[None, None, :] < lengths[..., None]
    hidden = torch.randn(n, 3, length, 2, 4, generator=gen).to(torch.bfloat16)
    images = {8: torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)}
    prompts = [("long", "medium", "short")] * n
    return TrainingSet(images=images, hidden=hidden, mask=mask, prompts=prompts)


def test_medium_only_mix_never_draws_another_variant_and_trims_to_the_batch():
    data = _data()
    cfg = replace(
        PRETRAIN_PRESETS["smoke"],
        cfg_dropout=0.0,
        world=replace(PRETRAIN_PRESETS["smoke"].world, caption_mix=(0.0, 1.0, 0.0)),
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x0, hidden, mask = _batch(data, 8, 6, cfg, gen)
        assert x0.shape == (6, 3, 8, 8) and x0.min() >= -1.0 and x0.max() <= 1.0
        # Trimmed to the longest real prompt in the batch: the last column has a real token.
        assert mask[:, -1].any() and hidden.shape[1] == mask.shape[1]
        # Only medium captions (at most length - 4 tokens), never a long one (12 tokens).
        assert int(mask.sum(-1).max()) <= 8 and mask.shape[1] <= 8


def test_compile_mode_pads_each_variant_to_one_fixed_length():
    data = _data()
    base = PRETRAIN_PRESETS["smoke"]
    cfg = replace(base, compile=True, world=replace(base.world, caption_mix=(0.0, 1.0, 0.0)))
    want = int(data.mask[:, 1].any(0).nonzero().max()) + 1
    gen = torch.Generator().manual_seed(2)
    shapes = {_batch(data, 8, 4, cfg, gen)[1].shape[1] for _ in range(8)}
    assert shapes == {want}  # one shape: the compiled model is built once per resolution
