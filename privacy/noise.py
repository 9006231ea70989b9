"""Noise for every DP mechanism of the project: exact-in-spirit samplers on a cryptographic random source.

Random source
-------------
:mod:`privacy.noise_source` (re-exported here): an AES-256-CTR keystream under a key from
:func:`os.urandom`, and the test hook :func:`fixed_noise_source`.

Gaussian noise without the floating-point leak
----------------------------------------------
Adding a textbook floating-point Gaussian sample to a float vector leaks the low bits of the input:
the set of floats the sum can take depends on the input, and an observer can tell neighbouring
inputs apart from one release (Mironov 2012, "On significance of the least significant bits for
differential privacy", CCS; Jin, McMurtry, Rubinstein & Ohrimenko 2022, "Are we there yet?
Timing and floating-point attacks on differential privacy systems", IEEE S&P, arXiv 2112.05307,
which broke Opacus' and others' samplers). Opacus' ``secure_mode`` sums several float draws
(Holohan & Braghin 2021, "Secure random sampling in differential privacy", ESORICS, arXiv
2107.10138), which raises the attack's cost without removing the leak. Here the release never
depends on the low bits of the input (:func:`add_gaussian_noise`):

1. **Lattice.** ``g = 2^⌊log2(σ / (2^20 · √max(d, 1)))⌋`` (a power of two, :func:`lattice_spacing`),
   so ``s = σ/g ∈ [2^20 √d, 2^21 √d)``.
2. **Snap** the input to the lattice: ``n = round(x / g)`` (exact in float64: ``g`` is a power of
   two). Everything below ``g/2`` in ``x`` is discarded before any noise is drawn.
3. **Integer noise** ``k ~ N_ℤ(0, s²)`` per coordinate, the discrete Gaussian (Canonne, Kamath &
   Steinke 2020, "The discrete Gaussian for differential privacy", NeurIPS, arXiv 2004.00010,
   Algorithm 3: discrete Laplace proposal with scale ``t = ⌊s⌋ + 1``, accepted with probability
   ``exp(-(|y| - s²/t)² / (2s²))``).
4. **Release** ``(n + k) · g`` — computed exactly in float64 (``|n + k| < 2^53`` is checked), so the
   output is a lattice point that depends on ``x`` only through ``n``. Casting it to float32
   afterwards (the model's dtype) is post-processing of that lattice point.

Guarantee and its precise cost. Snapping moves each coordinate by at most ``g/2``, so two inputs at
L2 distance ``Δ`` give lattice points at distance at most ``Δ + g√d``
(:func:`lattice_sensitivity_inflation`); by the choice of ``g`` the inflation is at most
``σ · 2^-20``. The product of discrete Gaussians with integer shift ``μ`` satisfies
``D_α(N_ℤ(μ, s²) ‖ N_ℤ(0, s²)) ≤ α‖μ‖²/(2s²)`` — the continuous Gaussian's Rényi bound (Canonne et
al. 2020, privacy of the multivariate discrete Gaussian) — so the mechanism with noise
multiplier ``z = σ/Δ`` is at least as private as the continuous Gaussian mechanism with noise
multiplier ``z' = σ/(Δ + g√d) ≥ z / (1 + z · 2^-20)``: a relative change below ``1e-6 · z``
(below 1e-4 for every ``z ≤ 100``), far below the accountants' own numerical error, so the
mechanisms keep reporting ``z``. For Poisson-subsampled steps the accountants' (Mironov, Talwar &
Zhang 2019) analysis is of the continuous Gaussian; with ``s ≥ 2^20`` the discrete Gaussian's
normaliser equals ``s√(2π)`` up to a relative ``2e^{-2π²s²}`` (Poisson summation), i.e. its pmf is
the continuous density sampled on the lattice, and the Rényi sums of the subsampled mixtures
equal the continuous integrals to the same (vanishing) error.

Limits, stated honestly:

* The samplers compute acceptance probabilities and logarithms in float64 (not the paper's exact
  rational arithmetic). Every coin compares fresh words with ``p`` at 128-bit resolution
  (:meth:`NoiseSource.bernoulli`); the discrete Laplace proposal is an exact uniform integer below
  a power of two ``M <= t/16``, kept with probability ``exp(-R/t) >= e^-1/16``, plus ``M`` times a
  geometric number obtained by inverting a full 64-bit uniform. Working through the rounding of
  each step, every value ``|k| <= 10 s`` has a probability within a relative 1e-12 of the ideal
  one, so the privacy loss of any output there is off by at most ~1e-12; the ideal mass beyond
  ``10 s`` is below 1e-22 per coordinate, which bounds the δ the far tail can cost (1e-9 for
  10^13 coordinate draws). No output has probability 0 under one input and > 0 under a
  neighbour, which is what the floating-point attack exploits.
* Timing: every sampler is rejection sampling in vectorised rounds. The number of rounds and the
  per-round work depend only on the acceptance coins, which are independent of the accepted
  values, and never on the input ``x`` — the timing channel of Jin et al. (a running time that
  depends on the sampled value) is closed up to the data-dependence of float ``log``/``exp``
  latency in numpy's vector loops.
* Poisson samples (Skellam noise of distributed DP) use inverse transform sampling below a mean of
  10 and Hörmann's transformed rejection (PTRS; Hörmann 1993, "The transformed rejection method
  for generating Poisson random variables", Insurance: Mathematics and Economics 12) above, both in
  float64 on keystream uniforms; the samples are integers added to integers, so no float leak
  arises, and the log-pmf is evaluated with a Stirling series in a cancellation-free form.
* DP runs are **not reproducible from the experiment seed** any more: the noise key comes from
  :func:`os.urandom` in every process. Only tests can fix it (below).

"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from privacy.errors import InvalidInputError, InvalidPrivacyConfigError
from privacy.noise_source import (
    KEY_BITS,
    CryptoNoiseSource,
    FixedNoiseSource,
    NoiseSource,
    fixed_noise_source,
    noise_source,
)
from privacy.noise_source import check_size as _check_size
from privacy.noise_source import resolve_noise_source as _resolve

__all__ = [
    "KEY_BITS",
    "LATTICE_PRECISION_BITS",
    "CryptoNoiseSource",
    "FixedNoiseSource",
    "NoiseSource",
    "add_gaussian_noise",
    "add_gaussian_noise_to_tensors",
    "fixed_noise_source",
    "lattice_sensitivity_inflation",
    "lattice_spacing",
    "noise_source",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
    "sample_poisson",
    "sample_skellam",
]

#: ``s = σ/g >= 2^LATTICE_PRECISION_BITS · √d``: the lattice is this many bits finer than σ/√d.
LATTICE_PRECISION_BITS = 20

_COIN_SCALE = 2.0**64 - 2048.0  # the largest float64 below 2^64
_BLOCK_SHIFT = 4  # discrete Laplace blocks M = 2^(⌊log2 t⌋ - 4): R is kept with prob >= e^-1/16
_ROUND = 1 << 14  # proposals per vectorised round: the temporaries stay in cache
_MAX_EXACT = 2.0**53
#: Largest σ/g and Poisson mean the samplers accept (int64 arithmetic stays exact far beyond).
_MAX_SCALE = 2.0**52


def _check_sigma(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidPrivacyConfigError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        raise InvalidPrivacyConfigError(f"{name} must be finite and > 0, got {value!r}")
    return v


# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Rejection sampling in vectorised rounds
# --------------------------------------------------------------------------------------------------


def _fill(n: int, propose: Callable[[int], tuple[np.ndarray, np.ndarray]], acceptance: float) -> np.ndarray:
    """Draw rounds of ``propose(m) -> (values, accepted)`` until ``n`` values are accepted.

    ``values`` may be float64 arrays holding integers (exact below 2^53); they are stored as int64.
    The accepted proposals of i.i.d. rounds are i.i.d. from the target, so taking the first ``n``
    is exact; the number of rounds depends only on the acceptance coins.
    """
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        need = n - filled
        m = min(int(need / acceptance * 1.05) + 16, _ROUND)
        values, accepted = propose(m)
        got = values[accepted][:need]
        out[filled : filled + got.size] = got
        filled += got.size
    return out


def _coin_exp(x: np.ndarray, source: NoiseSource) -> np.ndarray:
    """Coins with ``P(True) = exp(-x)`` for ``x >= 0`` (the fast path of :meth:`NoiseSource.bernoulli`).

    A word ``w`` is compared with ``h = ⌊exp(-x)·(2^64 - 2048)⌋``; on a tie (probability 2^-64) a
    second word settles the fractional part, so ``P(True) = exp(-x)`` within a relative 2^-52
    (float64 rounding and the ``2^64 - 2048`` scale) plus an absolute 2^-128.
    """
    scaled = np.negative(x)
    np.exp(scaled, out=scaled)
    scaled *= _COIN_SCALE
    hi = scaled.astype(np.uint64)  # truncation = floor for these non-negative values
    w = source.words(size=int(x.size))
    out = w < hi
    tie = w == hi
    if np.any(tie):
        frac = scaled[tie] - hi[tie].astype(np.float64)
        lo = (np.clip(frac, 0.0, 1.0) * _COIN_SCALE).astype(np.uint64)
        out[tie] = source.words(size=int(np.count_nonzero(tie))) < lo
    return out


def _discrete_laplace_proposal(
    t: int, m: int, source: NoiseSource, extra_log_acceptance: Callable[[np.ndarray], np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` proposals of the discrete Laplace ``P(y) ∝ exp(-|y|/t)`` with their acceptance mask.

    ``|y| = Q·M + R`` with ``M = 2^max(0, ⌊log2 t⌋ - 4)`` (so ``M <= t/16``): ``R`` uniform in
    ``[0, M)`` (exact, low bits of a word), to be kept with probability ``exp(-R/t) >= e^-1/16``;
    the sign is the same word's top bit, with ``(-, 0)`` rejected so that 0 is not counted twice;
    ``Q`` geometric with
    ``P(Q >= q) = exp(-qM/t)`` by inverting ``U = (w + 1)·2^-64`` of a second word (full 64-bit
    resolution where ``U`` is small). ``extra_log_acceptance(|y|)`` (``>= 0``), if given, is a
    further rejection step of the caller; both are settled by one coin with probability
    ``exp(-R/t - extra)`` (two independent coins accept together with the product probability).
    """
    bits = max(0, int(t).bit_length() - 1 - _BLOCK_SHIFT)
    big_m = 1 << bits
    w_r = source.words(size=m)
    negative = w_r.view(np.int64) < 0
    x = (w_r & np.uint64(big_m - 1)).view(np.int64).astype(np.float64)  # R, exact below 2^53
    magnitude = source.words(size=m).astype(np.float64)
    magnitude += 1.0
    magnitude *= 2.0**-64
    np.log(magnitude, out=magnitude)
    magnitude *= -(float(t) / big_m)
    np.floor(magnitude, out=magnitude)  # Q
    magnitude *= big_m
    magnitude += x  # |y| = Q·M + R, an integer held exactly in float64
    x *= 1.0 / float(t)
    if extra_log_acceptance is not None:
        x += extra_log_acceptance(magnitude)
    keep = _coin_exp(x, source)
    keep &= ~(negative & (magnitude == 0.0))
    np.negative(magnitude, out=magnitude, where=negative)
    return magnitude, keep


