"""Stage configs and their presets (`tiny` for CPU in minutes, `smoke` for CI, `small` for a GPU)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from k2_data.filters import FilterThresholds
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
class ScaleSettings:
    """Which trainer runs the stages, and the report's scale-up pieces it uses.

    `simple`: the recipe's own single-process loop (AdamW per stage, the tiny preset).
    `fsdp2`: `k2_dit.distributed.train` (FSDP2 under torchrun or one process; one WSD
    schedule across stages; Muon or AdamW; float8 per stage; PMA), see `k2_recipes.scale`.
    """

    trainer: Literal["simple", "fsdp2"] = "simple"
    optimizer: Literal["adamw", "muon"] = "adamw"
    """Muon on hidden 2-D weights, AdamW on the rest (`k2_dit.train`), in either trainer."""
    float8: tuple[Literal["tensorwise", "rowwise", "none"], ...] = ()
    """fsdp2 only: one torchao recipe per stage with steps (the report: tensorwise at the
    lower, rowwise at the higher resolution); empty for none. GPU only (skipped on CPU)."""
    float8_min_features: int = 1024
    """Smallest linear width converted to float8."""
    pma_every: int = 0
    """fsdp2 only: PMA snapshot every this many stable-phase steps (0: off); the average of the
    last `pma_keep` is the evaluated model (the report uses PMA instead of an EMA copy)."""
    pma_keep: int = 4
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.trainer == "simple" and (self.float8 or self.pma_every):
            raise ValueError(
                "scale.float8 and scale.pma_every need scale.trainer='fsdp2' (the simple "
                "loop has neither)"
            )


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
    scale: ScaleSettings = field(default_factory=ScaleSettings)
    """Trainer and scale-up pieces (the small preset uses FSDP2, Muon, float8 and PMA)."""
    compile: bool = False
    """Train through `torch.compile(model)` (evaluation stays eager). Text is padded to one
    length per caption variant so each resolution and variant compiles once. Meant for GPUs:
    on the 2-core CPU the tiny model's 32 px step ran in 0.21 s instead of 0.27 s, but
    compiling took 64 s, as much as it saves in the tiny budget."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Training matmuls under bfloat16 autocast (`bf16`; weights, optimiser, loss and, on CPU,
    attention stay float32) or plain float32. On a CPU with AMX bfloat16 matmuls run ~6x
    faster; the tiny step gains less because elementwise work dominates it."""
    run_dir: str | None = None
    """Run directory; None gives runs/<command>-<preset>."""
    progress: bool = True


WORLD_THRESHOLDS = FilterThresholds(
    min_short_side=32,
    min_entropy=None,
    max_border_fraction=0.8,
)
"""CPU-filter thresholds for the synthetic world at 64 px (the photo defaults drop every scene).

