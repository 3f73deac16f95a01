"""Training FLOPs per sample (PaLM/torchtitan convention) and parameter accounting."""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from k2_dit.blocks import DualStreamBlock, RMSNorm
from k2_dit.conditioning import Modulation
from k2_dit.config import DiTConfig
from k2_dit.model._dit import DiT


@functools.lru_cache(maxsize=32)
def _meta_model(config: DiTConfig) -> DiT:
    # Meta tensors have shapes but no storage: a multi-billion-parameter config costs nothing.
    with torch.device("meta"):
        return DiT(config)


def _linear_weights(module: nn.Module) -> int:
    """Weight entries of the Linear layers applied per token (modulations excluded)."""
    skip = {id(p) for m in module.modules() if isinstance(m, Modulation) for p in m.parameters()}
    return sum(
        m.weight.numel()
        for m in module.modules()
        if isinstance(m, nn.Linear) and id(m.weight) not in skip
    )


def per_token_weights(config: DiTConfig) -> dict[str, int]:
    """Matmul weights applied once per token, split by the tokens they are applied to.

    Args:
        config: the architecture.

    Returns:
        {"image": weights on image tokens only (patch embed, image stream of dual blocks,
        final projection), "context": weights on context tokens only (text stream of dual
        blocks), "joint": weights on every token (single-stream blocks)}. Per-sample layers
        (timestep embedder, modulation MLPs and biases, timestep-token MLP) and the text
        adapter are not included.
    """
    model = _meta_model(config)
    image = _linear_weights(model.patch_embed) + _linear_weights(model.final_proj)
    context = joint = 0
    for block in model.blocks:
        if isinstance(block, DualStreamBlock):
            image += _linear_weights(block.img)
            context += _linear_weights(block.txt)
        else:
            joint += _linear_weights(block)
    return {"image": image, "context": context, "joint": joint}


@functools.lru_cache(maxsize=64)
def _text_adapter_forward_flops(config: DiTConfig, text_tokens: int) -> int:
    if text_tokens == 0:
        return 0
    adapter = _meta_model(config).text_adapter
    t = config.text
    with torch.device("meta"):
        hidden = torch.empty(1, text_tokens, t.num_layers, t.encoder_dim)
        mask = torch.ones(1, text_tokens, dtype=torch.bool)
    with FlopCounterMode(display=False) as counter:
        adapter(hidden, mask)
    return int(counter.get_total_flops())


def flops_per_sample(
    config: DiTConfig, *, image_tokens: int, text_tokens: int, training: bool = True
) -> int:
    """FLOPs of one sample through the DiT (forward, or forward + backward when training).

    F_train = 3·F_fwd with
        F_fwd = 2·(N_img·S_img + N_ctx·S_ctx + N_joint·S_tot) + 4·L·d_attn·S_tot² + F_text,
    (the last block of a pure dual network has only image queries: 4·d_attn·S_img·S_tot),
    where N are the per-token matmul weights of `per_token_weights` (dual-stream weights on
    their own tokens), S_ctx = text tokens + timestep tokens, S_tot = S_img + S_ctx, d_attn =
    H·d_h (GQA/MLA shrink K/V weights, not attention FLOPs), L the depth, and no causal
    halving. Per-sample layers (timestep embedder, modulation, timestep-token MLP) and the
    frozen text encoder are excluded. F_text, the trainable text adapter, is measured once with
    `FlopCounterMode` on meta tensors instead of modelled, because its layer-axis attention
    belongs to `k2_dit.text` and may change. Activation-checkpoint recompute is not counted.

    Args:
        config: the architecture.
        image_tokens: image tokens per sample ((h/p)·(w/p) of the latent).
        text_tokens: text tokens per sample (padded length, since padding is computed).
        training: forward + backward (3x) if True, forward only otherwise.

    Returns:
        FLOPs per sample (multiply-add = 2 FLOPs).

    References:
        Chowdhery et al. 2022, "PaLM", Appendix B (6N + 12·L·H·Q·T per token); torchtitan
        `get_num_flop_per_token`; research/dit.md §5.
    """
    if image_tokens < 1 or text_tokens < 0:
        raise ValueError(
            f"image_tokens={image_tokens} must be >= 1 and text_tokens={text_tokens} >= 0"
        )
    w = per_token_weights(config)
    s_ctx = text_tokens + config.num_time_tokens
    s_tot = image_tokens + s_ctx
    d_attn = config.attention.num_heads * config.head_dim
    # A pure dual network's last block has no context queries (SD3 context_pre_only).
    queries = [s_tot] * config.depth
    if config.num_dual_blocks == config.depth:
        queries[-1] = image_tokens
    forward = (
        2 * (w["image"] * image_tokens + w["context"] * s_ctx + w["joint"] * s_tot)
        + sum(4 * d_attn * s_q * s_tot for s_q in queries)
        + _text_adapter_forward_flops(config, text_tokens)
    )
    return 3 * forward if training else forward


