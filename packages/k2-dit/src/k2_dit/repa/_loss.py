"""The (i)REPA alignment loss: spatial z-scoring, grid resampling, negative cosine similarity."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor
from torch.nn import functional as F


def _check_grid(tokens: Tensor, grid: tuple[int, int], name: str) -> None:
    gh, gw = grid
    if gh <= 0 or gw <= 0:
        raise ValueError(f"{name} grid {grid} must have positive sides")
    if tokens.shape[1] != gh * gw:
        raise ValueError(
            f"{name} has {tokens.shape[1]} tokens but its grid {gh}x{gw} holds {gh * gw}: pass "
            f"the (rows, cols) token grid the tokens were laid out on (row-major)"
        )


def spatial_zscore(
    tokens: Float[Tensor, "b n e"], *, alpha: float = 0.6, eps: float = 1e-6
) -> Float[Tensor, "b n e"]:
    """iREPA's spatial normalisation of teacher patch tokens, per channel over the token axis.

    z_n = (x_n − α·mean_n(x)) / (std_n(x) + eps), where mean and std run over the n tokens
    of one image, separately per channel, and std is the unbiased (Bessel-corrected) one,
    as torch's `Tensor.std` in the iREPA code. α = 1 is a full z-score; α < 1 keeps part of
    the global (image-level) component that the mean carries, so alignment emphasises the
    spatial contrast between patches rather than the image-level feature.

    Args:
        tokens: teacher patch tokens, n >= 2.
        alpha: share of the token mean to subtract (iREPA's `--zscore-alpha`, default 0.6).
        eps: added to the std so constant channels do not divide by zero.

    Returns:
        Normalised tokens, same shape.

    References:
        Singh et al. 2025, "What matters for Representation Alignment: Global Information or
        Spatial Structure?" (iREPA, arXiv 2512.10794), spatial normalisation of the target
        (`spatial_zscore` in the official code).
    """
    if tokens.shape[1] < 2:
        raise ValueError(
            f"spatial_zscore needs at least 2 tokens per image for a std, got {tokens.shape[1]}"
        )
    mean = tokens.mean(dim=1, keepdim=True)
    std = tokens.std(dim=1, keepdim=True)
    return (tokens - alpha * mean) / (std + eps)


def resample_tokens(
    tokens: Float[Tensor, "b n e"], *, grid: tuple[int, int], size: tuple[int, int]
) -> Float[Tensor, "b m e"]:
    """Resize a row-major token grid to another grid by bilinear interpolation.

    Used when the teacher's patch grid differs from the DiT's token grid (e.g. DINOv2/14 on a
    224 px crop gives 16×16, a 2×2-patch DiT on a 512 px FLUX.2 latent gives 32×32). The
    resampling is `F.interpolate(mode="bilinear", align_corners=False)`: token centres are
    treated as pixel centres, so the grids cover the same image extent, which is what patch
    tokens of one image are. It preserves the grid average exactly only for integer upsampling;
    prefer resizing the *image* so the teacher lands on the student grid (`PatchTeacher` with
    `grid=`), and use this for cached features or encoders with a fixed input size.

    Args:
        tokens: [b, gh·gw, e], row-major.
        grid: (gh, gw) of `tokens`.
        size: target (rows, cols).

    Returns:
        [b, rows·cols, e], row-major; `tokens` itself when `size == grid`.
    """
    _check_grid(tokens, grid, "tokens")
    if tuple(size) == tuple(grid):
        return tokens
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError(f"target size {size} must have positive sides")
    b, _, e = tokens.shape
    image = tokens.transpose(1, 2).reshape(b, e, grid[0], grid[1])
    resized = F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False)
    return resized.flatten(2).transpose(1, 2)


def negative_cosine_similarity(
    projected: Float[Tensor, "b n e"], target: Float[Tensor, "b n e"]
) -> Float[Tensor, " b"]:
    """REPA's alignment loss: minus the patch-wise cosine similarity, averaged over patches.

    Args:
        projected: the projected student tokens h_φ(h_t).
        target: the (normalised) teacher tokens y*, same layout.

    Returns:
        −(1/N)·Σ_n ⟨ĥ_n, ŷ_n⟩ per sample, with ·̂ the L2-normalised vector, in [−1, 1].

    References:
        Yu et al. 2025, "Representation Alignment for Generation" (REPA, arXiv 2410.06940),
        Eq. 8 with sim = cosine similarity; `loss.py` of the official code.
    """
    cos = (F.normalize(projected, dim=-1) * F.normalize(target, dim=-1)).sum(dim=-1)
    return -cos.mean(dim=1)


def repa_loss(
    projected: Float[Tensor, "b n e"],
    teacher: Float[Tensor, "b m e"],
    *,
    grid: tuple[int, int],
    teacher_grid: tuple[int, int],
    zscore_alpha: float | None = 0.6,
    eps: float = 1e-6,
) -> Float[Tensor, " b"]:
    """Per-sample iREPA loss between projected DiT tokens and frozen teacher patch tokens.

    Steps: resample the teacher grid to the student grid (bilinear, `resample_tokens`) when
    they differ; z-score the teacher tokens over the student grid (`spatial_zscore`, skipped
    when `zscore_alpha` is None, which gives plain REPA); detach them (the teacher is a
    fixed target); return the negative patch-wise cosine similarity. Normalising after the
    resampling makes the statistics those of the tokens the loss actually compares.

    Args:
        projected: projector output on the student tokens, [b, gh·gw, e].
        teacher: teacher patch tokens (no CLS/register tokens), [b, th·tw, e].
        grid: the student token grid (gh, gw).
        teacher_grid: the teacher patch grid (th, tw).
        zscore_alpha: iREPA's α (0.6 default); None disables the normalisation (REPA).
        eps: std offset of the z-score.

    Returns:
        Loss per sample in [−1, 1]; the caller averages and multiplies by the schedule weight.

    References:
        Yu et al. 2025 (REPA), Eq. 8; Singh et al. 2025 (iREPA), §4 (conv projector and
        spatial normalisation); Krea 2 report, Pretraining (iREPA in the first 256 px epoch).
    """
    _check_grid(projected, grid, "projected")
    _check_grid(teacher, teacher_grid, "teacher")
    if teacher.shape[0] != projected.shape[0] or teacher.shape[2] != projected.shape[2]:
        raise ValueError(
            f"teacher tokens {tuple(teacher.shape)} do not match projected tokens "
            f"{tuple(projected.shape)} in batch or width: build the projector with "
            f"teacher_dim={teacher.shape[2]}"
        )
    # Statistics in at least float32: bf16 teacher tokens would make the std noisy.
    target = teacher.detach().to(torch.promote_types(teacher.dtype, torch.float32))
    target = resample_tokens(target, grid=teacher_grid, size=grid)
    if zscore_alpha is not None:
        target = spatial_zscore(target, alpha=zscore_alpha, eps=eps)
    return negative_cosine_similarity(projected, target.to(projected.dtype))
