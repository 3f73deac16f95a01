"""Training loop for the TopK SAE: Adam, unit-norm decoder, dead-latent bookkeeping."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from k2_data.sae._model import SAEConfig, TopKSAE, geometric_median

StepCallback = Callable[[int, TopKSAE, dict[str, Tensor]], None]


def train_sae(
    x: Float[Tensor, "n d"],
    config: SAEConfig,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 4e-4,
    seed: int = 0,
    callback: StepCallback | None = None,
    model: TopKSAE | None = None,
) -> TopKSAE:
    """Train a `TopKSAE` on embeddings with the recipe of Gao et al. 2024.

    b_pre starts at the geometric median of (a sample of) the data and the encoder at the
    decoder's transpose. Each step draws a random batch, minimises the batch mean of
    `topk_sae_loss` (MSE + alpha AuxK on the current dead latents) with Adam, removes the
    decoder-gradient component parallel to each column, renormalises the columns, and
    advances every latent's steps-since-last-activation counter.

    Args:
        x: (n, d) embeddings, on the device and in the dtype to train in.
        config: SAE shape, k, AuxK and dead-latent settings.
        steps: optimiser steps.
        batch_size: samples per step (drawn with replacement across steps).
        lr: Adam learning rate.
        seed: initialisation and batch order.
        callback: ``callback(step, model, losses)`` after every step, e.g. for logging;
            ``losses`` holds the batch-mean ``total``, ``mse`` and ``aux`` tensors.
        model: continue training this model (its config must be ``config``) instead of
            initialising a new one; its b_pre and activity counters are kept.

    Returns:
        The trained model (in train mode).

    References:
        Gao et al. 2024, "Scaling and evaluating sparse autoencoders", Sec. 2 and App. A.
    """
    if x.ndim != 2 or x.shape[1] != config.d_in:
        raise ValueError(f"x must be (n, d_in={config.d_in}), got {tuple(x.shape)}")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    generator = torch.Generator(device=x.device).manual_seed(seed)
    if model is None:
        model = TopKSAE(config, generator=torch.Generator().manual_seed(seed))
        model = model.to(device=x.device, dtype=x.dtype)
        sample = x[torch.randperm(len(x), generator=generator, device=x.device)[:4096]]
        with torch.no_grad():
            model.b_pre.copy_(geometric_median(sample))
    elif model.config != config:
        raise ValueError(f"model was built for {model.config}, not {config}")
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=6.25e-10)
    for step in range(steps):
        batch = x[torch.randint(len(x), (batch_size,), generator=generator, device=x.device)]
        total, mse, aux, z = model(batch)
        opt.zero_grad(set_to_none=True)
        total.mean().backward()
        model.remove_parallel_grad_()
        opt.step()
        model.normalize_decoder_()
        model.record_activity(z)
        if callback is not None:
            callback(step, model, {"total": total.mean(), "mse": mse.mean(), "aux": aux.mean()})
    return model