def sample_discrete_laplace(*, scale: int, size: int, source: NoiseSource | None = None) -> np.ndarray:
    """The discrete Laplace law ``P(y) ∝ exp(-|y|/t)`` on ℤ (the proposal of Canonne et al. 2020).

    Args:
        scale: ``t``, an int in ``[1, 2^52]``.
        size: Number of samples.
        source: Random source (default :func:`noise_source`).

    Returns:
        int64 samples.

    Raises:
        InvalidPrivacyConfigError: If ``scale`` is out of range.
        InvalidInputError: If ``size`` or ``source`` is invalid.
    """
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | np.integer)
        or not 1 <= int(scale) <= _MAX_SCALE
    ):
        raise InvalidPrivacyConfigError(f"scale must be an int in [1, 2^52], got {scale!r}")
    n = _check_size(size)
    src = _resolve(source)
    t = int(scale)
    return _fill(n, lambda m: _discrete_laplace_proposal(t, m, src, None), acceptance=0.9)


def sample_discrete_gaussian(*, sigma: float, size: int, source: NoiseSource | None = None) -> np.ndarray:
    """The discrete Gaussian ``N_ℤ(0, σ²)``: ``P(k) ∝ exp(-k²/(2σ²))``, ``k ∈ ℤ``.

    Canonne, Kamath & Steinke (2020), Algorithm 3: discrete Laplace proposal with ``t = ⌊σ⌋ + 1``,
    accepted with probability ``exp(-(|y| - σ²/t)² / (2σ²))``; all coins from ``source``. See the
    module docstring for the precision of the float64 coins.

    Args:
        sigma: ``σ`` in ``(0, 2^52)``.
        size: Number of samples.
        source: Random source (default :func:`noise_source`).

    Returns:
        int64 samples.

    Raises:
        InvalidPrivacyConfigError: If ``sigma`` is not finite and positive or too large.
        InvalidInputError: If ``size`` or ``source`` is invalid.
    """
    s = _check_sigma("sigma", sigma)
    if s >= _MAX_SCALE:
        raise InvalidPrivacyConfigError(f"sigma must be < 2^52, got {s!r}")
    n = _check_size(size)
    src = _resolve(source)
    t = math.floor(s) + 1
    shift = s * s / t
    inv_two_var = 1.0 / (2.0 * s * s)

    def gaussian_rejection(magnitude: np.ndarray) -> np.ndarray:
        dev = np.abs(magnitude)
        dev -= shift
        dev *= dev
        dev *= inv_two_var
        return dev

    # one round accepts ~0.74 of its proposals for large sigma (~0.97 x ~0.76), ~0.6 for small
    return _fill(n, lambda m: _discrete_laplace_proposal(t, m, src, gaussian_rejection), acceptance=0.6)


