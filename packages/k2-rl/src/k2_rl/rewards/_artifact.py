"""Artifact / structure reward: the probability that an image is free of structural errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from k2_rl.rewards._rubric import ImageBatch


@runtime_checkable
class ArtifactClassifier(Protocol):
    """Maps a batch of images to P(no structural artifact) in [0, 1], shape [n]."""

    def __call__(self, images: ImageBatch) -> Float[Tensor, " n"]: ...


class LogisticArtifactHead(nn.Module):
    """Logistic regression on image embeddings: P(clean | e) = σ(w·e + b).

    Args:
        dim: width of the embeddings.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.linear = nn.Linear(dim, 1)

    def logits(self, embeddings: Float[Tensor, "n d"]) -> Float[Tensor, " n"]:
        """Log-odds of a clean image."""
        return self.linear(embeddings).squeeze(-1)

    def forward(self, embeddings: Float[Tensor, "n d"]) -> Float[Tensor, " n"]:
        """P(clean) per embedding."""
        return torch.sigmoid(self.logits(embeddings))


def fit_artifact_head(
    embeddings: Float[Tensor, "n d"],
    clean: Float[Tensor, " n"],
    *,
    l2: float = 1e-3,
    max_iter: int = 200,
) -> LogisticArtifactHead:
    """Fit `LogisticArtifactHead` by L2-regularised maximum likelihood (full-batch L-BFGS).

    Written in torch rather than scikit-learn so k2-rl stays torch-only; the problem is
    convex, so L-BFGS with a Wolfe line search reaches the same optimum.

    Args:
        embeddings: image embeddings (e.g. DINOv3 / SigLIP-2), labelled by `clean`.
        clean: 1 for an artifact-free image, 0 for one with artifacts (soft labels allowed).
        l2: weight of (l2 / 2)·|w|² (the bias is not penalised).
        max_iter: L-BFGS iterations.

    Returns:
        The fitted head, in eval mode, on the embeddings' device and dtype.

    References:
        Krea 2 report, Reinforcement learning ("a dedicated artifact reward model that
        detects these structural errors"); Pretraining data (small classifiers on
        embeddings from VLM pseudo-labels).
    """
    if clean.shape[0] != embeddings.shape[0]:
        raise ValueError(f"{clean.shape[0]} labels for {embeddings.shape[0]} embeddings")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    head = LogisticArtifactHead(embeddings.shape[1]).to(embeddings)
    nn.init.zeros_(head.linear.weight)
    nn.init.zeros_(head.linear.bias)
    target = clean.to(embeddings.dtype)
    optim = torch.optim.LBFGS(
        head.parameters(),
        max_iter=max_iter,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optim.zero_grad(set_to_none=True)
        nll = F.binary_cross_entropy_with_logits(head.logits(embeddings), target)
        loss = nll + 0.5 * l2 * head.linear.weight.square().sum()
        loss.backward()
        return loss

    optim.step(closure)
    return head.eval()


class EmbeddingArtifactClassifier:
    """An `ArtifactClassifier` from an image encoder and a logistic head on its embeddings.

    Args:
        embed: images -> embeddings [n, d] (e.g. a frozen DINOv3 / SigLIP-2 encoder).
        head: the fitted head.
    """

    def __init__(
        self, embed: Callable[[Sequence[Any]], Tensor], head: LogisticArtifactHead
    ) -> None:
        self.embed = embed
        self.head = head

    @torch.no_grad()
    def __call__(self, images: ImageBatch) -> Float[Tensor, " n"]:
        return self.head(self.embed(images))
