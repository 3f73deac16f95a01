"""Scoring several rewards concurrently in a thread pool, so scoring overlaps with training."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from k2_rl.rewards._rubric import ImageBatch

RewardFn = Callable[[ImageBatch, Sequence[str]], Tensor]
"""(images, prompts) -> one reward per image, shape [n]."""


def _checked(name: str, value: Any, n: int) -> Tensor:
    if not isinstance(value, Tensor) or value.shape != (n,):
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"reward {name!r} must return a tensor of shape ({n},), got {got}")
    return value


class AsyncRewardScorer:
    """Runs named batched rewards in worker threads and stacks them into a [n, k] tensor.

    Reward models (VLM judges, OCR, detectors) release the GIL inside torch / native code,
    so threads overlap them with each other and with the training step that runs while the
    future is pending. Column k of the result is `names[k]`.

    Args:
        rewards: name -> reward function (images, prompts) -> [n].
        max_workers: worker threads (default: one per reward).
    """

    def __init__(self, rewards: Mapping[str, RewardFn], *, max_workers: int | None = None) -> None:
        if not rewards:
            raise ValueError("AsyncRewardScorer needs at least one reward")
        self.rewards = dict(rewards)
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers or len(self.rewards), thread_name_prefix="k2-reward"
        )

    @property
    def names(self) -> tuple[str, ...]:
        """Reward names in column order."""
        return tuple(self.rewards)

    def score(self, images: ImageBatch, prompts: Sequence[str]) -> Float[Tensor, "n k"]:
        """Score synchronously in the calling thread (the reference for `submit`)."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        n = len(images)
        cols = [_checked(k, fn(images, prompts), n) for k, fn in self.rewards.items()]
        return _stack(cols)

    def submit(self, images: ImageBatch, prompts: Sequence[str]) -> Future[Tensor]:
        """Start scoring in the pool; the future resolves to the [n, k] rewards.

        The first reward to raise fails the future with its exception.
        """
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        n = len(images)
        result: Future[Tensor] = Future()
        parts: dict[str, Tensor] = {}
        lock = threading.Lock()

        def done(name: str, fut: Future[Tensor]) -> None:
            try:
                value = _checked(name, fut.result(), n)
            except BaseException as err:  # handed on to the caller's future
                with lock:
                    if not result.done():
                        result.set_exception(err)
                return
            with lock:
                parts[name] = value
                if len(parts) == len(self.rewards) and not result.done():
                    result.set_result(_stack([parts[k] for k in self.rewards]))

        for name, fn in self.rewards.items():
            fut = self._pool.submit(fn, images, prompts)
            fut.add_done_callback(lambda f, name=name: done(name, f))
        return result

    def close(self) -> None:
        """Wait for running work and stop the threads."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> AsyncRewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stack(cols: list[Tensor]) -> Tensor:
    dtype = torch.promote_types(cols[0].dtype, torch.float32)
    for c in cols[1:]:
        dtype = torch.promote_types(dtype, c.dtype)
    device = cols[0].device
    return torch.stack([c.to(device=device, dtype=dtype) for c in cols], dim=1)