# --------------------------------------------------------------------------------------------------
# Poisson and Skellam
# --------------------------------------------------------------------------------------------------

_SMALL_POISSON = 10.0
_LGAMMA_SMALL = np.array([math.lgamma(k + 1.0) for k in range(10)])
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _poisson_log_pmf(k: np.ndarray, lam: float) -> np.ndarray:
    """``log P(K = k)`` for ``K ~ Poisson(lam)``, ``k >= 0``, without cancellation for large ``lam``.

    For ``k >= 10``: Stirling's series for ``log k!`` to the ``k^-7`` term (error < 1e-12), written
    as ``(k - λ) - k·log1p((k - λ)/λ) - ½log(2πk) - r(k)``.
    """
    kf = k.astype(np.float64)
    out = np.empty_like(kf)
    small = k < 10
    if np.any(small):
        ks = k[small]
        out[small] = -lam + kf[small] * math.log(lam) - _LGAMMA_SMALL[ks]
    big = ~small
    if np.any(big):
        kb = kf[big]
        inv = 1.0 / kb
        inv2 = inv * inv
        series = inv * (1.0 / 12 - inv2 * (1.0 / 360 - inv2 * (1.0 / 1260 - inv2 / 1680)))
        delta = kb - lam
        out[big] = delta - kb * np.log1p(delta / lam) - 0.5 * np.log(kb) - _HALF_LOG_2PI - series
    return out


