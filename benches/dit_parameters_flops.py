"""Parameter share of timestep modulation and FLOPs per sample for production-like DiT configs.

Checks the report's claim that per-block modulation MLPs are 20-30% of the parameters, and
compares `flops_per_sample` with torch's FlopCounterMode on a tiny config. Counted on the meta
device, so it runs on any machine in seconds:

    uv run python benches/dit_parameters_flops.py
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from k2_dit import AttentionConfig, DiT, DiTConfig, TextConfig, flops_per_sample
from k2_dit.model import timestep_modulation_share

PRODUCTION = DiTConfig(
    dim=3072,
    depth=32,
    attention=AttentionConfig(num_heads=24, num_kv_heads=8),
    text=TextConfig(encoder_dim=4096, num_layers=37),
)


def modulation_rows() -> list[tuple[str, str, float, float]]:
    rows = []
    for streams in ("single", "dual", "hybrid"):
        share = timestep_modulation_share(dataclasses.replace(PRODUCTION, streams=streams))
        for mode, s in share.items():
            rows.append((streams, mode, s["total"] / 1e9, 100 * s["fraction"]))
    return rows


def flops_check() -> tuple[int, int]:
    cfg = DiTConfig(
        in_channels=4,
        dim=64,
        depth=3,
        attention=AttentionConfig(num_heads=4, num_kv_heads=2),
        text=TextConfig(encoder_dim=32, num_layers=3, refiner_layers=1),
    )
    model = DiT(cfg)
    x, t = torch.randn(1, 4, 8, 8), torch.rand(1)
    text, mask = torch.randn(1, 10, 3, 32), torch.ones(1, 10, dtype=torch.bool)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, text, mask)
    formula = flops_per_sample(cfg, image_tokens=64, text_tokens=10, training=False)
    return formula, counter.get_total_flops()


def main() -> None:
    print("| streams | timestep | parameters (B) | modulation share |")
    print("|---|---|---:|---:|")
    for streams, mode, total, pct in modulation_rows():
        print(f"| {streams} | {mode} | {total:.2f} | {pct:.1f}% |")
    n_img = (1024 // 16) ** 2
    f = flops_per_sample(PRODUCTION, image_tokens=n_img, text_tokens=256, training=True)
    print(
        f"\ntraining FLOPs per 1024px sample (4096 image + 256 text tokens): {f / 1e12:.2f} TFLOP"
    )
    formula, counted = flops_check()
    print(
        f"tiny forward: formula {formula:,} vs FlopCounterMode {counted:,} "
        "(the counter also sees the per-sample timestep/modulation matmuls)"
    )


if __name__ == "__main__":
    main()
