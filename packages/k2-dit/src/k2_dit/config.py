"""Frozen, keyword-only configs for the Krea 2 diffusion transformer.

Every architecture choice the report's Architecture section discusses is a switch here; the
defaults are the report's final choices (single stream, GQA with a sigmoid output gate,
RMSNorm(1 + w) with QK-norm, SwiGLU 4x, a shared timestep modulation with a per-block bias,
3D axial RoPE with text at index 0). Configs only validate; derived values are properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

NormKind = Literal["rmsnorm", "layernorm"]
MLPKind = Literal["swiglu", "gelu"]
AttentionKind = Literal["mha", "gqa", "mla"]
GateKind = Literal["none", "elementwise", "headwise"]
StreamKind = Literal["single", "dual", "hybrid"]
TimestepKind = Literal["shared_bias", "adaln_mlp", "in_context", "none"]
RopeKind = Literal["axial", "partial", "golden_gate", "mrope", "normalized"]
PosEmbedKind = Literal["none", "learned_sincos"]


class ConfigError(ValueError):
    """A config that cannot build a working model; the message names the fix."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _require_choice(name: str, value: object, kind: object) -> None:
    choices = get_args(kind)
    _require(value in choices, f"{name}={value!r} is not one of {choices}: pick one of them")


@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    """Self-attention: head layout, KV sharing, gating and QK-norm."""

    kind: AttentionKind = "gqa"
    """`mha` (one KV head per query head), `gqa` (shared KV heads), `mla` (low-rank KV)."""
    num_heads: int = 8
    """Query heads."""
    num_kv_heads: int = 2
    """KV heads for `gqa` (must divide `num_heads`); ignored by `mha` and `mla`."""
    gate: GateKind = "elementwise"
    """Sigmoid output gate after SDPA, before the output projection (Qiu et al. 2025, G1)."""
    qk_norm: bool = True
    """Normalise queries and keys per head (same norm kind as the block)."""
    kv_lora_rank: int = 0
    """`mla` only: width of the shared KV latent; 0 means `dim // 4`."""
    q_lora_rank: int = 0
    """`mla` only: width of the query latent; 0 means no query compression."""

    @property
    def kv_heads(self) -> int:
        """Number of distinct K/V heads actually computed."""
        return self.num_kv_heads if self.kind == "gqa" else self.num_heads

    def kv_rank(self, dim: int) -> int:
        """`mla` only: the resolved width of the shared KV latent c_kv."""
        return self.kv_lora_rank or dim // 4

    def validate(self, dim: int) -> None:
        _require_choice("attention.kind", self.kind, AttentionKind)
        _require_choice("attention.gate", self.gate, GateKind)
        _require(self.num_heads > 0, "attention.num_heads must be positive")
        _require(
            dim % self.num_heads == 0,
            f"dim={dim} is not divisible by attention.num_heads={self.num_heads}: "
            "pick a head count that divides the model width",
        )
        if self.kind == "gqa":
            _require(
                self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads == 0,
                f"attention.num_heads={self.num_heads} is not divisible by "
                f"attention.num_kv_heads={self.num_kv_heads}: choose num_kv_heads among "
                f"{[g for g in range(1, self.num_heads + 1) if self.num_heads % g == 0]}",
            )
        if self.kind == "mla":
            _require(
                self.kv_lora_rank >= 0 and self.q_lora_rank >= 0,
                "attention.kv_lora_rank and attention.q_lora_rank must be >= 0 (0 = default)",
            )
            _require(
                self.kv_rank(dim) > 0,
                f"dim={dim} gives an empty MLA KV latent (dim // 4 = 0): set attention.kv_lora_rank",
            )