Every clean scene is 1-3 flat shapes on a flat background: its RGB entropy is 1.5-3.7 bits
(the photo threshold of 4 would drop all of them), its short side is the render resolution,
and the background runs from each edge to the nearest object: at most 1 - 0.04 (margin) -
the smallest object's side, i.e. 0.74 with medium and large objects (0.80 with small
squares). So `min_entropy` is off, the short side only guards against thumbnails, and a flat
border is only a fault once it is wider than any clean background run. The other rules keep
their photo defaults."""


@dataclass(frozen=True, kw_only=True)
class FaultCounts:
    """How many faulty samples `k2 curate` injects into the shards, per kind.

    Each kind cycles through its variants (see `k2_recipes.curate.FAULT_VARIANTS`)."""

    near_duplicate: int = 300
    """Copies of clean samples: byte-exact, re-encoded at a lower quality, resized, slightly
    cropped, colour-jittered and recompressed."""
    flat_border: int = 100
    """A scene shrunk into a corner of a flat-colour canvas (flat over 85% of two sides)."""
    noise: int = 100
    """Pure noise (uniform or Gaussian RGB)."""
    corrupt: int = 100
    """Truncated JPEG, zero-byte file, or an HTML error page saved as .jpg."""

    def __post_init__(self) -> None:
        for name in ("near_duplicate", "flat_border", "noise", "corrupt"):
            if getattr(self, name) < 0:
                raise ValueError(f"FaultCounts.{name}={getattr(self, name)} must be >= 0")

    @property
    def total(self) -> int:
        return self.near_duplicate + self.flat_border + self.noise + self.corrupt


@dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    """Embeddings and hierarchical k-means of the kept samples (cluster balance in the report)."""

    leaf_clusters: int = 64
    """Clusters of the first level (lowered to a quarter of the kept samples when fewer)."""
    top_clusters: int = 8
    """Clusters of the top level (clusters of the leaf centroids)."""
    balanced_fraction: float = 0.5
    """Size of the balanced sample shown in the report, as a fraction of the kept samples."""
    embed_side: int = 16
    """Thumbnail side the pixel embedding is taken from."""
    embed_dim: int = 64
    """Dimension of the fixed random projection of the thumbnail."""

    def __post_init__(self) -> None:
        if not 1 <= self.top_clusters < self.leaf_clusters:
            raise ValueError(
                f"ClusterSettings needs 1 <= top_clusters < leaf_clusters, got "
                f"top_clusters={self.top_clusters}, leaf_clusters={self.leaf_clusters}"
            )
        if not 0.0 < self.balanced_fraction <= 1.0:
            raise ValueError(f"balanced_fraction={self.balanced_fraction} must be in (0, 1]")
        if self.embed_side < 2 or self.embed_dim < 1:
            raise ValueError(
                f"need embed_side >= 2 and embed_dim >= 1, got {self.embed_side}, {self.embed_dim}"
            )


@dataclass(frozen=True, kw_only=True)
class CurateConfig:
    """`k2 curate`: render the world to JPEG shards, inject faults, filter, dedup, cluster."""

    world: WorldSettings = field(default_factory=WorldSettings)
    """The world rendered; `train_scenes` clean scenes (split "train"). `k2 demo` uses the
    pretraining world instead, so the curated scenes are the ones pretraining would draw."""
    resolution: int = 64
    """Side of the rendered JPEGs (the filter thresholds assume 64)."""
    jpeg_quality: int = 90
    samples_per_shard: int = 1000
    faults: FaultCounts = field(default_factory=FaultCounts)
    thresholds: FilterThresholds = WORLD_THRESHOLDS
    phash_radius: int = 12
    """Near-duplicate phash radius (bits of 144; the report's setting)."""
    colorhash_radius: int = 4
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    workers: int = 2
    """Processes of the per-shard stage (render + inject, CPU tier, embedding)."""
    write_filtered_shards: bool = False
    """Also copy the kept samples byte for byte into `curate/filtered/*.tar` (one more read of
    every shard: about 3 s for `tiny` on the shared 2-core machine; the manifest and
    `curated.parquet` already say what is kept)."""
    seed: int = 0
    """Seed of the fault layout and of the faults' random parameters."""
    run_dir: str | None = None
    """Run directory; None gives runs/curate-<preset>."""

    def __post_init__(self) -> None:
        if self.resolution < 16:
            raise ValueError(f"CurateConfig.resolution={self.resolution} must be >= 16")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"CurateConfig.jpeg_quality={self.jpeg_quality} must be in 1..95")
        if self.samples_per_shard < 1 or self.workers < 1:
            raise ValueError(
                f"CurateConfig needs samples_per_shard >= 1 and workers >= 1, got "
                f"{self.samples_per_shard}, {self.workers}"
            )
        if self.world.train_scenes < 1:
            raise ValueError("CurateConfig.world.train_scenes must be >= 1")
        if self.phash_radius < 0 or self.colorhash_radius < 0:
            raise ValueError("phash_radius and colorhash_radius must be >= 0")


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """`k2 demo`: the whole pipeline available so far on the embedded synthetic world."""

    pretrain: PretrainConfig
    curate: CurateConfig = field(default_factory=CurateConfig)
    """Curation before pretraining; its `world` is replaced by `pretrain.world`."""
    run_curate: bool = True
    """Curate first and pretrain on the kept scenes (`--no-run-curate`: the scenes as drawn)."""
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
            # The mean text token also enters the AdaLN signal (SD3/FLUX "pooled" vector): a
            # direct path from the prompt to every block; on the world it lifted the GPU
            # sweep's score from 0.18 to 0.22 with medium prompts, 0.008 to 0.10 without.
            pooled=True,
        ),
    )