def sample_poisson(*, lam: float, size: int, source: NoiseSource | None = None) -> np.ndarray:
    """Poisson(``lam``) samples from the noise source.

    ``lam < 10``: inversion of a 53-bit uniform through the CDF table (tail below 1e-20 cut).
    ``lam >= 10``: Hörmann's PTRS (1993) in vectorised rejection rounds, with the log-pmf of
    :func:`_poisson_log_pmf`.

    Args:
        lam: Mean in ``(0, 2^52)``.
        size: Number of samples.
        source: Random source (default :func:`noise_source`).

    Returns:
        int64 samples.

    Raises:
        InvalidPrivacyConfigError: If ``lam`` is not finite, positive and below 2^52.
        InvalidInputError: If ``size`` or ``source`` is invalid.
    """
    lam = _check_sigma("lam", lam)
    if lam >= _MAX_SCALE:
        raise InvalidPrivacyConfigError(f"lam must be < 2^52, got {lam!r}")
    n = _check_size(size)
    src = _resolve(source)
    if lam < _SMALL_POISSON:
        top = 80
        ks = np.arange(top + 1)
        pmf = np.exp(-lam + ks * math.log(lam) - np.array([math.lgamma(k + 1.0) for k in ks]))
        cdf = np.cumsum(pmf)
        u = src.uniform(size=n) * cdf[-1]
        return np.minimum(np.searchsorted(cdf, u, side="right"), top).astype(np.int64)
    slam = math.sqrt(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    log_inv_alpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2.0)

    def propose(m: int) -> tuple[np.ndarray, np.ndarray]:
        u = src.uniform(size=m) - 0.5
        v = src.uniform_open0(size=m)
        us = 0.5 - np.abs(u)
        valid = us > 0.0
        us_safe = np.where(valid, us, 0.5)
        kf = np.floor((2.0 * a / us_safe + b) * u + lam + 0.43)
        valid &= kf >= 0.0
        k = np.where(valid, kf, 0.0).astype(np.int64)
        quick = valid & (us_safe >= 0.07) & (v <= vr)
        hopeless = (us_safe < 0.013) & (v > us_safe)
        lhs = np.log(v) + log_inv_alpha - np.log(a / (us_safe * us_safe) + b)
        slow = valid & ~quick & ~hopeless & (lhs <= _poisson_log_pmf(k, lam))
        return k, quick | slow

    return _fill(n, propose, acceptance=0.85)


