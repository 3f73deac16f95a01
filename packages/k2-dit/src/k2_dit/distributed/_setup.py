"""Process-group setup under torchrun and per-(seed, step, rank) random streams."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True, kw_only=True)
class DistInfo:
    """Where this process sits in the data-parallel group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool
    """Whether `init_distributed` created the process group (and `shutdown` should end it)."""

    @property
    def distributed(self) -> bool:
        """True when a process group is in use (FSDP2 sharding applies)."""
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(*, device: str | None = None, backend: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment, or run single-process.

    With `WORLD_SIZE` set (torchrun, or any launcher exporting RANK/WORLD_SIZE/MASTER_ADDR/
    MASTER_PORT) the default group is initialised with `nccl` on CUDA and `gloo` on CPU,
    unless one already exists. Without it the process runs alone and no group is created.

    Args:
        device: "cuda" or "cpu"; None picks CUDA when available.
        backend: process-group backend; None picks nccl for CUDA, gloo for CPU.

    Returns:
        The rank, world size, local rank and the device this process trains on.
    """
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind not in ("cuda", "cpu"):
        raise ValueError(f"device={device!r} must be 'cuda' or 'cpu'")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(kind, local_rank) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(dev)
    created = False
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    elif "WORLD_SIZE" in os.environ:
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE is set but {missing} are not: launch with torchrun, or export "
                "RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"
            )
        dist.init_process_group(
            backend=backend or ("nccl" if kind == "cuda" else "gloo"),
            device_id=dev if kind == "cuda" else None,
        )
        rank, world, created = dist.get_rank(), dist.get_world_size(), True
    else:
        rank, world = 0, 1
    return DistInfo(
        rank=rank, world_size=world, local_rank=local_rank, device=dev, initialized_here=created
    )


def shutdown(info: DistInfo) -> None:
    """Destroy the process group if `init_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys, e.g. (seed, step, rank): distinct keys, unrelated streams.

    Hashing (BLAKE2b) rather than `seed + step` keeps streams of neighbouring steps and ranks
    from overlapping, and depends on nothing but the keys (no global RNG state), which is what
    makes a resumed run draw exactly what the uninterrupted run drew.

    Args:
        keys: non-negative integers.

    Returns:
        An int in [0, 2**63).
    """
    if not keys or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in keys):
        raise ValueError(f"derive_seed needs one or more non-negative ints, got {keys!r}")
    data = b"".join(k.to_bytes(16, "little") for k in keys)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def step_generator(*keys: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded with `derive_seed(*keys)` (draw on CPU, then move)."""
    return torch.Generator().manual_seed(derive_seed(*keys))