_COMPONENTS = (
    "patch embed",
    "position embedding",
    "attention",
    "mlp",
    "norms",
    "modulation",
    "timestep embedder",
    "text adapter",
    "final",
)


def _component(name: str, owner: nn.Module) -> str:
    if name.startswith("text_adapter."):
        return "text adapter"
    if name.startswith("patch_embed."):
        return "patch embed"
    if name.startswith("pos_embed."):
        return "position embedding"
    if name.startswith(("conditioning.embedder.", "conditioning.tokens.")):
        return "timestep embedder"
    if ".modulation." in f".{name}" or name.startswith(
        ("conditioning.shared.", "final_modulation.")
    ):
        return "modulation"
    if isinstance(owner, (RMSNorm, nn.LayerNorm)):
        return "norms"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    if name.startswith("final_proj."):
        return "final"
    raise AssertionError(f"parameter {name!r} has no component: extend parameter_table")


def parameter_table(config: DiTConfig) -> list[dict[str, object]]:
    """Parameters per component, counted on the meta device (free for any size).

    Args:
        config: the architecture.

    Returns:
        One row per component: {"component", "parameters", "fraction"} (fraction of the total,
        text adapter included); components: patch embed, position embedding, attention (incl.
        gate and MLA projections), mlp, norms (pre-norms, QK-norms, MLA latent norms), modulation
        (shared MLP, per-block MLPs or bias tables, final-layer modulation), timestep embedder
        (or timestep-token MLP), text adapter, final.
    """
    model = _meta_model(config)
    counts = dict.fromkeys(_COMPONENTS, 0)
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            name = f"{module_name}.{pname}" if module_name else pname
            counts[_component(name, module)] += p.numel()
    total = sum(counts.values())
    return [{"component": k, "parameters": v, "fraction": v / total} for k, v in counts.items()]


def timestep_modulation_share(config: DiTConfig) -> dict[str, dict[str, int | float]]:
    """Share of the parameters spent on timestep modulation, per-block MLPs vs shared + bias.

    Builds `config` with `timestep="adaln_mlp"` (a modulation MLP in every block and stream)
    and with `timestep="shared_bias"` (one shared MLP plus per-block bias tables) and reports,
    for each, the modulation parameters and their fraction of the total with and without the
    text adapter. This checks the report's "per-block MLPs ... can account for 20-30% of the
    total parameter count".

    Args:
        config: the architecture (its own `timestep` is ignored).

    Returns:
        {mode: {"modulation", "total", "fraction", "total_without_text",
        "fraction_without_text"}} for mode in ("adaln_mlp", "shared_bias").

    References:
        Krea 2 report, Timestep conditioning; Chen et al. 2023 (PixArt-α), §2.3 (adaLN-single).
    """
    out: dict[str, dict[str, int | float]] = {}
    for mode in ("adaln_mlp", "shared_bias"):
        rows = {
            r["component"]: r["parameters"]
            for r in parameter_table(dataclasses.replace(config, timestep=mode))
        }
        total = sum(rows.values())
        mod = rows["modulation"]
        out[mode] = {
            "modulation": mod,
            "total": total,
            "fraction": mod / total,
            "total_without_text": total - rows["text adapter"],
            "fraction_without_text": mod / (total - rows["text adapter"]),
        }
    return out
