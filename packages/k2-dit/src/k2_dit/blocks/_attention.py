"""Self-attention with MHA / GQA / MLA projections, QK-norm, RoPE and a sigmoid output gate."""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from torch.nn import functional as F

from k2_dit.blocks._norm import make_norm
from k2_dit.config import AttentionConfig, NormKind
from k2_dit.rope import RopeTables, apply_rope


def attend(
    q: Float[Tensor, "b h m d"],
    k: Float[Tensor, "b g n d"],
    v: Float[Tensor, "b g n d"],
    *,
    mask: Bool[Tensor, "b n"] | None,
) -> Float[Tensor, "b h m d"]:
    """Scaled dot-product attention with a key-padding mask and grouped K/V heads.

    Query head j reads K/V head j // (h / g) (GQA grouping). A sample whose mask has no
    valid key at all attends to every key instead of producing NaN (softmax over an empty
    set); such rows only arise for fully padded sequences whose outputs are discarded.
    Uses `torch.nn.functional.scaled_dot_product_attention` so the fused kernels are picked.

    Args:
        q: queries, h heads, m tokens (m = n for self-attention).
        k: keys, g heads with h divisible by g, n tokens.
        v: values, g heads.
        mask: True where a key is a real token; None when every token is real.

    Returns:
        softmax(q kᵀ / sqrt(d) + log mask) v per head.

    References:
        Vaswani et al. 2017, Eq. 1; Ainslie et al. 2023, "GQA" §2.2 (grouping).
    """
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads % kv_heads != 0:
        raise ValueError(
            f"{heads} query heads cannot share {kv_heads} K/V heads: h must be a multiple of g"
        )
    attn_mask = None
    if mask is not None:
        mask = mask | ~mask.any(dim=-1, keepdim=True)
        attn_mask = mask[:, None, None, :]
    # With a mask and grouped K/V, CUDA dispatches to cuDNN attention (H200, torch 2.11:
    # 1.34 ms vs 1.45 ms for expanding K/V into the memory-efficient kernel, b4 h16 n4096).
    enable_gqa = heads != kv_heads
    return sdpa(q, k, v, attn_mask=attn_mask, enable_gqa=enable_gqa)


