"""Per-token aggregation of a text encoder's hidden states across its layers."""

from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from k2_dit.blocks import RMSNorm, sdpa


class LayerAggregation(nn.Module):
    """Shallow attention over the layer axis that turns k hidden states per token into one.

    For one token with hidden states h_1..h_k (in R^e), heads H and width d (d_h = d / H):

        u_j = h_j / sqrt(mean(h_j^2) + eps)                         (1) per-layer RMS normalisation
        x_j = W_in u_j + b_in + p_j                                  (2) p_j: learned layer embedding
        n_j = RMSNorm_1(x_j);  [q_j; c_j; v_j] = W_qkv n_j + b_qkv
        y_i = x_i + W_o concat_h( sum_j softmax_j(q_i^h . c_j^h / sqrt(d_h)) v_j^h ) + b_o   (3)
        m_j = RMSNorm_2(y_j);  [a_j; g_j] = W_kv m_j + b_kv
        z   = W_out concat_h( sum_j softmax_j(s^h . a_j^h / sqrt(d_h)) g_j^h ) + b_out     (4)

    RMSNorm_i(v) = v / sqrt(mean(v^2) + eps) * (1 + w_i) is the zero-centred `k2_dit.blocks.RMSNorm`.
    (3) is one bidirectional self-attention layer across the k layers (pre-norm, residual);
    (4) pools the layers with a learned query s (initialised to 0, so training starts from mean
    pooling of the values). (1) matters because hidden-state scales differ by orders of
    magnitude across an LLM's depth. Tokens never interact here; padded tokens are processed
    like the others (all-zero features give finite outputs) and are masked downstream.

    Args:
        in_dim: e, the encoder width.
        out_dim: width of the aggregated feature.
        num_layers: k, hidden states per token.
        num_heads: heads of both attentions (must divide `width`).
        width: d, the internal width (default `out_dim`); smaller saves memory, since the
            activations are `[b, l, k, d]`.
        eps: of the normalisations.

    References:
        Krea 2 report, Architecture / Text encoder ("a shallow attention layer that aggregates
        hidden features across layers"); UniFusion LAP (Li, Brack et al., arXiv 2510.12789),
        which uses two full transformer blocks over the layer axis and an FC to one vector.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        num_layers: int,
        num_heads: int = 4,
        width: int | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        width = out_dim if width is None else width
        if num_layers < 1 or in_dim < 1 or out_dim < 1:
            raise ValueError(
                f"num_layers={num_layers}, in_dim={in_dim}, out_dim={out_dim} must be positive"
            )
        if num_heads < 1 or width % num_heads != 0:
            raise ValueError(
                f"width={width} is not divisible by num_heads={num_heads}: pick a head count "
                "that divides the aggregation width"
            )
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.eps = eps
        self.proj_in = nn.Linear(in_dim, width)
        # An nn.Embedding (not a bare Parameter) so optimiser group rules treat it as a table.
        self.layer_embed = nn.Embedding(num_layers, width)
        nn.init.normal_(self.layer_embed.weight, std=0.02)
        self.norm_attn = RMSNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.norm_pool = RMSNorm(width, eps=eps)
        self.pool_query = nn.Parameter(torch.zeros(width))
        self.pool_kv = nn.Linear(width, 2 * width)
        self.proj_out = nn.Linear(width, out_dim)

    def forward(self, hidden: Float[Tensor, "b l k e"]) -> Float[Tensor, "b l d"]:
        """Aggregate per token.

        Args:
            hidden: stacked hidden states, k = `num_layers`.

        Returns:
            One vector per token, `[b, l, out_dim]`.
        """
        b, length, k, _ = hidden.shape
        if k != self.num_layers:
            raise ValueError(
                f"got {k} hidden states per token but LayerAggregation was built for "
                f"num_layers={self.num_layers}: set num_layers to the encoder's num_hidden_states"
            )
        u = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.eps)  # (1)
        x = self.proj_in(u) + self.layer_embed.weight  # (2)
        x = rearrange(x, "b l k d -> (b l) k d")
        q, c, v = rearrange(
            self.qkv(self.norm_attn(x)),
            "n k (three h dh) -> three n h k dh",
            three=3,
            h=self.num_heads,
        )
        att = sdpa(q, c, v)
        y = x + self.attn_out(rearrange(att, "n h k dh -> n k (h dh)"))  # (3)
        a, g = rearrange(
            self.pool_kv(self.norm_pool(y)),
            "n k (two h dh) -> two n h k dh",
            two=2,
            h=self.num_heads,
        )
        s = rearrange(self.pool_query, "(h dh) -> 1 h 1 dh", h=self.num_heads).expand(
            a.shape[0], -1, -1, -1
        )
        z = sdpa(s.to(a.dtype), a, g)
        z = self.proj_out(rearrange(z, "n h 1 dh -> n (h dh)"))  # (4)
        return rearrange(z, "(b l) d -> b l d", b=b, l=length)


class LastLayerProjection(nn.Module):
    """Baseline: a linear map of the last hidden state only, ignoring the other layers.

    Args:
        in_dim: e, the encoder width.
        out_dim: width of the output feature.
        num_layers: k, hidden states per token (checked, so a config mismatch is caught).

    References:
        Krea 2 report, Architecture / Text encoder ("rather than taking the last layer").
    """

    def __init__(self, in_dim: int, out_dim: int, *, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, hidden: Float[Tensor, "b l k e"]) -> Float[Tensor, "b l d"]:
        """Project `hidden[:, :, -1]` to `out_dim`."""
        if hidden.shape[2] != self.num_layers:
            raise ValueError(
                f"got {hidden.shape[2]} hidden states per token but num_layers={self.num_layers}: "
                "set num_layers to the encoder's num_hidden_states"
            )
        return self.proj(hidden[:, :, -1])
