"""DCT-II twice: as scipy.fftpack computes it (bit for bit), and as a small cosine matrix.

imagehash's phash thresholds DCT coefficients at their median. Coefficients that are equal
in exact arithmetic (flat or mirror-symmetric images) come out of any float DCT with
rounding noise of about 1e-12, and that noise decides the bits. Matching imagehash bit for
bit therefore means repeating scipy's arithmetic: ``scipy.fftpack.dct`` (type 2,
unnormalised) runs pocketfft's ``T_dcst23``: pre-twiddle the input, an unscaled
half-complex-to-real FFT, post-twiddle with ``cos(pi (k + 1) / (2 n))`` taken from
pocketfft's ``sincos_2pibyn`` table. numpy >= 2 ships the same pocketfft real FFT, so
``np.fft.irfft(..., norm="forward")`` reproduces the middle step exactly. scipy is not a
runtime dependency of k2-data; the tests compare against it.

References:
    Ahmed, Natarajan and Rao 1974, "Discrete cosine transform" (DCT-II);
    M. Reinecke, pocketfft (BSD-3-Clause), ``T_dcst23`` and ``sincos_2pibyn``.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
from jaxtyping import Float

_PI = Fraction("3.141592653589793238462643383279502884197")  # pocketfft's long double literal


def _round_significand(x: Fraction, bits: int) -> Fraction:
    """Round a positive rational to ``bits`` significant bits, ties to even (IEEE rounding)."""
    exp = x.numerator.bit_length() - x.denominator.bit_length()
    if x < Fraction(2) ** exp:
        exp -= 1
    scaled = x * Fraction(2) ** (bits - 1 - exp)
    q, r = divmod(scaled.numerator, scaled.denominator)
    if 2 * r > scaled.denominator or (2 * r == scaled.denominator and q % 2):
        q += 1
    return Fraction(q) / Fraction(2) ** (bits - 1 - exp)


def _sincos_2pibyn(n: int) -> list[tuple[float, float]]:
    """pocketfft's table of (cos, sin)(2 pi i / n) for i < n, with its exact rounding steps.

    The angle 0.25 pi / n is formed in x87 long double (64-bit significand) and rounded to
    double; each entry is then a product of two entries of short sub-tables filled by libm
    cos/sin per octant (Python's math module calls the same libm).
    """
    pi_ld = _round_significand(_PI, 64)
    ang = float(_round_significand(_round_significand(pi_ld / 4, 64) / n, 64))

    def calc(x: int) -> tuple[float, float]:
        x <<= 3
        flip_sin = x >= 4 * n  # lower half plane: mirror and negate sin
        if flip_sin:
            x = 8 * n - x
        if x < 2 * n:
            c, s = (
                (math.cos(x * ang), math.sin(x * ang))
                if x < n
                else (math.sin((2 * n - x) * ang), math.cos((2 * n - x) * ang))
            )
        else:
            x -= 2 * n
            c, s = (
                (-math.sin(x * ang), math.cos(x * ang))
                if x < n
                else (-math.cos((2 * n - x) * ang), math.sin((2 * n - x) * ang))
            )
        return (c, -s) if flip_sin else (c, s)

    nval = (n + 2) // 2
    shift = 1
    while (1 << shift) * (1 << shift) < nval:
        shift += 1
    mask = (1 << shift) - 1
    v1 = [(1.0, 0.0)] + [calc(i) for i in range(1, mask + 1)]
    v2 = [(1.0, 0.0)] + [calc(i * (mask + 1)) for i in range(1, (nval + mask) // (mask + 1))]
    table = []
    for idx in range(n):
        j = idx if 2 * idx <= n else n - idx
        (ar, ai), (br, bi) = v1[j & mask], v2[j >> shift]
        table.append((ar * br - ai * bi, ar * bi + ai * br if j == idx else -(ar * bi + ai * br)))
    return table


@functools.cache
def _twiddles(n: int) -> np.ndarray:
    """cos(pi (k + 1) / (2 n)) for k < n, exactly as pocketfft's DCT-II plan holds them."""
    table = _sincos_2pibyn(4 * n)
    return np.array([table[k + 1][0] for k in range(n)], dtype=np.float64)


def dct2_scipy(x: Float[np.ndarray, "..."], *, axis: int) -> Float[np.ndarray, "..."]:
    """Unnormalised DCT-II along one axis, bit-identical to ``scipy.fftpack.dct(x, axis=axis)``.

    y[k] = 2 sum_n x[n] cos(pi k (2 n + 1) / (2 N)), computed with pocketfft's algorithm
    (see the module docstring) so that rounding noise matches scipy's.

    Args:
        x: real input (converted to float64).
        axis: the transformed axis.

    Returns:
        float64 array of the same shape.
    """
    if np.lib.NumpyVersion(np.__version__) < "2.0.0":
        raise RuntimeError(
            "the imagehash-compatible DCT needs numpy >= 2 (its FFT is the pocketfft scipy "
            f"uses); found numpy {np.__version__}. Upgrade numpy or use the k2 phash mode."
        )
    c = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1).copy()
    n = c.shape[-1]
    c[..., 0] *= 2
    if n % 2 == 0:
        c[..., n - 1] *= 2
    odd = np.arange(1, n - 1, 2)
    upper, lower = c[..., odd + 1].copy(), c[..., odd].copy()
    c[..., odd + 1] = upper - lower  # pocketfft's MPINPLACE(c[k+1], c[k])
    c[..., odd] = lower + upper
    spectrum = np.zeros((*c.shape[:-1], n // 2 + 1), dtype=np.complex128)
    spectrum[..., 0] = c[..., 0]  # half-complex layout r0, r1, i1, r2, i2, ... (, r_{n/2})
    k = np.arange(1, (n - 1) // 2 + 1)
    spectrum[..., k] = c[..., 2 * k - 1] + 1j * c[..., 2 * k]
    if n % 2 == 0:
        spectrum[..., n // 2] = c[..., n - 1]
    r = np.fft.irfft(spectrum, n=n, axis=-1, norm="forward")  # unscaled inverse real FFT
    tw = _twiddles(n)
    out = r.copy()
    half = (n + 1) // 2
    k = np.arange(1, half)
    kc = n - k
    t1 = tw[k - 1] * r[..., kc] + tw[kc - 1] * r[..., k]
    t2 = tw[k - 1] * r[..., k] - tw[kc - 1] * r[..., kc]
    out[..., k] = 0.5 * (t1 + t2)
    out[..., kc] = 0.5 * (t1 - t2)
    if n % 2 == 0:
        out[..., half] = r[..., half] * tw[half - 1]
    return np.moveaxis(out, -1, axis)


@functools.cache
def dct2_matrix(n_out: int, n_in: int) -> Float[np.ndarray, "n_out n_in"]:
    """The first ``n_out`` rows of the unnormalised DCT-II matrix of size ``n_in``.

    M[k, n] = 2 cos(pi k (2 n + 1) / (2 n_in)), so ``M @ x`` equals scipy's ``dct(x)[:n_out]``
    up to rounding. Read-only and cached per size.

    Args:
        n_out: number of lowest frequencies kept.
        n_in: transform length.

    Returns:
        float64 (n_out, n_in) matrix.
    """
    k = np.arange(n_out, dtype=np.float64)[:, None]
    n = np.arange(n_in, dtype=np.float64)[None, :]
    m = 2.0 * np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * n_in))
    m.flags.writeable = False
    return m