def sample_skellam(*, variance: float, size: int, source: NoiseSource | None = None) -> np.ndarray:
    """Symmetric Skellam noise: ``Poisson(v/2) - Poisson(v/2)`` (Agarwal, Kairouz & Liu 2021).

    Args:
        variance: ``v`` in ``(0, 2^53)``.
        size: Number of samples.
        source: Random source (default :func:`noise_source`).

    Returns:
        int64 samples.

    Raises:
        InvalidPrivacyConfigError: If the variance is invalid.
        InvalidInputError: If ``size`` or ``source`` is invalid.
    """
    lam = _check_sigma("variance", variance) / 2.0
    n = _check_size(size)
    src = _resolve(source)
    return sample_poisson(lam=lam, size=n, source=src) - sample_poisson(lam=lam, size=n, source=src)


# --------------------------------------------------------------------------------------------------
# The Gaussian mechanism on a lattice
# --------------------------------------------------------------------------------------------------


def lattice_spacing(*, sigma: float, dim: int) -> float:
    """The lattice step ``g = 2^⌊log2(σ / (2^20 √max(d, 1)))⌋`` of :func:`add_gaussian_noise`.

    Args:
        sigma: Noise standard deviation ``σ > 0``.
        dim: Dimension ``d >= 0`` of the released vector.

    Returns:
        ``g`` (a power of two), with ``σ/g ∈ [2^20 √d, 2^21 √d)``.

    Raises:
        InvalidPrivacyConfigError: If ``sigma`` is invalid.
        InvalidInputError: If ``dim`` is invalid.
    """
    s = _check_sigma("sigma", sigma)
    d = _check_size(dim)
    exponent = math.floor(math.log2(s / (2.0**LATTICE_PRECISION_BITS * math.sqrt(max(d, 1)))))
    g = math.ldexp(1.0, exponent)
    # guard log2 rounding at exact powers of two
    while s / g >= 2.0 ** (LATTICE_PRECISION_BITS + 1) * math.sqrt(max(d, 1)):
        g *= 2.0
    while s / g < 2.0**LATTICE_PRECISION_BITS * math.sqrt(max(d, 1)):
        g /= 2.0
    return g


