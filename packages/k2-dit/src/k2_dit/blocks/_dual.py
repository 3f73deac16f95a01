"""Dual-stream (MMDiT) block: separate text/image weights, one joint attention."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from k2_dit.blocks._attention import Attention, attend
from k2_dit.blocks._mlp import make_mlp
from k2_dit.blocks._norm import make_norm
from k2_dit.conditioning import Modulation, TimestepSignal, modulate
from k2_dit.config import AttentionConfig, DiTConfig, MLPKind, NormKind, TimestepKind
from k2_dit.rope import RopeTables, apply_rope


class StreamLayers(nn.Module):
    """One modality's weights inside a dual-stream block: norms, attention, MLP, modulation.

    With `with_output=False` only the pre-norm, its shift/scale modulation and the key/value
    projections exist: the stream feeds keys and values to the joint attention, but neither
    its queries nor its own update would ever be used.
    """

    def __init__(
        self,
        dim: int,
        *,
        attention: AttentionConfig,
        mlp: MLPKind,
        mlp_hidden: int,
        norm: NormKind,
        eps: float,
        timestep: TimestepKind,
        with_output: bool = True,
    ) -> None:
        super().__init__()
        adaln = timestep in ("adaln_mlp", "shared_bias")
        self.with_output = with_output
        self.norm1 = make_norm(norm, dim, eps=eps, affine=not adaln)
        self.attn = Attention(dim, attention, norm=norm, eps=eps, kv_only=not with_output)
        self.norm2 = make_norm(norm, dim, eps=eps, affine=not adaln) if with_output else None
        self.mlp = make_mlp(mlp, dim, mlp_hidden) if with_output else None
        rows = 6 if with_output else 2
        self.modulation = Modulation(dim, kind=timestep, rows=rows) if adaln else None


def _slice_tables(tables: RopeTables, start: int) -> RopeTables:
    return RopeTables(cos=tables.cos[:, :, start:], sin=tables.sin[:, :, start:])


class DualStreamBlock(nn.Module):
    """MMDiT block: text and image tokens keep separate weights and meet in one joint SDPA.

    Each stream s ∈ {text, image} computes q_s, k_s, v_s from its own (modulated) pre-norm
    and projections; attention runs once over the concatenated [text, image] sequence
    (RoPE applied to the concatenation), the output is split back, and each stream applies
    its own gate/output projection, residual and MLP exactly as `SingleStreamBlock` does.

    Args:
        dim: model width.
        attention: attention layout (shared by both streams' configs, weights separate).
        mlp: `swiglu` or `gelu`.
        mlp_hidden: MLP inner width.
        norm: `rmsnorm` or `layernorm`.
        eps: norm epsilon.
        timestep: conditioning mode; with AdaLN each stream has its own modulation.
        context_output: False for the last block of a pure dual-stream network: the text
            stream only supplies keys/values (no queries, gate, output projection or MLP)
            and the text tokens are returned unchanged, so no parameter is left without a
            gradient (SD3 `context_pre_only`).

    References:
        Esser et al. 2024, "Scaling Rectified Flow Transformers" (SD3), §4 / Fig. 2 (MM-DiT);
        Black Forest Labs FLUX double-stream blocks; Krea 2 report, "Dual-stream design".
    """

    def __init__(
        self,
        dim: int,
        *,
        attention: AttentionConfig,
        mlp: MLPKind,
        mlp_hidden: int,
        norm: NormKind,
        eps: float,
        timestep: TimestepKind,
        context_output: bool = True,
    ) -> None:
        super().__init__()
        common = dict(attention=attention, mlp=mlp, mlp_hidden=mlp_hidden, norm=norm, eps=eps)
        self.txt = StreamLayers(dim, timestep=timestep, with_output=context_output, **common)
        self.img = StreamLayers(dim, timestep=timestep, **common)
        self.context_output = context_output

    @classmethod
    def from_config(cls, config: DiTConfig, *, context_output: bool = True) -> DualStreamBlock:
        """The block `DiT` builds for `config`."""
        return cls(
            config.dim,
            attention=config.attention,
            mlp=config.mlp,
            mlp_hidden=config.mlp_hidden,
            norm=config.norm,
            eps=config.norm_eps,
            timestep=config.timestep,
            context_output=context_output,
        )

    @staticmethod
    def _pre(stream: StreamLayers, x: Tensor, mod: Tensor | None) -> Tensor:
        h = stream.norm1(x)
        return h if mod is None else modulate(h, mod[:, 0], mod[:, 1])

    @staticmethod
    def _post(
        stream: StreamLayers, x: Tensor, o: Tensor, gate: Tensor | None, mod: Tensor | None
    ) -> Tensor:
        assert stream.norm2 is not None and stream.mlp is not None  # with_output streams only
        a = stream.attn.output(o, gate)
        if mod is None:
            x = x + a
            return x + stream.mlp(stream.norm2(x))
        x = x + mod[:, 2, None] * a
        h = modulate(stream.norm2(x), mod[:, 3], mod[:, 4])
        return x + mod[:, 5, None] * stream.mlp(h)

    def forward(
        self,
        txt: Float[Tensor, "b l d"],
        img: Float[Tensor, "b n d"],
        signal: TimestepSignal,
        *,
        rope_tables: RopeTables | None,
        txt_mask: Bool[Tensor, "b l"] | None,
    ) -> tuple[Float[Tensor, "b l d"], Float[Tensor, "b n d"]]:
        """Apply the block.

        Args:
            txt: context tokens (timestep tokens and text), first in the joint sequence.
            img: image tokens, after the context.
            signal: timestep signal (ignored without AdaLN).
            rope_tables: RoPE tables for the l + n joint tokens, context first.
            txt_mask: key-padding mask for the context tokens (image tokens are all real).

        Returns:
            Updated (txt, img); txt is returned unchanged when `context_output` is False.
        """
        n_txt = txt.shape[1]
        mod_t = self.txt.modulation(signal) if self.txt.modulation is not None else None
        mod_i = self.img.modulation(signal) if self.img.modulation is not None else None
        h_txt = self._pre(self.txt, txt, mod_t)
        qi, ki, vi, gi = self.img.attn.project(self._pre(self.img, img, mod_i), None)
        if self.context_output:
            qt, kt, vt, gt = self.txt.attn.project(h_txt, None)
            q, q_tables = torch.cat([qt, qi], dim=2), rope_tables
        else:
            # Only image queries: the context's own update would be discarded anyway.
            kt, vt = self.txt.attn.project_kv(h_txt, None)
            gt, q = None, qi
            q_tables = None if rope_tables is None else _slice_tables(rope_tables, n_txt)
        k, v = torch.cat([kt, ki], dim=2), torch.cat([vt, vi], dim=2)
        if rope_tables is not None and q_tables is not None:
            q, k = apply_rope(q, q_tables), apply_rope(k, rope_tables)
        mask = None
        if txt_mask is not None:
            img_mask = torch.ones(img.shape[:2], dtype=torch.bool, device=img.device)
            mask = torch.cat([txt_mask, img_mask], dim=1)
        o = attend(q, k, v, mask=mask)
        if not self.context_output:
            return txt, self._post(self.img, img, o, gi, mod_i)
        ot, oi = o.split([n_txt, img.shape[1]], dim=2)
        img = self._post(self.img, img, oi, gi, mod_i)
        txt = self._post(self.txt, txt, ot, gt, mod_t)
        return txt, img
