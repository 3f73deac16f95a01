"""One stochastic sampling step of a flow model with the Gaussian log-density of its transition.

Time convention (same as `k2_dit.flow` and as the diffusers `sigma` used by Flow-GRPO):
t = 1 is noise, t = 0 is data, x_t = (1 - t)·x0 + t·ε, v = ε - x0, and sampling runs from
t to t_next < t, so dt = t_next - t < 0. Flow-GRPO's σ ("sigmas" in its code) *is* this t,
so its equations carry over without a change of variable.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

SdeKind = Literal["flow_sde", "cps"]
LogProbForm = Literal["gaussian", "unnormalized"]
Time = float | Float[Tensor, ""] | Float[Tensor, " b"]

_KINDS = ("flow_sde", "cps")
_FORMS = ("gaussian", "unnormalized")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _check_kind(kind: str, noise_level: float, *, allow_zero: bool) -> None:
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r} must be one of {_KINDS}")
    is_num = isinstance(noise_level, int | float) and math.isfinite(noise_level)
    if not (is_num and (noise_level >= 0 if allow_zero else noise_level > 0)):
        need = ">= 0" if allow_zero else "> 0 (an SDE step needs noise; use an ODE step for 0)"
        raise ValueError(f"noise_level={noise_level!r} must be a finite number {need}")
    if kind == "cps" and noise_level > 1:
        raise ValueError(
            f"noise_level={noise_level!r}: CPS takes η in [0, 1] (s = t_next·sin(ηπ/2)); "
            "Flow-GRPO uses 0.8"
        )


def _check_times(t: Time, t_next: Time) -> None:
    # Only Python numbers are range-checked; checking tensors would force a host sync.
    if isinstance(t, int | float) and not 0 < t <= 1:
        raise ValueError(f"t={t!r} must lie in (0, 1] (1 is noise, 0 is data)")
    if isinstance(t_next, int | float) and not 0 <= t_next < 1:
        raise ValueError(f"t_next={t_next!r} must lie in [0, 1)")
    if isinstance(t, int | float) and isinstance(t_next, int | float) and not t_next < t:
        raise ValueError(f"t_next={t_next!r} must be < t={t!r}: sampling runs from noise to data")


def _column(t: Time, like: Tensor, dtype: torch.dtype) -> Tensor:
    """A time as a [b, 1, ..., 1] tensor in `dtype`, broadcastable against `like`."""
    tt = torch.as_tensor(t, dtype=dtype, device=like.device)
    ones = [1] * (like.ndim - 1)
    return tt.reshape(-1, *ones).expand(like.shape[0], *ones)


def sde_coefficients(
    t: Tensor, t_next: Tensor, *, noise_level: float, kind: SdeKind
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The step's affine form: mean = c_x·x + c_v·v, std, and the paper's σ_t.

    Args:
        t: current times (any broadcastable shape), floating.
        t_next: next times, < t.
        noise_level: a (flow_sde) or η (cps).
        kind: "flow_sde" or "cps".

    Returns:
        (c_x, c_v, std, sigma): sigma is σ_t = a·sqrt(t / (1 - t)) for flow_sde (the
        diffusion coefficient, std = σ_t·sqrt(|dt|)) and s = t_next·sin(ηπ/2) for cps
        (where std = s).

    References:
        Liu et al. 2025, Flow-GRPO (arXiv 2505.05470), Eq. 9 and its code
        `sd3_sde_with_logprob.py`; Wang & Yu 2025, CPS (arXiv 2509.05952).
    """
    dt = t_next - t
    if kind == "flow_sde":
        # σ_t diverges at t = 1; as in the reference code, 1 - t is replaced there by
        # 1 - t_next (the second grid time).
        denom = 1 - torch.where(t == 1, t_next, t)
        sigma = noise_level * torch.sqrt(t / denom)
        var_ratio = sigma.square() / (2 * t)
        # x + [v + σ²/(2t)·(x + (1 - t)·v)]·dt, grouped by x and v.
        c_x = 1 + var_ratio * dt
        c_v = (1 + var_ratio * (1 - t)) * dt
        return c_x, c_v, sigma * torch.sqrt(-dt), sigma
    # CPS: x0_hat = x - t·v and x1_hat = x + (1 - t)·v are recombined with coefficients
    # (1 - t_next) and sqrt(t_next² - s²) = t_next·cos(ηπ/2) (the cosine form avoids a
    # negative radicand from rounding), plus fresh noise of std s.
    angle = noise_level * math.pi / 2
    s = t_next * math.sin(angle)
    keep = t_next * math.cos(angle)
    c_x = (1 - t_next) + keep
    c_v = -t * (1 - t_next) + (1 - t) * keep
    return c_x, c_v, s, s


