"""FSDP2 wrapping (per block, then root), activation checkpointing, compile."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from k2_dit.model import DiT


def adamw_only_linears(model: DiT) -> tuple[str, ...]:
    """Linear layers kept off Muon: first and last layer plus the text/timestep input projections.

    Delegates to `DiT.adamw_linear_names`, the model's own declaration (also the default
    `exclude` of `k2_dit.train.muon_param_groups`). Call it on the plain model, before
    `shard_model` wraps it, and pass the result to `build_optimizers(exclude=...)`.

    Args:
        model: the DiT (before wrapping).

    Returns:
        Qualified module names present in this model.

    References:
        Krea 2 report, Optimization; Liu et al. 2025 (Moonlight), §2.
    """
    return model.adamw_linear_names()


def shard_model(
    model: DiT,
    *,
    distributed: bool,
    param_dtype: torch.dtype | None = None,
    activation_checkpointing: bool = False,
    compile: bool = False,
    reshard_after_forward: bool = True,
) -> DiT:
    """Wrap the DiT for training in place: AC and compile per block, FSDP2 per block then root.

    Order as in torchtitan: activation checkpointing, then `torch.compile` of each block
    (compiling blocks, not the whole model, keeps graphs small and identical across blocks),
    then `fully_shard` on each block, the text adapter and finally the root so the remaining
    parameters (patch embed, conditioning, final layer) form one unit. Mixed precision casts
    parameters to `param_dtype` for compute and reduces gradients in float32. Inputs are not
    cast by FSDP (`cast_forward_inputs=False`): timesteps and RoPE tables must stay float32,
    so the trainer casts latents and text features itself.

    Args:
        model: the DiT, on its training device.
        distributed: apply `fully_shard` (needs an initialised process group).
        param_dtype: compute dtype (torch.bfloat16), or None for full precision.
        activation_checkpointing: recompute each block in the backward pass.
        compile: compile each block with `torch.compile`.
        reshard_after_forward: free gathered block weights after forward (ZeRO-3 style).

    Returns:
        The same model object.

    References:
        Zhao et al. 2023 (PyTorch FSDP); torchtitan `parallelize` (apply_ac, apply_compile,
        apply_fsdp); Krea 2 report, Pretraining.
    """
    policy = MixedPrecisionPolicy(
        param_dtype=param_dtype,
        reduce_dtype=torch.float32 if param_dtype is not None else None,
        cast_forward_inputs=False,
    )
    for i, block in enumerate(model.blocks):
        wrapped: nn.Module = checkpoint_wrapper(block) if activation_checkpointing else block
        if compile:
            wrapped.compile()
        if distributed:
            fully_shard(wrapped, mp_policy=policy, reshard_after_forward=reshard_after_forward)
        model.blocks[i] = wrapped
    if distributed:
        fully_shard(
            model.text_adapter, mp_policy=policy, reshard_after_forward=reshard_after_forward
        )
        fully_shard(model, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return model
