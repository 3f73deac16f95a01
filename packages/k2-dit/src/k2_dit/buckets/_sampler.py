"""Deterministic bucketed batch sampler, sharded over data-parallel ranks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

_SEED_STRIDE = 1_000_003  # a prime: (seed, epoch) pairs map to distinct generator seeds


class BucketBatchSampler:
    """Global batches drawn from one bucket each; every rank reads its slice of the batch.

    Epoch e: a generator seeded from (seed, e) shuffles the samples of each bucket, cuts each
    bucket into global batches of `global_batch_size` (a remainder smaller than a batch is
    left out this epoch and reshuffled into the next), then shuffles the order of all global
    batches. The global batch sequence depends only on (bucket_of, global_batch_size, seed,
    epoch), never on the number of ranks, so a run on 1 or N processes sees the same data, and
    rank r of N gets items [r·B, (r + 1)·B) of each global batch, B = global_batch_size / N.
    Usable as a `DataLoader(batch_sampler=...)`; call `set_epoch` before each epoch.

    Args:
        bucket_of: bucket index of every sample (e.g. `BucketTable.assign`).
        global_batch_size: samples per optimizer step over all ranks.
        rank: this process's data-parallel rank.
        world_size: number of data-parallel ranks (must divide `global_batch_size`).
        seed: shuffling seed.

    References:
        NovelAI 2022, "Aspect ratio bucketing"; `torch.utils.data.DistributedSampler` (epoch
        seeding, rank slicing).
    """

    def __init__(
        self,
        bucket_of: Int[Tensor, " n"] | Sequence[int],
        *,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        buckets = torch.as_tensor(bucket_of, dtype=torch.int64)
        if buckets.ndim != 1:
            raise ValueError(
                f"bucket_of must be 1-D (one bucket per sample), got {tuple(buckets.shape)}"
            )
        if buckets.numel() and int(buckets.min()) < 0:
            raise ValueError("bucket_of holds a negative bucket index")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must lie in [0, world_size={world_size})")
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ValueError(
                f"global_batch_size={global_batch_size} must be a positive multiple of "
                f"world_size={world_size}: each rank takes an equal slice of every batch"
            )
        self.global_batch_size = global_batch_size
        self.batch_size = global_batch_size // world_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        self._cache: tuple[int, list[tuple[int, list[int]]]] | None = None
        self._members = [
            torch.nonzero(buckets == b).flatten()
            for b in range(int(buckets.max()) + 1 if buckets.numel() else 0)
        ]
        if len(self) == 0:
            sizes = {b: len(m) for b, m in enumerate(self._members) if len(m)}
            raise ValueError(
                f"no bucket holds a full global batch of {global_batch_size} (bucket sizes "
                f"{sizes}): lower global_batch_size or add data"
            )

    def __len__(self) -> int:
        """Global batches per epoch."""
        return sum(len(m) // self.global_batch_size for m in self._members)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle `__iter__` yields."""
        self.epoch = epoch

    def global_batches(self, epoch: int) -> list[tuple[int, list[int]]]:
        """Every global batch of `epoch` in order, as (bucket, sample indices)."""
        gen = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
        batches: list[tuple[int, list[int]]] = []
        for bucket, members in enumerate(self._members):
            shuffled = members[torch.randperm(len(members), generator=gen)]
            full = len(members) // self.global_batch_size
            for i in range(full):
                chunk = shuffled[i * self.global_batch_size : (i + 1) * self.global_batch_size]
                batches.append((bucket, chunk.tolist()))
        order = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in order]

    def batch_at(self, step: int) -> tuple[int, list[int]]:
        """(bucket, this rank's sample indices) of global step `step`, counting across epochs.

        Lets a resumed run jump straight to its step without replaying earlier epochs.
        """
        if step < 0:
            raise ValueError(f"step={step} must be >= 0")
        epoch, offset = divmod(step, len(self))
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self.global_batches(epoch))
        bucket, indices = self._cache[1][offset]
        return bucket, self._shard(indices)

    def _shard(self, indices: list[int]) -> list[int]:
        lo = self.rank * self.batch_size
        return indices[lo : lo + self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        for _, indices in self.global_batches(self.epoch):
            yield self._shard(indices)
