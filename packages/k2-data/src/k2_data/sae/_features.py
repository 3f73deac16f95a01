"""SAE features as tags: top activating samples, a naming hook, predominant features, filters."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import pyarrow as pa
import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from k2_data.sae._model import TopKSAE

FeatureHook = Callable[[int, Sequence], "str | None"]
"""``hook(feature_id, top_samples) -> name`` (None: not interpretable); e.g. a VLM prompt."""


@torch.no_grad()
def encode_dataset(
    model: TopKSAE, x: Float[Tensor, "n d"], *, batch_size: int = 4096
) -> tuple[Float[Tensor, "n k"], Int64[Tensor, "n k"]]:
    """Sparse codes of every sample: the k activations (decreasing) and their latent ids."""
    values, indices = [], []
    for start in range(0, len(x), batch_size):
        v, i = model.encode(x[start : start + batch_size])
        values.append(v)
        indices.append(i)
    return torch.cat(values), torch.cat(indices)


def top_activating_samples(
    values: Float[Tensor, "n k"],
    indices: Int64[Tensor, "n k"],
    *,
    n_latents: int,
    n_top: int = 16,
) -> tuple[Int64[Tensor, "f t"], Float[Tensor, "f t"]]:
    """For every latent, the samples where it fires hardest (the material to name it).

    Args:
        values, indices: sparse codes from `encode_dataset`.
        n_latents: f, the SAE's dictionary size.
        n_top: t, samples per latent.

    Returns:
        (samples, activations): (f, t) sample indices by decreasing activation, ties by lower
        index, padded with -1 (and activation 0) where a latent fired on fewer samples.
    """
    n, k = values.shape
    sample = torch.arange(n, device=values.device).repeat_interleave(k)
    latent, act = indices.reshape(-1), values.reshape(-1)
    fired = act > 0
    sample, latent, act = sample[fired], latent[fired], act[fired]
    # lexicographic (latent, -activation, sample) by stable sorts from the last key
    order = torch.argsort(sample, stable=True)
    order = order[torch.argsort(-act[order], stable=True)]
    order = order[torch.argsort(latent[order], stable=True)]
    sample, latent, act = sample[order], latent[order], act[order]
    counts = torch.bincount(latent, minlength=n_latents)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(latent), device=values.device) - starts[latent]
    keep = rank < n_top
    samples = torch.full((n_latents, n_top), -1, dtype=torch.long, device=values.device)
    acts = torch.zeros((n_latents, n_top), dtype=values.dtype, device=values.device)
    samples[latent[keep], rank[keep]] = sample[keep]
    acts[latent[keep], rank[keep]] = act[keep]
    return samples, acts


def annotate_features(
    top_samples: Int64[Tensor, "f t"],
    hook: FeatureHook,
    *,
    keys: Sequence[str] | None = None,
) -> dict[int, str]:
    """Name every latent that fired: ``hook(feature_id, its top samples)``.

    The hook sees sample indices, or their ``__key__`` when ``keys`` is given, and returns a
    name, or None for a feature it cannot interpret (left out of the result).
    """
    names: dict[int, str] = {}
    for feature, row in enumerate(top_samples.tolist()):
        ids = [i for i in row if i >= 0]
        if not ids:
            continue  # never fired: nothing to show the annotator
        name = hook(feature, [keys[i] for i in ids] if keys is not None else ids)
        if name is not None:
            names[feature] = str(name)
    return names


def predominant_features(
    values: Float[Tensor, "n k"],
    indices: Int64[Tensor, "n k"],
    *,
    n_tags: int = 3,
    min_share: float = 0.0,
) -> Int64[Tensor, "n t"]:
    """Per sample, the latents carrying the largest activations, padded with -1.

    A latent qualifies if it is active and carries at least ``min_share`` of the sample's
    total activation (decoder columns have unit norm, so activation = contribution norm).
    """
    if not 1 <= n_tags <= values.shape[1]:
        raise ValueError(f"n_tags must be in [1, k={values.shape[1]}], got {n_tags}")
    order = torch.argsort(values, dim=1, descending=True, stable=True)[:, :n_tags]
    top_v, top_i = values.gather(1, order), indices.gather(1, order)
    share = top_v / values.sum(1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)
    ok = (top_v > 0) & (share >= min_share)
    return torch.where(ok, top_i, torch.full_like(top_i, -1))


def feature_tags(features: Int64[Tensor, "n t"], names: Mapping[int, str]) -> list[list[str]]:
    """Names of each sample's predominant features (unnamed and padding entries skipped)."""
    return [[names[f] for f in row if f in names] for row in features.tolist()]


def filter_by_tags(tags: Sequence[Sequence[str]], drop: Collection[str]) -> Bool[Tensor, " n"]:
    """Keep mask: False for a sample that carries any tag in ``drop`` (e.g. "jpeg artifacts")."""
    drop = set(drop)
    return torch.tensor([not drop.intersection(t) for t in tags], dtype=torch.bool)


def tag_table(
    keys: Sequence[str], features: Int64[Tensor, "n t"], names: Mapping[int, str]
) -> pa.Table:
    """Parquet-ready ``__key__``, ``sae_features`` (ids) and ``sae_tags`` (names) per sample."""
    if len(keys) != len(features):
        raise ValueError(f"{len(keys)} keys for {len(features)} feature rows")
    ids = [[f for f in row if f >= 0] for row in features.tolist()]
    return pa.table(
        {
            "__key__": pa.array(list(keys), pa.string()),
            "sae_features": pa.array(ids, pa.list_(pa.int64())),
            "sae_tags": pa.array(feature_tags(features, names), pa.list_(pa.string())),
        }
    )