@dataclass(frozen=True, kw_only=True)
class RopeConfig:
    """Rotary position embedding over (frame, height, width); text tokens sit at index 0."""

    kind: RopeKind = "axial"
    """`axial` 3D RoPE; `partial` rotates only `rotary_fraction` of each head; `golden_gate`
    uses per-head golden-ratio directions; `mrope` gives text tokens 1D positions (t=h=w=i) and
    image tokens follow; `normalized` uses resolution-independent coordinates in [-1, 1]."""
    axes_dims: tuple[int, int, int] | None = None
    """Head dims given to (frame, height, width). Must sum to the rotated head dim. None gives
    frame 1/8 of the rotated dims and splits the rest evenly over height and width (all even)."""
    theta: float = 10000.0
    """Base frequency."""
    rotary_fraction: float = 0.5
    """`partial` only: fraction of the head dim that is rotated (the first part)."""
    normalized_scale: float = 16.0
    """`normalized` only: coordinates in [-1, 1] are multiplied by this before the rotation."""
    zero_freq_fraction: float = 0.0
    """`golden_gate` only: fraction of frequencies set to exactly 0 (act like NoPE)."""

    def rotated_dim(self, head_dim: int) -> int:
        """How many dims of each head are rotated."""
        if self.kind == "partial":
            r = round(head_dim * self.rotary_fraction)
            return r - (r % 2)
        return head_dim

    def resolved_axes(self, head_dim: int) -> tuple[int, int, int]:
        """(frame, height, width) dims, each even, summing to `rotated_dim(head_dim)`."""
        rot = self.rotated_dim(head_dim)
        if self.axes_dims is not None:
            return self.axes_dims
        # Images have one frame, so frame dims never rotate there: give frame the smallest share
        # (1/8, FLUX.1's 16/56/56 at head_dim 128) and split the rest over height and width.
        frame = 2 * (rot // 16)
        hw = (rot - frame) // 2
        hw -= hw % 2
        return (rot - 2 * hw, hw, hw)

    def validate(self, head_dim: int) -> None:
        _require(head_dim % 2 == 0, f"head_dim={head_dim} must be even for RoPE")
        _require(0.0 < self.rotary_fraction <= 1.0, "rope.rotary_fraction must lie in (0, 1]")
        rot = self.rotated_dim(head_dim)
        if self.kind == "golden_gate":
            return
        axes = self.resolved_axes(head_dim)
        _require(
            all(a % 2 == 0 and a >= 0 for a in axes),
            f"rope.axes_dims={axes} must be non-negative even numbers",
        )
        _require(
            sum(axes) == rot,
            f"rope.axes_dims={axes} sum to {sum(axes)} but the rotated head dim is {rot} "
            f"(head_dim={head_dim}, kind={self.kind!r}): make the axes sum to {rot}",
        )


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    """How the DiT consumes frozen text-encoder hidden states."""

    encoder_dim: int = 4096
    """Hidden size of the frozen text encoder (Qwen3-VL 8B language model: 4096)."""
    num_layers: int = 37
    """Number of hidden states stacked per token (`output_hidden_states` gives layers + 1)."""
    aggregation: Literal["attention", "last"] = "attention"
    """`attention`: shallow attention over the layer axis per token (UniFusion-style);
    `last`: the last hidden state only (baseline)."""
    aggregation_heads: int = 4
    """Heads of the layer-axis attention."""
    refiner_layers: int = 2
    """Bidirectional transformer layers over tokens after aggregation (0 disables)."""
    max_tokens: int = 512
    """Longest text sequence the model accepts."""
    pooled: bool = False
    """Also add an MLP of the mean real text token to the timestep embedding that drives AdaLN
    (the pooled "vector" conditioning of SD3 and FLUX; not in the Krea 2 report). Gives small
    models a direct global path from the prompt; needs an AdaLN timestep mode."""


@dataclass(frozen=True, kw_only=True)
class DiTConfig:
    """The diffusion transformer."""

    in_channels: int = 128
    """Channels of the latent the model denoises (FLUX.2 VAE after 2x2 patchify: 128)."""
    patch_size: int = 1
    """Spatial patch size applied to the latent by the model's first linear layer."""
    dim: int = 1024
    """Model width."""
    depth: int = 16
    """Number of transformer blocks."""
    mlp: MLPKind = "swiglu"
    mlp_ratio: float = 4.0
    """Expansion; SwiGLU uses a parameter-matched hidden width (2/3 of ratio * dim)."""
    mlp_multiple_of: int = 64
    """Round the SwiGLU hidden width up to a multiple of this."""
    norm: NormKind = "rmsnorm"
    """`rmsnorm` is zero-centred: y = x / rms(x) * (1 + w), so weight decay pulls gains to 1."""
    norm_eps: float = 1e-6
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    rope: RopeConfig = field(default_factory=RopeConfig)
    streams: StreamKind = "single"
    """`single` shares weights between text and image; `dual` keeps separate weights with joint
    attention; `hybrid` is dual for the first third of the blocks and single after."""
    timestep: TimestepKind = "shared_bias"
    """`shared_bias`: one shared modulation MLP plus a per-block learnable bias (report's choice);
    `adaln_mlp`: a modulation MLP per block (baseline); `in_context`: timestep tokens, no AdaLN;
    `none`: no timestep input."""
    timestep_tokens: int = 8
    """`in_context` only: number of sinusoidal timestep tokens."""
    timestep_freq_dim: int = 256
    """Width of the sinusoidal timestep features."""
    pos_embed: PosEmbedKind = "none"
    """Optional absolute position embedding for image tokens, learned, started from 2D sin-cos
    values and resized bilinearly to other grids (helps tiny models converge)."""
    pos_embed_grid: int = 16
    """`learned_sincos` only: the grid side the table is stored at."""
    text: TextConfig = field(default_factory=TextConfig)

    def __post_init__(self) -> None:
        _require(self.dim > 0 and self.depth > 0, "dim and depth must be positive")
        _require(self.patch_size > 0, "patch_size must be positive")
        _require(self.in_channels > 0, "in_channels must be positive")
        _require(
            self.mlp_ratio > 0 and self.mlp_multiple_of > 0,
            "mlp_ratio and mlp_multiple_of must be positive",
        )
        _require(self.norm_eps > 0, "norm_eps must be positive")
        _require_choice("mlp", self.mlp, MLPKind)
        _require_choice("norm", self.norm, NormKind)
        _require_choice("streams", self.streams, StreamKind)
        _require_choice("timestep", self.timestep, TimestepKind)
        _require_choice("pos_embed", self.pos_embed, PosEmbedKind)
        _require_choice("rope.kind", self.rope.kind, RopeKind)
        self.attention.validate(self.dim)
        self.rope.validate(self.head_dim)
        _require(
            self.timestep_tokens > 0 or self.timestep != "in_context",
            "timestep='in_context' needs timestep_tokens >= 1",
        )
        _require(
            not self.text.pooled or self.adaln,
            f"text.pooled=True adds the prompt to the AdaLN signal, but timestep={self.timestep!r} "
            "has no AdaLN: use timestep='shared_bias' or 'adaln_mlp', or set text.pooled=False",
        )
        _require(
            self.timestep_freq_dim > 0 and self.timestep_freq_dim % 2 == 0,
            "timestep_freq_dim must be a positive even number (cos and sin halves)",
        )
        if self.pos_embed == "learned_sincos":
            _require(
                self.dim % 4 == 0,
                f"pos_embed='learned_sincos' needs dim divisible by 4 (2D sin-cos), got dim={self.dim}",
            )
            _require(self.pos_embed_grid > 0, "pos_embed_grid must be positive")

    @property
    def adaln(self) -> bool:
        """Whether blocks carry AdaLN shift/scale/gate modulation from the timestep."""
        return self.timestep in ("shared_bias", "adaln_mlp")

    @property
    def num_time_tokens(self) -> int:
        """Timestep tokens prepended to the sequence (0 unless `timestep='in_context'`)."""
        return self.timestep_tokens if self.timestep == "in_context" else 0

    @property
    def head_dim(self) -> int:
        return self.dim // self.attention.num_heads

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP; SwiGLU is parameter-matched to a GeLU MLP of `mlp_ratio`."""
        hidden = int(self.mlp_ratio * self.dim)
        if self.mlp == "swiglu":
            hidden = int(2 * hidden / 3)
            m = self.mlp_multiple_of
            hidden = m * ((hidden + m - 1) // m)
        return hidden

    @property
    def num_dual_blocks(self) -> int:
        """Blocks with separate text/image weights at the start of the network."""
        if self.streams == "dual":
            return self.depth
        if self.streams == "hybrid":
            return max(1, round(self.depth / 3))
        return 0

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.patch_size**2