def _tiny() -> PretrainConfig:
    enc = TextEncoderSettings()
    return PretrainConfig(
        model=_tiny_model(enc),
        text_encoder=enc,
        # CPU budget: medium prompts only (they name exactly colour, shape, count and
        # position, at a third of a long caption's tokens, and they are what the evaluation
        # prompts; in the GPU sweeps mixing in long and short ones cost 0.12-0.17 of score
        # at this step count), and medium/large objects only (8-10 px at 32 px; small ones
        # are 6 px). Production presets draw mostly long captions, as the report does.
        # One background: with five, the tiny model spends its first hundreds of steps
        # estimating the unknown background level by averaging over image tokens, pushes its
        # attention off the text tokens (0.3% of the mass after training) and never reads the
        # prompt (docs/benchmarks.md, "Tiny demo quality"). Pass --pretrain.world.backgrounds
        # to train on all five.
        world=WorldSettings(
            caption_mix=(0.0, 1.0, 0.0), sizes=("medium", "large"), backgrounds=("white",)
        ),
        # Timestep shift grows with resolution (SD3 rule: x2 per doubling of the side); without
        # it the 32 px stage never trains at the noise levels where the prompt matters.
        # Muon on the hidden matrices (the report's optimiser) is what makes the CPU budget
        # enough: at the same 1,500 steps on one H200 it scored 0.53 (four seeds, LR 2e-3)
        # and 0.61 (LR 3e-3) against 0.15-0.25 for AdamW (docs/benchmarks.md). Steps fit the
        # 6-minute CPU budget (about 0.17 s per 16 px and 0.21 s per 32 px step under bf16
        # autocast on the 2-core machine); the score grows with 32 px steps, and on the GPU
        # trading them for 16 px steps lost score, so the 16 px stage is a short start. 1,350
        # rather than 1,425 steps at 32 px: this VM's speed varies by ~20% between runs, and
        # 1,425 took 303 s in one run and 362 s in another (score 0.634 either way; 1,350:
        # 309 s and 0.577 on the CPU, 0.54-0.64 over four GPU seeds).
        low_res=StageConfig(
            resolution=16, steps=100, batch_size=32, lr=3e-3, warmup_steps=20, shift=1.5
        ),
        high_res=StageConfig(
            resolution=32,
            steps=1350,
            batch_size=32,
            lr=3e-3,
            warmup_steps=20,
            decay_fraction=0.4,
            shift=3.0,
        ),
        scale=ScaleSettings(optimizer="muon"),
        # bf16 autocast: AMX matmuls, ~8% off the CPU step; scores matched fp32 on the GPU.
        precision="bf16",
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
        # The report's scale-up pieces through k2-dit's FSDP2 trainer (one GPU, or
        # `torchrun --nproc_per_node=N -m k2_recipes.cli pretrain --preset small`): one WSD
        # schedule over both stages, Muon on hidden matrices, float8 tensorwise at the low
        # and rowwise at the high resolution (384-wide layers are converted so the recipe
        # runs; at this width float8 is not expected to be faster, see docs/benchmarks.md),
        # torch.compile, and the PMA average of the last 4 stable-phase snapshots as the
        # evaluated model instead of an EMA copy.
        scale=ScaleSettings(
            trainer="fsdp2",
            optimizer="muon",
            float8=("tensorwise", "rowwise"),
            float8_min_features=384,
            pma_every=1000,
            pma_keep=4,
        ),
        compile=True,
    )


PresetName = Literal["tiny", "smoke", "small"]

PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    "tiny": _tiny(),
    "smoke": _smoke(),
    "small": _small(),
}
"""`tiny`: CPU in minutes; `smoke`: CI check in about a minute; `small`: one GPU."""

CURATE_PRESETS: dict[str, CurateConfig] = {
    # 500 samples per shard: 26 shards keep both workers busy to the end.
    "tiny": CurateConfig(world=PRETRAIN_PRESETS["tiny"].world, samples_per_shard=500),
    "smoke": CurateConfig(
        world=PRETRAIN_PRESETS["smoke"].world,
        samples_per_shard=170,
        faults=FaultCounts(near_duplicate=30, flat_border=10, noise=10, corrupt=12),
        cluster=ClusterSettings(leaf_clusters=16, top_clusters=4),
        write_filtered_shards=True,
        # In-process: starting the fork server (it imports torch through k2_data.synthetic's
        # webdataset import) costs more than the 662 samples take on one core.
        workers=1,
    ),
    "small": CurateConfig(
        world=PRETRAIN_PRESETS["small"].world,
        samples_per_shard=5000,
        faults=FaultCounts(near_duplicate=2400, flat_border=800, noise=800, corrupt=800),
        cluster=ClusterSettings(leaf_clusters=512, top_clusters=32),
        workers=8,
    ),
}
"""`k2 curate`: `tiny` curates the tiny pretraining world (12,000 scenes + 600 faults) on 2 CPU
cores in well under a minute, `smoke` the smoke world (600 + 62) in seconds."""

DEMO_PRESETS: dict[str, DemoConfig] = {
    name: DemoConfig(pretrain=cfg, curate=CURATE_PRESETS[name], posttrain=POSTTRAIN_PRESETS[name])
    for name, cfg in PRETRAIN_PRESETS.items()
}