def lattice_sensitivity_inflation(*, sigma: float, dim: int) -> float:
    """How much snapping to the lattice can add to an L2 sensitivity: ``g·√d`` (``<= σ·2^-20``).

    Two inputs at L2 distance ``Δ`` are snapped to lattice points at distance ``<= Δ + g√d``.

    Args:
        sigma: Noise standard deviation.
        dim: Dimension of the released vector.

    Returns:
        ``g·√d``.
    """
    return lattice_spacing(sigma=sigma, dim=dim) * math.sqrt(_check_size(dim))


def add_gaussian_noise(*, values: np.ndarray, sigma: float, source: NoiseSource | None = None) -> np.ndarray:
    """Release ``values + N(0, σ² I)`` without the floating-point leak: snap, add ``N_ℤ``, rescale.

    ``n = round(values/g)``, ``k ~ N_ℤ(0, (σ/g)²)`` per coordinate, result ``(n + k)·g`` (exact
    float64), with ``g`` = :func:`lattice_spacing` ``(σ, d)``. The result is a lattice point that
    depends on ``values`` only through ``n``. The noise has variance ``σ²`` up to a relative
    ``2e^{-2π²·2^40}`` (Canonne et al. 2020); the sensitivity grows by at most
    :func:`lattice_sensitivity_inflation` ``<= σ·2^-20`` (see the module docstring).

    Args:
        values: Finite float array (any shape; not modified).
        sigma: Noise standard deviation ``σ > 0``.
        source: Random source (default :func:`noise_source`).

    Returns:
        A new float64 array of ``values``' shape.

    Raises:
        InvalidInputError: If ``values`` is not a finite numeric array or is so large relative to
            ``g`` that the lattice coordinates exceed 2^52.
        InvalidPrivacyConfigError: If ``sigma`` is invalid.
    """
    arr = np.asarray(values)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"values must be a numeric array, got dtype {arr.dtype}")
    s = _check_sigma("sigma", sigma)
    src = _resolve(source)
    lattice = np.array(arr, dtype=np.float64)  # a copy: the input is never modified
    if not np.all(np.isfinite(lattice)):
        raise InvalidInputError("values contains NaN or inf")
    g = lattice_spacing(sigma=s, dim=int(lattice.size))
    lattice *= 1.0 / g  # exact: g is a power of two
    np.rint(lattice, out=lattice)
    if lattice.size and max(float(lattice.max()), -float(lattice.min())) >= 2.0**52:
        raise InvalidInputError(
            f"values are too large for noise std {s:g}: |x|/g reaches 2^52 (g = {g:g}); "
            "the update is not clipped or sigma is tiny"
        )
    lattice += sample_discrete_gaussian(sigma=s / g, size=int(lattice.size), source=src).reshape(
        lattice.shape
    )
    lattice *= g  # exact: an integer below 2^53 times a power of two
    return lattice


def add_gaussian_noise_to_tensors(
    *, tensors: Sequence[torch.Tensor], sigma: float, source: NoiseSource | None = None
) -> list[torch.Tensor]:
    """:func:`add_gaussian_noise` on several tensors treated as one vector (one lattice for all).

    Args:
        tensors: Float tensors (any devices; not modified).
        sigma: Noise standard deviation ``σ > 0``.
        source: Random source (default :func:`noise_source`).

    Returns:
        Noisy tensors with each input's shape, dtype and device (the float64 lattice point cast to
        the dtype: post-processing).

    Raises:
        InvalidInputError: If a tensor is not floating point or not finite.
        InvalidPrivacyConfigError: If ``sigma`` is invalid.
    """
    items = list(tensors)
    for i, t in enumerate(items):
        if not isinstance(t, torch.Tensor) or not torch.is_floating_point(t):
            raise InvalidInputError(f"tensors[{i}] must be a floating-point torch tensor")
    if not items:
        return []
    flat = torch.cat([t.detach().reshape(-1).to(device="cpu", dtype=torch.float64) for t in items])
    noisy = torch.from_numpy(add_gaussian_noise(values=flat.numpy(), sigma=sigma, source=source))
    out = []
    offset = 0
    for t in items:
        n = t.numel()
        out.append(noisy[offset : offset + n].reshape(t.shape).to(device=t.device, dtype=t.dtype))
        offset += n
    return out
