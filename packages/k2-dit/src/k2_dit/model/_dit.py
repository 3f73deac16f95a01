"""The Krea 2 diffusion transformer: patchify, text adapter, blocks, final layer."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from k2_dit.blocks import DualStreamBlock, SingleStreamBlock, make_norm
from k2_dit.conditioning import Modulation, TimestepConditioning, modulate
from k2_dit.config import DiTConfig
from k2_dit.model._patch import LearnedPosEmbed, patchify, unpatchify
from k2_dit.rope import Rope, extra_positions, token_positions
from k2_dit.text import TextAdapter


class DiT(nn.Module):
    """Text-to-image diffusion transformer predicting the rectified-flow velocity.

    Sequence layout: [timestep tokens (in_context only), text tokens, image tokens], the
    first two forming the "context" stream. Image tokens come from a Linear on p×p latent
    patches (`patch_embed`, the first linear layer); text tokens from `TextAdapter`; RoPE
    positions from `token_positions` (text and timestep tokens at 0 for axial RoPE). Blocks
    are dual-stream for the first `config.num_dual_blocks` and single-stream after. The final
    layer is norm → shift/scale modulation (AdaLN modes) → `final_proj` (the last linear layer,
    zero-initialised) → unpatchify.

    Initialisation: block linears Xavier-uniform with zero biases (DiT); AdaLN gates zero in
    both AdaLN modes so every block is the identity at init; `final_proj` zero, so the initial
    velocity is 0 in every mode. Without AdaLN (`in_context`, `none`) blocks are plain
    pre-norm residual blocks with affine norms at their default (unit) gain.

    Args:
        config: the architecture.

    References:
        Peebles & Xie 2023 (DiT); Esser et al. 2024 (SD3 MM-DiT); Krea 2 report, Architecture.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = nn.Linear(c.patch_dim, c.dim)
        self.pos_embed = (
            LearnedPosEmbed(c.dim, grid=c.pos_embed_grid)
            if c.pos_embed == "learned_sincos"
            else None
        )
        self.text_adapter = TextAdapter(c.text, dim=c.dim)
        self.conditioning = TimestepConditioning(
            c.dim, kind=c.timestep, freq_dim=c.timestep_freq_dim, num_tokens=c.timestep_tokens
        )
        self.rope = Rope(c.rope, head_dim=c.head_dim, num_kv_heads=c.attention.kv_heads)
        blocks: list[nn.Module] = []
        for i in range(c.depth):
            if i < c.num_dual_blocks:
                # The context stream's update after the very last block is never read.
                blocks.append(DualStreamBlock.from_config(c, context_output=i < c.depth - 1))
            else:
                blocks.append(SingleStreamBlock.from_config(c))
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = make_norm(c.norm, c.dim, eps=c.norm_eps, affine=not c.adaln)
        self.final_modulation = (
            Modulation(c.dim, kind=c.timestep, rows=2, from_embedding=True) if c.adaln else None
        )
        self.final_proj = nn.Linear(c.dim, c.patch_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in [self.patch_embed, *self.blocks.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        # Modulations own their (zero / adaLN-Zero) init; the Xavier pass above must not win.
        for module in self.blocks.modules():
            if isinstance(module, Modulation) and module.kind == "adaln_mlp":
                nn.init.zeros_(module.proj.weight)
                nn.init.zeros_(module.proj.bias)
        nn.init.zeros_(self.final_proj.weight)
        nn.init.zeros_(self.final_proj.bias)

    @property
    def first_layer(self) -> nn.Linear:
        """The first linear layer (patch embedding), kept off Muon."""
        return self.patch_embed

    @property
    def last_layer(self) -> nn.Linear:
        """The last linear layer (output projection), kept off Muon."""
        return self.final_proj

    def boundary_linear_names(self) -> tuple[str, str]:
        """Qualified module names of the first and last linear layers (exclude from Muon).

        References:
            Krea 2 report, Optimization ("exclude the first and last linear layers of the
            MMDiT from the Muon parameters").
        """
        return ("patch_embed", "final_proj")

    def adamw_linear_names(self) -> tuple[str, ...]:
        """Qualified names of every linear layer kept off Muon: boundaries and input projections.

        The first and last linear layers (`boundary_linear_names`), plus whichever of the
        input projections this configuration builds: the text adapter's projection of the raw
        encoder features (`text_adapter.aggregate.proj_in` or `.proj`) and the first layer of
        the timestep MLP reading sinusoidal features (`conditioning.embedder.mlp.0` or
        `conditioning.tokens.mlp.0`). Like the embedding layer of an LLM these read
        non-hidden-state inputs, so they stay on AdamW. `k2_dit.train.muon_param_groups`
        uses this list when no `exclude` is given.

        Returns:
            Names in this order: patch embedding, final projection, text projection, timestep
            projection (the last two only where present as `nn.Linear`).

        References:
            Krea 2 report, Optimization ("exclude the first and last linear layers of the
            MMDiT from the Muon parameters"); Liu et al. 2025 (Moonlight), §2 (embedding and
            head on AdamW).
        """
        modules = dict(self.named_modules())
        inputs = (
            "text_adapter.aggregate.proj_in",  # LayerAggregation: encoder width -> model width
            "text_adapter.aggregate.proj",  # LastLayerProjection
            "conditioning.embedder.mlp.0",  # sinusoidal timestep features -> model width
            "conditioning.tokens.mlp.0",  # in-context timestep tokens
        )
        present = tuple(n for n in inputs if isinstance(modules.get(n), nn.Linear))
        return (*self.boundary_linear_names(), *present)

    def num_parameters(self, exclude_text: bool = False) -> int:
        """Number of parameters; `exclude_text` leaves out the text adapter."""
        skip = {id(p) for p in self.text_adapter.parameters()} if exclude_text else set()
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)

    def forward(
        self,
        x: Float[Tensor, "b c h w"],
        t: Float[Tensor, " b"],
        text: Float[Tensor, "b l k e"],
        text_mask: Bool[Tensor, "b l"],
    ) -> Float[Tensor, "b c h w"]:
        """Predict the velocity v = ε - x₀ at x_t.

        Args:
            x: noisy latent x_t; h and w must be multiples of `patch_size` (any such size).
            t: time per sample in [0, 1] (1 = noise).
            text: frozen text-encoder hidden states, k stacked layers of width e per token.
            text_mask: True on real text tokens; an all-False row is an unconditional
                (classifier-free guidance) sample.

        Returns:
            The predicted velocity, same shape as x.
        """
        c = self.config
        b, _, height, width = x.shape
        p = c.patch_size
        grid = (height // p, width // p)
        img = self.patch_embed(patchify(x, p))
        if self.pos_embed is not None:
            img = img + self.pos_embed(grid).to(img.dtype)

        ctx = self.text_adapter(text, text_mask).to(img.dtype)
        ctx_mask = text_mask
        pooled = self.text_adapter.pooled(ctx, text_mask) if c.text.pooled else None
        signal = self.conditioning(t, extra=pooled)
        n_text = text.shape[1]
        positions = token_positions(c.rope, n_text=n_text, grid=(1, *grid), device=x.device)
        if signal.tokens is not None:
            n_time = signal.tokens.shape[1]
            ctx = torch.cat([signal.tokens.to(img.dtype), ctx], dim=1)
            ctx_mask = torch.cat(
                [torch.ones(b, n_time, dtype=torch.bool, device=x.device), text_mask], dim=1
            )
            positions = torch.cat([extra_positions(n_time, device=x.device), positions])
        tables = self.rope(positions)

        n_ctx = ctx.shape[1]
        blocks = list(self.blocks)
        dual, single = blocks[: c.num_dual_blocks], blocks[c.num_dual_blocks :]
        for block in dual:
            ctx, img = block(ctx, img, signal, rope_tables=tables, txt_mask=ctx_mask)
        if single:
            seq = torch.cat([ctx, img], dim=1)
            img_mask = torch.ones(b, img.shape[1], dtype=torch.bool, device=x.device)
            mask = torch.cat([ctx_mask, img_mask], dim=1)
            for block in single:
                seq = block(seq, signal, rope_tables=tables, mask=mask)
            img = seq[:, n_ctx:]

        h = self.final_norm(img)
        if self.final_modulation is not None:
            shift, scale = self.final_modulation(signal).unbind(dim=1)
            h = modulate(h, shift, scale)
        out = self.final_proj(h)
        return unpatchify(out, grid=grid, patch_size=p).to(x.dtype)
