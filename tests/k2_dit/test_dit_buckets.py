"""Aspect buckets, the bucketed sampler, per-bucket RoPE grids and per-stage training shifts."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from k2_dit.buckets import (
    DEFAULT_STAGES,
    INFERENCE_SHIFT,
    BucketBatchSampler,
    BucketTable,
    ResolutionStage,
    aspect_buckets,
    bucket_positions,
    stage_at,
    training_shift_schedule,
)
from k2_dit.config import AttentionConfig, ConfigError, DiTConfig, RopeConfig, TextConfig
from k2_dit.model import DiT, patchify

# ---------------------------------------------------------------- reference transcriptions


def ref_buckets(resolution: int, step: int, max_aspect: float) -> set[tuple[int, int]]:
    """Brute force: (h, w) on the step grid with h·w <= R², the larger side as large as the
    area allows for the smaller one, and aspect at most max_aspect."""
    area = resolution * resolution
    sides = range(step, 8 * resolution + 1, step)
    out = set()
    for short in sides:
        if short > resolution:
            break
        fits = [long for long in sides if long >= short and short * long <= area]
        if not fits:
            continue
        long = max(fits)
        if long / short <= max_aspect:
            out |= {(short, long), (long, short)}
    return out


def ref_assign(buckets, h: int, w: int) -> int:
    best, best_d = 0, math.inf
    for k, (bh, bw) in enumerate(buckets):
        d = abs(math.log(w / h) - math.log(bw / bh))
        if d < best_d:  # strict: the first of equal distances wins
            best, best_d = k, d
    return best


# ---------------------------------------------------------------- bucket table


@pytest.mark.parametrize(
    ("resolution", "multiple", "step", "max_aspect"),
    [(256, 16, None, 4.0), (512, 16, 64, 4.0), (1024, 16, 64, 2.0), (96, 8, None, 3.0)],
)
def test_bucket_table_matches_brute_force(resolution, multiple, step, max_aspect) -> None:
    got = aspect_buckets(resolution=resolution, multiple=multiple, step=step, max_aspect=max_aspect)
    assert set(got) == ref_buckets(resolution, step or multiple, max_aspect)
    assert len(got) == len(set(got))
    ratios = [w / h for h, w in got]
    assert ratios == sorted(ratios)
    assert (resolution, resolution) in got
    for h, w in got:
        assert h % multiple == 0 and w % multiple == 0
        assert h * w <= resolution**2
        # Tight: one more step on the long side would exceed the area.
        assert (max(h, w) + (step or multiple)) * min(h, w) > resolution**2
        assert max(h, w) / min(h, w) <= max_aspect
        assert (w, h) in got


def test_default_stage_tables_span_one_to_four() -> None:
    for stage in DEFAULT_STAGES:
        table = stage.table()
        ratios = [w / h for h, w in table.buckets]
        assert min(ratios) == pytest.approx(0.25) and max(ratios) == pytest.approx(4.0)
        tokens = [table.num_tokens(i) for i in range(len(table))]
        assert max(tokens) == stage.square_tokens == (stage.resolution // 16) ** 2
        # Flooring the long side loses less than one token column (compute balance).
        for k, n in enumerate(tokens):
            assert n > stage.square_tokens - min(table.token_grid(k))


def test_assign_picks_nearest_log_aspect_with_first_index_on_ties() -> None:
    table = BucketTable.build(resolution=256, multiple=16)
    g = torch.Generator().manual_seed(0)
    h = torch.randint(50, 5000, (300,), generator=g)
    w = torch.randint(50, 5000, (300,), generator=g)
    got = table.assign(h, w).tolist()
    assert got == [ref_assign(table.buckets, int(a), int(b)) for a, b in zip(h, w, strict=True)]
    # Exact bucket shapes (at any scale) land in their own bucket.
    hs = torch.tensor([3 * bh for bh, _ in table.buckets])
    ws = torch.tensor([3 * bw for _, bw in table.buckets])
    assert table.assign(hs, ws).tolist() == list(range(len(table)))
    # Half-way (in log space) between two buckets goes to the lower index.
    two = BucketTable(buckets=((32, 16), (16, 32)), multiple=16)
    assert two.assign(torch.tensor([100]), torch.tensor([100])).tolist() == [0]


def test_table_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="not a multiple of 16"):
        BucketTable(buckets=((24, 32),), multiple=16)
    with pytest.raises(ValueError, match="repeated"):
        BucketTable(buckets=((16, 32), (16, 32)), multiple=16)
    with pytest.raises(ValueError, match="multiple of multiple=16"):
        aspect_buckets(resolution=256, multiple=16, step=24)
    with pytest.raises(ValueError, match="no bucket fits"):
        BucketTable.build(resolution=8, multiple=16)
    with pytest.raises(ValueError, match="positive"):
        BucketTable.build(resolution=256, multiple=16).assign(torch.tensor([0]), torch.tensor([5]))


def test_fit_covers_the_bucket_and_keeps_aspect() -> None:
    table = BucketTable.build(resolution=256, multiple=16)
    for h, w in [(1000, 700), (300, 1200), (256, 256), (40, 90)]:
        k = ref_assign(table.buckets, h, w)
        rh, rw, top, left = table.fit(h, w, k)
        bh, bw = table.buckets[k]
        assert rh >= bh and rw >= bw and (rh == bh or rw == bw)
        assert 0 <= top <= rh - bh and 0 <= left <= rw - bw
        assert abs(rw / rh - w / h) <= 1.0 / min(rh, rw) * (1 + w / h)


# ---------------------------------------------------------------- sampler


def _buckets(n: int = 103, k: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


def test_sampler_batches_are_single_bucket_disjoint_and_complete() -> None:
    bucket_of = _buckets()
    s = BucketBatchSampler(bucket_of, global_batch_size=6, seed=3)
    batches = s.global_batches(0)
    assert len(batches) == len(s) == sum(int((bucket_of == b).sum()) // 6 for b in range(4))
    seen = [i for _, idx in batches for i in idx]
    assert len(seen) == len(set(seen))
    for b, idx in batches:
        assert len(idx) == 6 and all(int(bucket_of[i]) == b for i in idx)
    for b in range(4):  # what is left out of a bucket is less than one batch
        left = int((bucket_of == b).sum()) - sum(len(i) for bb, i in batches if bb == b)
        assert 0 <= left < 6
    assert s.global_batches(0) == batches  # deterministic
    assert s.global_batches(1) != batches  # reshuffled per epoch
    assert BucketBatchSampler(bucket_of, global_batch_size=6, seed=4).global_batches(0) != batches


def test_sampler_shards_the_same_global_batches_over_ranks() -> None:
    bucket_of = _buckets(n=200)
    one = BucketBatchSampler(bucket_of, global_batch_size=8, seed=1)
    ranks = [
        BucketBatchSampler(bucket_of, global_batch_size=8, rank=r, world_size=4, seed=1)
        for r in range(4)
    ]
    for epoch in (0, 2):
        for s in [one, *ranks]:
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        for step, full in enumerate(one):
            assert [i for r in range(4) for i in per_rank[r][step]] == full
    # batch_at walks across epochs in the same order as iterating epoch by epoch.
    flat = [(b, idx[2:4]) for e in range(3) for b, idx in one.global_batches(e)]
    assert [ranks[1].batch_at(t) for t in range(len(flat))] == flat
    loader = DataLoader(list(range(200)), batch_sampler=ranks[0])
    assert [x.tolist() for x in loader] == per_rank[0]


def test_sampler_validation() -> None:
    with pytest.raises(ValueError, match="multiple of world_size=3"):
        BucketBatchSampler(_buckets(), global_batch_size=8, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank=2 must lie"):
        BucketBatchSampler(_buckets(), global_batch_size=8, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no bucket holds a full global batch"):
        BucketBatchSampler(_buckets(n=10), global_batch_size=64)


# ---------------------------------------------------------------- stages and shifts


def test_default_stages_and_training_shift_table() -> None:
    assert [s.resolution for s in DEFAULT_STAGES] == [256, 512, 1024]
    base = DEFAULT_STAGES[0].square_tokens
    for s in DEFAULT_STAGES:
        # SD3 §5.3.2: s = sqrt(m / n) against the unshifted 256 px stage.
        assert s.train_shift == pytest.approx(math.sqrt(s.square_tokens / base))
    schedule = training_shift_schedule(DEFAULT_STAGES)
    for s in DEFAULT_STAGES:
        assert schedule.shift_for(s.square_tokens) == pytest.approx(s.train_shift)
        table = s.table()
        for k in range(len(table)):  # every bucket trains at (about) its stage's shift
            assert schedule.shift_for(table.num_tokens(k)) == pytest.approx(s.train_shift, rel=0.02)
    # The inference schedule is one fixed rule (FLUX: mu linear in tokens, 0.5 -> 1.15).
    for tokens in (256, 1024, 4096):
        mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
        assert INFERENCE_SHIFT.shift_for(tokens) == pytest.approx(math.exp(mu))


def test_stage_at_and_stage_validation() -> None:
    stages = (
        ResolutionStage(resolution=64, train_shift=1.0, steps=3, latent_factor=8),
        ResolutionStage(resolution=128, train_shift=2.0, steps=2, latent_factor=8),
    )
    assert [stage_at(stages, t) for t in range(5)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    with pytest.raises(ValueError, match="past the last stage"):
        stage_at(stages, 5)
    with pytest.raises(ConfigError, match="multiple of latent_factor·patch_size=32"):
        ResolutionStage(resolution=80, train_shift=1.0, patch_size=2)
    with pytest.raises(ConfigError, match="train_shift"):
        ResolutionStage(resolution=256, train_shift=0.0)
    stage = ResolutionStage(resolution=64, train_shift=1.0, latent_factor=8, patch_size=2)
    table = stage.table()
    k = table.buckets.index((32, 128))
    assert stage.latent_size(table, k) == (4, 16) and table.token_grid(k) == (2, 8)


# ---------------------------------------------------------------- RoPE per bucket (H != W)


@pytest.mark.parametrize("kind", ["axial", "normalized"])
def test_bucket_positions_follow_patchify_order_on_non_square_grids(kind) -> None:
    cfg = RopeConfig(kind=kind, normalized_scale=4.0)
    table = BucketTable(buckets=((48, 80), (80, 48)), multiple=16)
    for k, (rows, cols) in enumerate([(3, 5), (5, 3)]):
        pos = bucket_positions(cfg, table, k, n_text=2).double()
        assert pos.shape == (2 + rows * cols, 3) and torch.equal(pos[:2], torch.zeros(2, 3))
        # A latent whose channels hold each cell's row and column, patchified with patch 2:
        # token n's first patch entry names the cell the token covers.
        p = 2
        yy, xx = torch.meshgrid(torch.arange(rows * p), torch.arange(cols * p), indexing="ij")
        latent = torch.stack([yy, xx]).double()[None]
        tokens = patchify(latent, p)[0]
        row, col = tokens[:, 0] / p, tokens[:, p * p] / p
        if kind == "axial":
            assert torch.equal(pos[2:, 1], row) and torch.equal(pos[2:, 2], col)
        else:
            longer = max(rows, cols)
            assert torch.allclose(pos[2:, 1], 4.0 * (2 * row + 1 - rows) / longer)
            assert torch.allclose(pos[2:, 2], 4.0 * (2 * col + 1 - cols) / longer)
        assert torch.equal(pos[2:, 0], torch.zeros(rows * cols))
    # Transposing the bucket swaps the height and width coordinates of the grid's cells.
    a = bucket_positions(cfg, table, 0, n_text=0).view(3, 5, 3)
    b = bucket_positions(cfg, table, 1, n_text=0).view(5, 3, 3)
    assert torch.equal(a[..., 1], b[..., 2].T) and torch.equal(a[..., 2], b[..., 1].T)


def test_dit_uses_the_bucket_positions_on_a_non_square_latent() -> None:
    text = TextConfig(encoder_dim=8, num_layers=2, aggregation_heads=2, refiner_layers=0)
    cfg = DiTConfig(
        in_channels=4,
        patch_size=2,
        dim=32,
        depth=1,
        attention=AttentionConfig(num_heads=4, num_kv_heads=2),
        text=text,
        timestep_freq_dim=16,
    )
    model = DiT(cfg)
    stage = ResolutionStage(resolution=64, train_shift=1.0, latent_factor=8, patch_size=2)
    table = stage.table()
    k = table.buckets.index((32, 128))
    seen = []
    model.rope.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    lh, lw = stage.latent_size(table, k)
    x = torch.randn(2, 4, lh, lw)
    out = model(x, torch.rand(2), torch.randn(2, 3, 2, 8), torch.ones(2, 3, dtype=torch.bool))
    assert out.shape == x.shape
    assert torch.equal(seen[0], bucket_positions(cfg.rope, table, k, n_text=3))
