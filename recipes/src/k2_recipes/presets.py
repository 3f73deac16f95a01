"""Stage configs and their presets (`tiny` for CPU in minutes, `smoke` for CI, `small` for a GPU)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from k2_dit.config import AttentionConfig, DiTConfig, RopeConfig, TextConfig
from k2_recipes.posttrain.presets import POSTTRAIN_PRESETS, PosttrainConfig


@dataclass(frozen=True, kw_only=True)
class WorldSettings:
    """Which part of the synthetic world the stage trains and evaluates on."""

    train_scenes: int = 12_000
    """Scenes rendered for training (each with long, medium and short captions)."""
    min_objects: int = 1
    max_objects: int = 2
    styles: tuple[str, ...] = ("flat",)
    """Rendering styles in the training mix (see `k2_data.synthetic.STYLES`)."""
    sizes: tuple[str, ...] = ("small", "medium", "large")
    """Object sizes (see `k2_data.synthetic.SIZES`)."""
    backgrounds: tuple[str, ...] = ("white", "light grey", "grey", "dark grey", "black")
    """Background colours in the mix (see `k2_data.synthetic.BACKGROUNDS`)."""
    caption_mix: tuple[float, float, float] = (0.7, 0.15, 0.15)
    """Probability that a batch trains on the (long, medium, short) captions; the report trains
    mostly on long captions with short and medium mixed in."""
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class TextEncoderSettings:
    """The frozen text encoder. `path=None` builds the tiny encoder (tokenizer trained locally on
    the world's captions, a random-weight Qwen3 language model from a config)."""

    path: str | None = None
    """Local directory with a transformers text encoder (e.g. Qwen3-VL); None for the tiny one."""
    hidden_size: int = 64
    num_layers: int = 4
    num_heads: int = 4
    vocab_size: int = 256
    max_tokens: int = 64


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """One resolution stage of progressive pretraining (skipped when `steps == 0`)."""

    resolution: int
    steps: int
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50
    decay_fraction: float = 0.0
    """Fraction of the stage spent decaying the LR (warmup-stable-decay)."""
    shift: float = 1.0
    """Training timestep shift for this resolution (shifted logit-normal)."""
    timestep_std: float = 1.0
    """Standard deviation of the logit-normal before the shift (wider covers more of [0, 1])."""


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """Held-out evaluation: sample prompts, score with the world's verifier."""

    num_prompts: int = 256
    caption: Literal["long", "medium", "short"] = "long"
    """Which caption variant of each held-out scene is the prompt."""
    resolution: int = 32
    steps: int = 24
    guidance_scale: float = 4.0
    shift: float = 1.0
    """Inference shift; the report keeps it constant across resolutions."""
    batch_size: int = 128
    grid_size: int = 8
    """Samples shown per side of the PNG grid."""


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """`k2 pretrain`: render the world, encode captions once, train the DiT in resolution stages."""

    model: DiTConfig
    text_encoder: TextEncoderSettings = field(default_factory=TextEncoderSettings)
    world: WorldSettings = field(default_factory=WorldSettings)
    low_res: StageConfig = field(default_factory=lambda: StageConfig(resolution=16, steps=0))
    high_res: StageConfig = field(default_factory=lambda: StageConfig(resolution=32, steps=0))
    eval: EvalSettings = field(default_factory=EvalSettings)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    cfg_dropout: float = 0.1
    """Probability of training on an empty prompt (enables classifier-free guidance)."""
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    """torch intra-op threads (None: torch's default)."""
    run_dir: str | None = None
    """Run directory; None gives runs/<command>-<preset>."""
    progress: bool = True


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """`k2 demo`: the whole pipeline available so far on the embedded synthetic world."""

    pretrain: PretrainConfig
    posttrain: PosttrainConfig = field(default_factory=lambda: POSTTRAIN_PRESETS["tiny"])
    """SFT -> preference pairs -> STPO / Flow-DPO -> GRPO after pretraining."""
    run_posttrain: bool = True
    """Run the post-training stages (`--no-run-posttrain` stops after pretraining)."""
    run_dir: str | None = None


def _tiny_model(encoder: TextEncoderSettings) -> DiTConfig:
    return DiTConfig(
        in_channels=3,
        patch_size=4,
        dim=128,
        depth=4,
        attention=AttentionConfig(kind="gqa", num_heads=4, num_kv_heads=2),
        rope=RopeConfig(kind="axial", axes_dims=(0, 16, 16)),
        pos_embed="learned_sincos",
        pos_embed_grid=8,
        text=TextConfig(
            encoder_dim=encoder.hidden_size,
            num_layers=encoder.num_layers + 1,
            aggregation_heads=4,
            refiner_layers=1,
            max_tokens=encoder.max_tokens,
        ),
    )


def _tiny() -> PretrainConfig:
    enc = TextEncoderSettings()
    return PretrainConfig(
        model=_tiny_model(enc),
        text_encoder=enc,
        # CPU budget: mostly medium prompts (they name exactly colour, shape, count and
        # position, at a third of a long caption's tokens), with long and short mixed in.
        # and medium/large objects only (8-10 px at 32 px; small ones are 6 px).
        # One background: with five, the tiny model spends its first hundreds of steps
        # estimating the unknown background level by averaging over image tokens, pushes its
        # attention off the text tokens (0.3% of the mass after training) and never reads the
        # prompt (docs/benchmarks.md, "Tiny demo quality"). Pass --pretrain.world.backgrounds
        # to train on all five.
        world=WorldSettings(
            caption_mix=(0.2, 0.6, 0.2), sizes=("medium", "large"), backgrounds=("white",)
        ),
        # Timestep shift grows with resolution (SD3 rule: x2 per doubling of the side); without
        # it the 32 px stage never trains at the noise levels where the prompt matters.
        low_res=StageConfig(
            resolution=16, steps=400, batch_size=32, lr=2e-3, warmup_steps=50, shift=1.5
        ),
        high_res=StageConfig(
            resolution=32,
            steps=1400,
            batch_size=32,
            lr=2e-3,
            warmup_steps=20,
            decay_fraction=0.4,
            shift=3.0,
        ),
        eval=EvalSettings(shift=3.0, caption="medium"),
    )


def _smoke() -> PretrainConfig:
    tiny = _tiny()
    return replace(
        tiny,
        world=replace(tiny.world, train_scenes=600),
        low_res=replace(tiny.low_res, steps=40),
        high_res=replace(tiny.high_res, steps=40, warmup_steps=5),
        eval=replace(tiny.eval, num_prompts=32, steps=8, batch_size=32, grid_size=4),
    )


def _small() -> PretrainConfig:
    enc = TextEncoderSettings(hidden_size=256, num_layers=6, num_heads=8, vocab_size=512)
    model = replace(
        _tiny_model(enc),
        dim=384,
        depth=12,
        attention=AttentionConfig(kind="gqa", num_heads=6, num_kv_heads=2),
        rope=RopeConfig(kind="axial", axes_dims=(0, 32, 32)),
        pos_embed_grid=16,
        text=replace(_tiny_model(enc).text, refiner_layers=2),
    )
    return PretrainConfig(
        model=model,
        text_encoder=enc,
        world=WorldSettings(train_scenes=100_000, max_objects=3, styles=("flat",)),
        low_res=StageConfig(resolution=32, steps=20_000, batch_size=256, lr=1e-3, shift=3.0),
        high_res=StageConfig(
            resolution=64, steps=20_000, batch_size=128, lr=1e-3, decay_fraction=0.2, shift=6.0
        ),
        eval=EvalSettings(num_prompts=512, resolution=64, steps=32, shift=3.0),
        device="cuda",
    )


PresetName = Literal["tiny", "smoke", "small"]

PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    "tiny": _tiny(),
    "smoke": _smoke(),
    "small": _small(),
}
"""`tiny`: CPU in minutes; `smoke`: CI check in about a minute; `small`: one GPU."""

DEMO_PRESETS: dict[str, DemoConfig] = {
    name: DemoConfig(pretrain=cfg, posttrain=POSTTRAIN_PRESETS[name])
    for name, cfg in PRETRAIN_PRESETS.items()
}
