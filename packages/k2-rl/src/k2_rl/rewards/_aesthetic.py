"""Aesthetic reward: a small head on image embeddings trained Bradley-Terry on preference pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


@dataclass(frozen=True, kw_only=True)
class AestheticHeadConfig:
    """Shape of the aesthetic head.

    Args:
        dim: width of the image embeddings (e.g. 1152 for SigLIP-2 so400m).
        hidden: width of the hidden layer; 0 gives a linear head.
        dropout: dropout before the output layer during training.
    """

    dim: int
    hidden: int = 256
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0 = linear head), got {self.hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class AestheticHead(nn.Module):
    """MLP from an image embedding to a scalar preference score (higher = preferred).

    Args:
        config: the head's shape.
    """

    def __init__(self, config: AestheticHeadConfig) -> None:
        super().__init__()
        self.config = config
        if config.hidden == 0:
            self.net = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.dim, 1))
        else:
            self.net = nn.Sequential(
                nn.Linear(config.dim, config.hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, 1),
            )

    def forward(self, embeddings: Float[Tensor, "n d"]) -> Float[Tensor, " n"]:
        """Scores of a batch of embeddings."""
        return self.net(embeddings).squeeze(-1)


def bradley_terry_loss(
    score_w: Float[Tensor, " n"], score_l: Float[Tensor, " n"]
) -> Float[Tensor, " n"]:
    """Negative log-likelihood that the winner beats the loser under Bradley-Terry.

    Args:
        score_w: scores of the preferred images.
        score_l: scores of the rejected images.

    Returns:
        -log σ(s_w - s_l) per pair (computed as softplus(s_l - s_w), stable for any gap).

    References:
        Bradley & Terry 1952, Eq. 1 (P(i beats j) = π_i / (π_i + π_j), i.e. σ(s_i - s_j)
        with s = log π); Ouyang et al. 2022 (InstructGPT), Eq. 1 (reward-model loss).
    """
    return F.softplus(score_l - score_w)


def fit_bradley_terry(
    emb_w: Float[Tensor, "n d"],
    emb_l: Float[Tensor, "n d"],
    *,
    hidden: int = 256,
    dropout: float = 0.0,
    steps: int = 300,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    batch_size: int | None = None,
    seed: int = 0,
) -> AestheticHead:
    """Train an `AestheticHead` on preference pairs (winner, loser) of image embeddings.

    A lightweight stand-in for the report's VLM fine-tuned on the PO-stage preferences: the
    same Bradley-Terry objective on frozen embeddings, trainable in seconds on a CPU.

    Args:
        emb_w: embeddings of the preferred images.
        emb_l: embeddings of the rejected images, paired row by row.
        hidden: hidden width (0 = linear head).
        dropout: dropout inside the head while training.
        steps: AdamW steps.
        lr: learning rate.
        weight_decay: AdamW weight decay.
        batch_size: pairs per step (None = all pairs every step).
        seed: seed of the initialisation and the minibatch order (global RNG untouched).

    Returns:
        The trained head, in eval mode, on the embeddings' device and dtype.

    References:
        Bradley & Terry 1952; Krea 2 report, Reinforcement learning ("general aesthetic
        model ... finetuned on the preference data collected during the PO stage").
    """
    if emb_w.shape != emb_l.shape:
        raise ValueError(f"emb_w {tuple(emb_w.shape)} and emb_l {tuple(emb_l.shape)} differ")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n = emb_w.shape[0]
    batch = n if batch_size is None else min(batch_size, n)
    config = AestheticHeadConfig(dim=emb_w.shape[1], hidden=hidden, dropout=dropout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = AestheticHead(config).to(device=emb_w.device, dtype=emb_w.dtype)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    optim = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    head.train()
    for _ in range(steps):
        idx = torch.randperm(n, generator=generator)[:batch].to(emb_w.device)
        loss = bradley_terry_loss(head(emb_w[idx]), head(emb_l[idx])).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return head.eval()


@torch.no_grad()
def preference_accuracy(
    head: nn.Module, emb_w: Float[Tensor, "n d"], emb_l: Float[Tensor, "n d"]
) -> Float[Tensor, ""]:
    """Fraction of pairs the head orders correctly (ties count as wrong).

    Args:
        head: maps embeddings [n, d] to scores [n].
        emb_w: embeddings of the preferred images.
        emb_l: embeddings of the rejected images.

    Returns:
        mean(1[s_w > s_l]) as a 0-dim tensor.
    """
    return (head(emb_w) > head(emb_l)).to(emb_w.dtype).mean()
