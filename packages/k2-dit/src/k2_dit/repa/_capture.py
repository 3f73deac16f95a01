"""Read the image tokens of one DiT block during the ordinary forward, through hooks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn


class BlockCapture:
    """What `capture_block_output` recorded in the latest forward: image tokens and their grid."""

    def __init__(self, block_index: int) -> None:
        self.block_index = block_index
        self._tokens: Tensor | None = None
        self._grid: tuple[int, int] | None = None

    @property
    def tokens(self) -> Tensor:
        """Image tokens [b, gh·gw, dim] output by the block (still attached to the graph)."""
        if self._tokens is None:
            raise RuntimeError(
                f"block {self.block_index} has not run yet: call the model inside "
                "`with capture_block_output(...)` before reading `tokens`"
            )
        return self._tokens

    @property
    def grid(self) -> tuple[int, int]:
        """The (gh, gw) image-token grid of the latest forward."""
        if self._grid is None:
            raise RuntimeError(f"block {self.block_index} has not run yet: no grid recorded")
        return self._grid


@contextmanager
def capture_block_output(model: nn.Module, block_index: int) -> Iterator[BlockCapture]:
    """Record the image tokens that `model.blocks[block_index]` outputs, without editing the model.

    Two hooks: a forward pre-hook on the model reads the latent's (h, w) and derives the
    token grid (h/p, w/p) with p = `model.config.patch_size`; a forward hook on the block takes
    its image tokens, i.e. the second output of a dual-stream block `(ctx, img)`, or the last
    gh·gw tokens of a single-stream block's joint sequence (the DiT lays the sequence out as
    [timestep tokens, text tokens, image tokens]). The tensor is kept attached to the autograd
    graph, so an alignment loss on it trains blocks 0..block_index. A later forward inside the
    context overwrites the record; the hooks are removed on exit and the record stays readable.
    Under activation checkpointing the hook also fires during recomputation, which rewrites the
    record with an equal tensor after the loss has used it: harmless.

    Args:
        model: a `k2_dit.model.DiT` (anything with `config.patch_size`, a `blocks` list and a
            forward whose first argument is the latent [b, c, h, w]).
        block_index: which block's output to record (negative counts from the end). REPA's
            `encoder_depth = 8` (after 8 blocks) is `block_index = 7`.

    Yields:
        A `BlockCapture`; read `.tokens` and `.grid` after the forward.

    References:
        Yu et al. 2025 (REPA, arXiv 2410.06940), §3.2 (align an early hidden state h_t^[k]).
    """
    blocks = getattr(model, "blocks", None)
    patch = getattr(getattr(model, "config", None), "patch_size", None)
    if not isinstance(blocks, nn.ModuleList) or patch is None:
        raise TypeError(
            f"{type(model).__name__} has no `blocks` ModuleList and `config.patch_size`: pass a "
            "k2_dit.model.DiT (unwrap torch.compile/FSDP wrappers that hide them)"
        )
    depth = len(blocks)
    if not -depth <= block_index < depth:
        raise IndexError(f"block_index={block_index} is out of range for a DiT of depth {depth}")
    capture = BlockCapture(block_index % depth)

    def read_grid(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = args[0] if args else kwargs.get("x")
        if not isinstance(x, Tensor) or x.ndim != 4:
            raise TypeError("the DiT forward must receive the latent x [b, c, h, w] first")
        capture._grid = (x.shape[-2] // patch, x.shape[-1] // patch)

    def read_tokens(_module: nn.Module, _args: Any, output: Any) -> None:
        if capture._grid is None:
            raise RuntimeError("the block ran outside the model's forward: no token grid known")
        n_img = capture._grid[0] * capture._grid[1]
        img = output[1] if isinstance(output, tuple) else output[:, -n_img:]
        if img.shape[1] != n_img:
            raise RuntimeError(
                f"block {capture.block_index} gave {img.shape[1]} image tokens for a "
                f"{capture._grid} grid: the model's sequence layout is not the k2 DiT's"
            )
        capture._tokens = img

    handles = [
        model.register_forward_pre_hook(read_grid, with_kwargs=True),
        blocks[capture.block_index].register_forward_hook(read_tokens),
    ]
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()