def sdpa(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
    """`F.scaled_dot_product_attention`, computed in float32 for low-precision CPU inputs.

    On CPU the bfloat16 flash-attention backward is several times slower than float32
    (torch 2.15 on an AMX Xeon, b32 h4 n88 d32: 15 ms vs 2.3 ms per call), so under CPU
    autocast the attention itself runs in float32 and the result is cast back; the
    projections around it keep the bfloat16 matmuls that make autocast worth it. On other
    devices this is the plain call.
    """
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
    return out.to(q.dtype)


class Attention(nn.Module):
    """Multi-head self-attention in the MHA, GQA or MLA layout with an optional sigmoid gate.

    The work is split so that joint (dual-stream) attention can reuse the projections:
    `project` gives per-head q, k, v (QK-norm, then RoPE) and the gate, `attend` runs
    SDPA, `output` gates, merges heads and applies the output projection.

    MLA (DeepSeek-V2 notation): c_kv = norm(W_DKV x), k = W_UK c_kv, v = W_UV c_kv and,
    with `q_lora_rank > 0`, q = W_UQ norm(W_DQ x). There is no decoupled RoPE: it exists only
    to absorb W_UK under a KV cache and a DiT has none, so RoPE rotates the up-projected q, k.

    The gate is Y' = SDPA(Q, K, V) ⊙ σ(X W_θ) with X the pre-normed block input, applied per
    head before the heads are merged (position G1). Its projection is folded into the query
    projection as in the reference code: `q_proj` outputs, per head, [q_h (d_h), gate_h (d_h
    or 1)] (Qwen3-Next layout). With MLA query compression the gate cannot be folded (q_up
    reads the latent, not X), so a separate `gate_proj` reads X.

    Args:
        dim: model width.
        cfg: head layout, KV sharing, gate and QK-norm.
        norm: kind of QK-norm and MLA latent norm.
        eps: norm epsilon.
        kv_only: build only the key/value path (no queries, gate or output projection), for a
            text stream that only supplies keys and values (last block of a dual network).

    References:
        Vaswani et al. 2017; Ainslie et al. 2023 (GQA); DeepSeek-AI 2024, "DeepSeek-V2",
        Eq. 9-13 (MLA, without the decoupled-RoPE Eq. 14-19); Qiu et al. 2025, "Gated
        Attention for Large Language Models", Eq. 5 and position G1; Krea 2 report,
        Transformer block.
    """

    def __init__(
        self,
        dim: int,
        cfg: AttentionConfig,
        *,
        norm: NormKind,
        eps: float,
        kv_only: bool = False,
    ) -> None:
        super().__init__()
        cfg.validate(dim)
        if kv_only:
            cfg = dataclasses.replace(cfg, gate="none")
        self.cfg = cfg
        self.kv_only = kv_only
        self.heads = cfg.num_heads
        self.kv_heads = cfg.kv_heads
        self.head_dim = dim // cfg.num_heads
        self.gate_dim = {"none": 0, "elementwise": self.head_dim, "headwise": 1}[cfg.gate]
        inner = self.heads * self.head_dim
        mla = cfg.kind == "mla"

        self.gate_proj: nn.Linear | None = None
        if kv_only:
            pass
        elif mla and cfg.q_lora_rank > 0:
            self.q_down = nn.Linear(dim, cfg.q_lora_rank, bias=False)
            self.q_norm_latent = make_norm(norm, cfg.q_lora_rank, eps=eps)
            self.q_up = nn.Linear(cfg.q_lora_rank, inner, bias=False)
            if self.gate_dim:
                self.gate_proj = nn.Linear(dim, self.heads * self.gate_dim, bias=False)
        else:
            self.q_proj = nn.Linear(dim, self.heads * (self.head_dim + self.gate_dim), bias=False)
        if mla:
            rank = cfg.kv_rank(dim)
            self.kv_down = nn.Linear(dim, rank, bias=False)
            self.kv_norm = make_norm(norm, rank, eps=eps)
            self.k_up = nn.Linear(rank, inner, bias=False)
            self.v_up = nn.Linear(rank, inner, bias=False)
        else:
            self.k_proj = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
            self.v_proj = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        with_q_norm = cfg.qk_norm and not kv_only
        self.q_norm = make_norm(norm, self.head_dim, eps=eps) if with_q_norm else None
        self.k_norm = make_norm(norm, self.head_dim, eps=eps) if cfg.qk_norm else None
        self.o_proj = None if kv_only else nn.Linear(inner, dim, bias=False)

    def _queries(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        b, n, _ = x.shape
        if self.cfg.kind == "mla" and self.cfg.q_lora_rank > 0:
            q = self.q_up(self.q_norm_latent(self.q_down(x))).view(b, n, self.heads, -1)
            gate = None
            if self.gate_proj is not None:
                gate = self.gate_proj(x).view(b, n, self.heads, self.gate_dim)
            return q, gate
        qg = self.q_proj(x).view(b, n, self.heads, self.head_dim + self.gate_dim)
        if not self.gate_dim:
            return qg, None
        q, gate = qg.split([self.head_dim, self.gate_dim], dim=-1)
        return q, gate

    def project_kv(
        self, x: Float[Tensor, "b n d"], tables: RopeTables | None
    ) -> tuple[Float[Tensor, "b g n e"], Float[Tensor, "b g n e"]]:
        """Per-head keys (K-normed, then rotated) and values.

        Args:
            x: pre-normed (and, with AdaLN, modulated) block input X.
            tables: RoPE tables for these n tokens, or None to skip the rotation.

        Returns:
            k and v, [b, H_kv, n, d_h].
        """
        b, n, _ = x.shape
        if self.cfg.kind == "mla":
            c_kv = self.kv_norm(self.kv_down(x))
            k, v = self.k_up(c_kv), self.v_up(c_kv)
        else:
            k, v = self.k_proj(x), self.v_proj(x)
        k = k.view(b, n, self.kv_heads, self.head_dim)
        if self.k_norm is not None:
            k = self.k_norm(k)
        k = k.transpose(1, 2)
        v = v.view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        if tables is not None:
            k = apply_rope(k, tables)
        return k, v

    def project(
        self, x: Float[Tensor, "b n d"], tables: RopeTables | None
    ) -> tuple[
        Float[Tensor, "b h n e"],
        Float[Tensor, "b g n e"],
        Float[Tensor, "b g n e"],
        Float[Tensor, "b n h _"] | None,
    ]:
        """Per-head queries, keys, values (QK-normed, then rotated) and the gate logits.

        Args:
            x: pre-normed (and, with AdaLN, modulated) block input X.
            tables: RoPE tables for these n tokens, or None to skip the rotation (the caller
                rotates later, e.g. after concatenating the streams of a dual block).

        Returns:
            q [b, H, n, d_h], k and v [b, H_kv, n, d_h], gate logits X W_θ [b, n, H, d_h or 1]
            (None without a gate).
        """
        if self.kv_only:
            raise RuntimeError("this Attention was built with kv_only=True: call project_kv")
        q, gate = self._queries(x)
        if self.q_norm is not None:
            q = self.q_norm(q)
        q = q.transpose(1, 2)
        if tables is not None:
            q = apply_rope(q, tables)
        k, v = self.project_kv(x, tables)
        return q, k, v, gate

    def output(
        self, o: Float[Tensor, "b h n e"], gate: Float[Tensor, "b n h _"] | None
    ) -> Float[Tensor, "b n d"]:
        """Gate the per-head SDPA output with σ(gate), merge heads, project to the model width.

        Args:
            o: SDPA output per head.
            gate: gate logits from `project` (None: no gate).

        Returns:
            W_O concat_h(o_h ⊙ σ(gate_h)).
        """
        if self.o_proj is None:
            raise RuntimeError("this Attention was built with kv_only=True: it has no output")
        o = o.transpose(1, 2)
        if gate is not None:
            o = o * torch.sigmoid(gate)
        b, n = o.shape[:2]
        return self.o_proj(o.reshape(b, n, self.heads * self.head_dim))

    def forward(
        self,
        x: Float[Tensor, "b n d"],
        *,
        rope_tables: RopeTables | None,
        mask: Bool[Tensor, "b n"] | None,
    ) -> Float[Tensor, "b n d"]:
        """Self-attention over one sequence: `output(attend(project(x)))`.

        Args:
            x: pre-normed block input.
            rope_tables: RoPE tables for the n tokens (None: no positional rotation).
            mask: key-padding mask, True for real tokens (None: all real).

        Returns:
            The attention branch output, same shape as x.
        """
        q, k, v, gate = self.project(x, rope_tables)
        return self.output(attend(q, k, v, mask=mask), gate)
