"""Text conditioning path of the DiT: layer aggregation, then a token refiner."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from k2_dit.config import ConfigError, TextConfig
from k2_dit.text._aggregation import LastLayerProjection, LayerAggregation
from k2_dit.text._refiner import TextRefiner


class TextAdapter(nn.Module):
    """Frozen-encoder hidden states `[b, l, k, e]` to DiT text tokens `[b, l, dim]`.

    aggregation (`cfg.aggregation`: `attention` -> `LayerAggregation`, `last` ->
    `LastLayerProjection`), both mapping e straight to `dim`, then `cfg.refiner_layers`
    bidirectional `TextRefiner` layers. Outputs at padded positions are set to 0.

    Args:
        cfg: the text config (`encoder_dim`, `num_layers`, `aggregation`, heads, refiner depth).
        dim: DiT width.
        refiner_heads: heads of the refiner; None uses `cfg.aggregation_heads` (TextConfig has
            no separate field).

    References:
        Krea 2 report, Architecture / Text encoder; UniFusion (arXiv 2510.12789).
    """

    def __init__(self, cfg: TextConfig, *, dim: int, refiner_heads: int | None = None) -> None:
        super().__init__()
        if cfg.encoder_dim < 1:
            raise ConfigError(
                f"text.encoder_dim={cfg.encoder_dim} must be positive: set it to the encoder's "
                "hidden_size (Qwen3-VL 8B: 4096)"
            )
        if cfg.num_layers < 1:
            raise ConfigError(
                f"text.num_layers={cfg.num_layers} must be >= 1: set it to the encoder's "
                "num_hidden_states (layers + 1; Qwen3-VL 8B: 37)"
            )
        if cfg.refiner_layers < 0:
            raise ConfigError(f"text.refiner_layers={cfg.refiner_layers} must be >= 0")
        if cfg.max_tokens < 1:
            raise ConfigError(f"text.max_tokens={cfg.max_tokens} must be >= 1")
        heads = cfg.aggregation_heads
        if cfg.aggregation == "attention" and (heads < 1 or dim % heads != 0):
            raise ConfigError(
                f"dim={dim} is not divisible by text.aggregation_heads={heads}: choose "
                f"aggregation_heads among {[h for h in range(1, min(dim, 64) + 1) if dim % h == 0]}"
            )
        refiner_heads = heads if refiner_heads is None else refiner_heads
        if cfg.refiner_layers > 0 and (refiner_heads < 1 or dim % refiner_heads != 0):
            raise ConfigError(
                f"dim={dim} is not divisible by the refiner's {refiner_heads} heads: pass "
                "refiner_heads (or text.aggregation_heads) that divides dim"
            )
        self.cfg = cfg
        self.aggregate: nn.Module
        if cfg.aggregation == "attention":
            self.aggregate = LayerAggregation(
                cfg.encoder_dim, dim, num_layers=cfg.num_layers, num_heads=heads
            )
        else:
            self.aggregate = LastLayerProjection(cfg.encoder_dim, dim, num_layers=cfg.num_layers)
        self.refiner = TextRefiner(dim, num_layers=cfg.refiner_layers, num_heads=refiner_heads)
        self.pool = (
            nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            if cfg.pooled
            else None
        )

    def pooled(
        self, tokens: Float[Tensor, "b l d"], mask: Bool[Tensor, "b l"]
    ) -> Float[Tensor, "b d"]:
        """MLP of the mean real token (`text.pooled`); an empty prompt pools to zeros first.

        Args:
            tokens: the adapter's output (zero at padded positions).
            mask: True on real tokens.

        Returns:
            One vector per sample, added to the timestep embedding by the DiT.
        """
        if self.pool is None:
            raise ConfigError("pooled() needs text.pooled=True")
        count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(tokens.dtype)
        return self.pool(tokens.sum(dim=1) / count)

    def forward(
        self, hidden: Float[Tensor, "b l k e"], mask: Bool[Tensor, "b l"]
    ) -> Float[Tensor, "b l d"]:
        """Turn encoder hidden states into text tokens.

        Args:
            hidden: stacked hidden states from `TextEncoder.encode`.
            mask: True on real tokens.

        Returns:
            Text tokens, zero at padded positions.
        """
        _, length, k, e = hidden.shape
        if k != self.cfg.num_layers:
            raise ConfigError(
                f"the text features hold {k} hidden states per token but text.num_layers="
                f"{self.cfg.num_layers}: set text.num_layers to the encoder's num_hidden_states ({k})"
            )
        if e != self.cfg.encoder_dim:
            raise ConfigError(
                f"the text features are {e} wide but text.encoder_dim={self.cfg.encoder_dim}: "
                f"set text.encoder_dim to the encoder's hidden_size ({e})"
            )
        if length > self.cfg.max_tokens:
            raise ConfigError(
                f"{length} text tokens exceed text.max_tokens={self.cfg.max_tokens}: encode with "
                "max_length <= text.max_tokens or raise text.max_tokens"
            )
        x = self.refiner(self.aggregate(hidden), mask)
        return torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
