"""Per-token (frame, height, width) coordinates for a [text, image] sequence."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from k2_dit.config import RopeConfig


def _cell_centres(n: int, span: int) -> Tensor:
    # Centres of n unit cells laid out symmetrically in a box where `span` cells cover [-1, 1].
    return (2.0 * torch.arange(n, dtype=torch.float64) + 1.0 - n) / span


def token_positions(
    cfg: RopeConfig,
    *,
    n_text: int,
    grid: tuple[int, int, int],
    device: torch.device | str | None = None,
) -> Float[Tensor, "n 3"]:
    """Rotary coordinates of `n_text` text tokens followed by an (f, h, w) row-major image grid.

    `axial`, `partial`, `golden_gate`: text at (0, 0, 0), image cell (f, y, x) at (f, y, x).
    `mrope`: text token i at (i, i, i), image at (n_text + f, n_text + y, n_text + x).
    `normalized`: text at 0; height and width cell centres in a box whose longer side spans
    [-1, 1] (aspect ratio kept); frames span [-1, 1] on their own axis (one frame sits at 0);
    everything times `cfg.normalized_scale`.

    Args:
        cfg: rotary config; `kind` picks the layout.
        n_text: number of text tokens at the start of the sequence.
        grid: (frames, height, width) of the image token grid.
        device: where to build the positions.

    Returns:
        `[n_text + f * h * w, 3]` float32 positions.

    References:
        Krea 2 report, Architecture, "Positional encoding" (text RoPE indices at zero);
        Wang et al. 2024, Qwen2-VL, §2.1 (M-RoPE ids); Crowson et al. 2024, HDiT, and k-diffusion
        `make_axial_pos` (cell centres in [-1, 1]); Xiong 2025 (aspect-keeping bounding box).
    """
    f, h, w = grid
    if n_text < 0 or min(grid) < 1:
        raise ValueError(
            f"token_positions needs n_text >= 0 and a grid of positive sizes, got n_text={n_text}, "
            f"grid={grid}: pass (frames, height, width) in tokens, frames=1 for images"
        )
    if cfg.kind == "normalized":
        longer = max(h, w)
        axes = (_cell_centres(f, f), _cell_centres(h, longer), _cell_centres(w, longer))
        axes = tuple(a * cfg.normalized_scale for a in axes)
    else:
        offset = n_text if cfg.kind == "mrope" else 0
        axes = tuple(torch.arange(s, dtype=torch.float64) + offset for s in (f, h, w))
    image = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(f * h * w, 3)
    if cfg.kind == "mrope":
        text = torch.arange(n_text, dtype=torch.float64)[:, None].expand(n_text, 3)
    else:
        text = torch.zeros(n_text, 3, dtype=torch.float64)
    return torch.cat((text, image)).to(device=device, dtype=torch.float32)


def extra_positions(n: int, *, device: torch.device | str | None = None) -> Float[Tensor, "n 3"]:
    """Positions of extra tokens (e.g. in-context timestep tokens): all at 0, like text.

    Args:
        n: number of extra tokens.
        device: where to build the positions.

    Returns:
        `[n, 3]` float32 zeros.

    References:
        Krea 2 report, Architecture, "Positional encoding" (text RoPE indices at zero).
    """
    if n < 0:
        raise ValueError(f"extra_positions needs n >= 0, got {n}")
    return torch.zeros(n, 3, device=device)