def sde_mean_std(
    x: Float[Tensor, " b *rest"],
    v: Float[Tensor, " b *rest"],
    t: Time,
    t_next: Time,
    *,
    noise_level: float,
    kind: SdeKind = "flow_sde",
) -> tuple[Float[Tensor, " b *rest"], Float[Tensor, " b"]]:
    """Mean and standard deviation of the Gaussian transition x_t -> x_{t_next}.

    flow_sde: mean = x + [v + σ_t²/(2t)·(x + (1 - t)·v)]·dt, std = σ_t·sqrt(-dt),
    σ_t = a·sqrt(t / (1 - t)). cps: mean = (1 - t_next)·x̂0 + sqrt(t_next² - s²)·x̂1,
    x̂0 = x - t·v, x̂1 = x + (1 - t)·v, std = s = t_next·sin(ηπ/2). noise_level = 0 gives
    the Euler ODE step x + v·dt for both kinds (std 0).

    Args:
        x: state at time t.
        v: velocity prediction at (x, t).
        t: current time: a float, a 0-d tensor or one per sample.
        t_next: next time (< t), same forms.
        noise_level: a >= 0 (flow_sde, Flow-GRPO default 0.7) or η in [0, 1] (cps, 0.8).
        kind: "flow_sde" or "cps".

    Returns:
        (mean, std): mean in float32 (float64 if the inputs are), std one value per sample.

    References:
        Flow-GRPO (arXiv 2505.05470), Eq. 9-10; CPS (arXiv 2509.05952), Eq. 9.
    """
    _check_kind(kind, noise_level, allow_zero=True)
    _check_times(t, t_next)
    dtype = torch.promote_types(torch.promote_types(x.dtype, v.dtype), torch.float32)
    tc, tn = _column(t, x, dtype), _column(t_next, x, dtype)
    c_x, c_v, std, _ = sde_coefficients(tc, tn, noise_level=noise_level, kind=kind)
    mean = c_x * x.to(dtype) + c_v * v.to(dtype)
    return mean, std.reshape(x.shape[0])


def _log_prob(sample: Tensor, mean: Tensor, std: Tensor, form: LogProbForm) -> Tensor:
    sq = (sample - mean).square()
    if form == "gaussian":
        s = std.reshape(-1, *([1] * (mean.ndim - 1)))
        lp = -sq / (2 * s.square()) - torch.log(s) - _HALF_LOG_2PI
    else:
        lp = -sq
    # Mean, not sum, over the latent: keeps log-ratios O(1) whatever the resolution.
    return lp.reshape(lp.shape[0], -1).mean(dim=1)


def sde_step(
    x: Float[Tensor, " b *rest"],
    v: Float[Tensor, " b *rest"],
    t: Time,
    t_next: Time,
    *,
    noise_level: float,
    kind: SdeKind = "flow_sde",
    log_prob_form: LogProbForm | None = None,
    noise: Float[Tensor, " b *rest"] | None = None,
    generator: torch.Generator | None = None,
    prev_sample: Float[Tensor, " b *rest"] | None = None,
) -> tuple[
    Float[Tensor, " b *rest"], Float[Tensor, " b"], Float[Tensor, " b *rest"], Float[Tensor, " b"]
]:
    """Draw x_{t_next} from the SDE transition (or score a given one) with its log-probability.

    log p = mean over non-batch dims of [-(x' - μ)²/(2·std²) - log std - ½·log 2π]
    ("gaussian"), or of -(x' - μ)² ("unnormalized", the form Flow-GRPO's CPS code uses).
    Everything is computed in float32 at least, so bf16 inputs cannot overflow; the
    sample x' is detached inside the log-prob, so gradients reach only μ (through v).

    Args:
        x: state at time t.
        v: velocity at (x, t); gradients flow from the log-prob into v.
        t: current time (float, 0-d tensor or [b]).
        t_next: next time, < t.
        noise_level: a > 0 (flow_sde) or η in (0, 1] (cps).
        kind: "flow_sde" (Flow-GRPO) or "cps" (coefficient-preserving sampling).
        log_prob_form: "gaussian" or "unnormalized"; None picks the reference choice,
            "gaussian" for flow_sde and "unnormalized" for cps.
        noise: the standard normal draw to use (else drawn with `generator`).
        generator: source of the noise when `noise` is None.
        prev_sample: score this x_{t_next} instead of drawing one (the new policy's
            log-prob of a stored transition at training time).

    Returns:
        (x_next, log_prob, mean, std): x_next in the float32-or-wider compute dtype.

    References:
        Flow-GRPO (arXiv 2505.05470), Eq. 9-10 and `sde_step_with_logprob`; CPS
        (arXiv 2509.05952), Eq. 9.
    """
    _check_kind(kind, noise_level, allow_zero=False)
    form = log_prob_form or ("gaussian" if kind == "flow_sde" else "unnormalized")
    if form not in _FORMS:
        raise ValueError(f"log_prob_form={log_prob_form!r} must be one of {_FORMS} or None")
    if prev_sample is not None and noise is not None:
        raise ValueError("pass either `noise` (to draw x_next) or `prev_sample` (to score it)")
    for name, other in (("v", v), ("noise", noise), ("prev_sample", prev_sample)):
        if other is not None and other.shape != x.shape:
            raise ValueError(f"{name} has shape {tuple(other.shape)}, x has {tuple(x.shape)}")
    mean, std = sde_mean_std(x, v, t, t_next, noise_level=noise_level, kind=kind)
    if prev_sample is None:
        if noise is None:
            device = generator.device if generator is not None else x.device
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=mean.dtype)
        s = std.reshape(-1, *([1] * (x.ndim - 1)))
        x_next = mean + s * noise.to(device=mean.device, dtype=mean.dtype)
    else:
        x_next = prev_sample.to(mean.dtype)
    return x_next, _log_prob(x_next.detach(), mean, std, form), mean, std
