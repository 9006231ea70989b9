"""RDP of the distributed discrete Gaussian and Skellam mechanisms (integer noise under SecAgg).

All quantities here are in *integer units*, i.e. after the client scaled its (rotated, clipped)
vector by 1/γ and rounded it: sensitivities Δ₂, Δ₁ bound the L2/L1 norm of one client's integer
vector, and noise parameters are those of the integer noise.

Distributed discrete Gaussian (DDG) — Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian
Mechanism for Federated Learning with Secure Aggregation" (ICML 2021, arXiv 2102.06387), Theorem 1 /
Proposition 14: when ``n`` clients each add independent N_ℤ(0, σ̄²) noise per coordinate
(σ̄ >= 1/2), the sum satisfies, for every α >= 1 and every integer Δ with ‖Δ‖₂ <= Δ₂, ‖Δ‖₁ <= Δ₁,

    ε(α) = min{ α s₂²/2 + τ d,  α (s₂² + 2 s₁ τ + τ² d)/2,  α (s₂ + √d τ)²/2 }

with ``s₂ = Δ₂/(√n σ̄)``, ``s₁ = Δ₁/(√n σ̄)`` and ``τ = 10 Σ_{k=1}^{n-1} exp(-2π² σ̄² k/(k+1))``.
τ is negligible only when σ̄ >~ 1.5; for n = 1 it is 0 and the bound is the discrete Gaussian's
``α Δ₂²/(2σ̄²)`` (Canonne, Kamath & Steinke 2020, arXiv 2004.00010).

Skellam — Agarwal, Kairouz & Liu, "The Skellam Mechanism for Differentially Private Federated
Learning" (NeurIPS 2021, arXiv 2110.04995), Theorem 3.5 / Corollary 3.6: with symmetric Skellam
noise of total variance μ per coordinate (a sum of independent Skellam shares is Skellam, so there is
no τ term), for integer α > 1,

    ε(α) <= α Δ₂²/(2μ) + min{ ((2α - 1) Δ₂² + 6 Δ₁)/(4 μ²),  3 Δ₁/(2μ) }.

Fractional orders use the value at ⌈α⌉ (Rényi divergence is non-decreasing in α).

The noise that counts is the noise of the clients whose inputs reached the sum: pass the number of
*surviving* clients (after SecAgg dropouts), never the planned number.

Conditional randomised rounding (Kairouz et al. 2021, Theorem 1 / Proposition 22): a vector of norm
<= c/γ in d dimensions, rounded stochastically and resampled until its norm is at most

    Δ₂ = min{ c/γ + √d,  sqrt(c²/γ² + d/4 + sqrt(2 ln(1/β)) (c/γ + √d/2)) },

is accepted with probability >= 1 - β per attempt; an integer vector has ‖v‖₁ <= ‖v‖₂ min(√d, ‖v‖₂).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from privacy.analysis._checks import check_finite_nonneg, check_int, check_orders, check_positive
from privacy.analysis.subsampling import poisson_subsampled_rdp
from privacy.errors import InvalidPrivacyConfigError

__all__ = [
    "DDG_MIN_LOCAL_STDDEV",
    "DISTRIBUTED_MECHANISMS",
    "ddg_rdp",
    "ddg_tau",
    "discrete_gaussian_variance",
    "rounded_l1_norm_bound",
    "rounded_l2_norm_bound",
    "sampled_ddg_rdp",
    "sampled_distributed_rdp",
    "sampled_skellam_rdp",
    "skellam_rdp",
]

#: Distributed integer mechanisms: the distributed discrete Gaussian and Skellam.
DISTRIBUTED_MECHANISMS: tuple[str, ...] = ("ddg", "skellam")

#: Kairouz et al. (2021), Theorem 1 requires each client's discrete Gaussian σ̄ >= 1/2.
DDG_MIN_LOCAL_STDDEV = 0.5


def ddg_tau(*, local_stddev: float, num_clients: int) -> float:
    """The τ term of Kairouz et al. (2021), Thm. 1: ``10 Σ_{k=1}^{n-1} exp(-2π² σ̄² k/(k+1))``.

    Args:
        local_stddev: σ̄, the per-client discrete Gaussian scale in integer units (>= 1/2).
        num_clients: n, the number of clients whose noise is in the sum (>= 1).

    Returns:
        τ (0 for a single client).

    Raises:
        InvalidPrivacyConfigError: σ̄ < 1/2 or n < 1.
    """
    sigma = check_positive("local_stddev", local_stddev)
    if sigma < DDG_MIN_LOCAL_STDDEV:
        raise InvalidPrivacyConfigError(
            f"local_stddev must be >= {DDG_MIN_LOCAL_STDDEV} (Kairouz et al. 2021, Thm. 1), got {sigma}"
        )
    n = check_int("num_clients", num_clients, minimum=1)
    if n == 1:
        return 0.0
    k = np.arange(1, n, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1.0))))


def rounded_l2_norm_bound(*, scaled_l2_norm: float, dim: int, beta: float) -> float:
    """Δ₂ after conditional randomised rounding (Kairouz et al. 2021, Thm. 1).

    Args:
        scaled_l2_norm: c/γ, the L2 norm bound of the vector before rounding (integer units).
        dim: d, the dimension of the rounded vector (after padding).
        beta: β in [0, 1); β = 0 means no conditioning and gives the deterministic ``c/γ + √d``.

    Returns:
        Δ₂.

    Raises:
        InvalidPrivacyConfigError: invalid arguments.
    """
    c = check_finite_nonneg("scaled_l2_norm", scaled_l2_norm)
    d = check_int("dim", dim, minimum=1)
    b = check_finite_nonneg("beta", beta)
    if b >= 1:
        raise InvalidPrivacyConfigError(f"beta must be in [0, 1), got {beta}")
    bound_1 = c + math.sqrt(d)
    if b == 0:
        return bound_1
    bound_2 = math.sqrt(c**2 + d / 4.0 + math.sqrt(2.0 * math.log(1.0 / b)) * (c + math.sqrt(d) / 2.0))
    return min(bound_1, bound_2)


def rounded_l1_norm_bound(*, l2_bound: float, dim: int) -> float:
    """Δ₁ for an integer vector of L2 norm <= Δ₂ in d dimensions: ``Δ₂ · min(√d, Δ₂)``.

    Args:
        l2_bound: Δ₂.
        dim: d.

    Returns:
        Δ₁.

    Raises:
        InvalidPrivacyConfigError: invalid arguments.
    """
    l2 = check_finite_nonneg("l2_bound", l2_bound)
    d = check_int("dim", dim, minimum=1)
    return l2 * min(math.sqrt(d), l2)


def _sensitivities(l2_sensitivity: float, l1_sensitivity: float | None, dim: int) -> tuple[float, float]:
    l2 = check_finite_nonneg("l2_sensitivity", l2_sensitivity)
    if l1_sensitivity is None:
        l1 = rounded_l1_norm_bound(l2_bound=l2, dim=dim)
    else:
        l1 = check_finite_nonneg("l1_sensitivity", l1_sensitivity)
    return l2, l1


def ddg_rdp(
    *,
    orders: Sequence[float] | np.ndarray,
    l2_sensitivity: float,
    local_stddev: float,
    num_clients: int,
    dim: int,
    l1_sensitivity: float | None = None,
) -> np.ndarray:
    """RDP of one release of the distributed discrete Gaussian (Kairouz et al. 2021, Prop. 14).

    Args:
        orders: RDP orders α > 1.
        l2_sensitivity: Δ₂ in integer units (after rounding).
        local_stddev: σ̄, each client's discrete Gaussian scale in integer units (>= 1/2).
        num_clients: n, the number of clients whose noise actually reached the sum (survivors).
        dim: d, the number of coordinates (after padding).
        l1_sensitivity: Δ₁ in integer units; defaults to ``Δ₂ · min(√d, Δ₂)``.

    Returns:
        Float64 array of RDP values (one release), one per order.

    Raises:
        InvalidPrivacyConfigError: invalid arguments (including σ̄ < 1/2).
    """
    orders_arr = check_orders(orders)
    d = check_int("dim", dim, minimum=1)
    n = check_int("num_clients", num_clients, minimum=1)
    l2, l1 = _sensitivities(l2_sensitivity, l1_sensitivity, d)
    tau = ddg_tau(local_stddev=local_stddev, num_clients=n)
    scale = math.sqrt(n) * float(local_stddev)
    s2, s1 = l2 / scale, l1 / scale
    a = orders_arr
    term_1 = a * s2**2 / 2.0 + tau * d
    term_2 = a * (s2**2 + 2.0 * s1 * tau + tau**2 * d) / 2.0
    term_3 = a * (s2 + math.sqrt(d) * tau) ** 2 / 2.0
    return np.minimum(np.minimum(term_1, term_2), term_3)


def skellam_rdp(
    *,
    orders: Sequence[float] | np.ndarray,
    l2_sensitivity: float,
    total_variance: float,
    dim: int,
    l1_sensitivity: float | None = None,
) -> np.ndarray:
    """RDP of one release of the (distributed) Skellam mechanism (Agarwal et al. 2021, Thm. 3.5).

    Args:
        orders: RDP orders α > 1 (fractional orders are evaluated at ⌈α⌉).
        l2_sensitivity: Δ₂ in integer units.
        total_variance: μ, the per-coordinate variance of the Skellam noise in the sum, i.e. the sum
            of the surviving clients' variances (integer units).
        dim: d (only used for the default Δ₁).
        l1_sensitivity: Δ₁ in integer units; defaults to ``Δ₂ · min(√d, Δ₂)``.

    Returns:
        Float64 array of RDP values (one release), one per order.

    Raises:
        InvalidPrivacyConfigError: invalid arguments.
    """
    orders_arr = check_orders(orders)
    d = check_int("dim", dim, minimum=1)
    mu = check_positive("total_variance", total_variance)
    l2, l1 = _sensitivities(l2_sensitivity, l1_sensitivity, d)
    a = np.ceil(orders_arr)
    main = a * l2**2 / (2.0 * mu)
    extra = np.minimum(((2.0 * a - 1.0) * l2**2 + 6.0 * l1) / (4.0 * mu**2), 3.0 * l1 / (2.0 * mu))
    return main + extra


def _client_sampled(
    release_rdp: Callable[..., np.ndarray],
    *,
    orders: Sequence[float] | np.ndarray,
    sample_rate: float,
    **release: Any,
) -> np.ndarray:
    """``release_rdp(orders=α, **release)`` (the RDP of one release) amplified by Poisson client sampling.

    Zhu & Wang (2019), Thm. 6, min'd with the unamplified curve (:func:`poisson_subsampled_rdp`); with
    q = 0 the release is never evaluated, so its parameters are then not checked.
    """
    return poisson_subsampled_rdp(
        orders=orders, sample_rate=sample_rate, base_rdp=lambda a: release_rdp(orders=a, **release)
    )


def sampled_ddg_rdp(
    *,
    orders: Sequence[float] | np.ndarray,
    l2_sensitivity: float,
    local_stddev: float,
    num_clients: int,
    dim: int,
    sample_rate: float,
    l1_sensitivity: float | None = None,
) -> np.ndarray:
    """DDG RDP with Poisson client sampling: Zhu & Wang (2019) Thm. 6, min'd with :func:`ddg_rdp`.

    Args:
        orders: RDP orders α > 1.
        l2_sensitivity: Δ₂ (integer units).
        local_stddev: σ̄ per client (integer units, >= 1/2).
        num_clients: surviving clients whose noise is in the sum.
        dim: d (after padding).
        sample_rate: client sampling rate q in [0, 1].
        l1_sensitivity: Δ₁; defaults to ``Δ₂ · min(√d, Δ₂)``.

    Returns:
        Float64 array of RDP values (one round), one per order.

    Raises:
        InvalidPrivacyConfigError: invalid orders or sampling rate, or (for q > 0) invalid mechanism
            parameters, σ̄ < 1/2 included.
    """
    return _client_sampled(
        ddg_rdp,
        orders=orders,
        sample_rate=sample_rate,
        l2_sensitivity=l2_sensitivity,
        local_stddev=local_stddev,
        num_clients=num_clients,
        dim=dim,
        l1_sensitivity=l1_sensitivity,
    )


def sampled_skellam_rdp(
    *,
    orders: Sequence[float] | np.ndarray,
    l2_sensitivity: float,
    total_variance: float,
    dim: int,
    sample_rate: float,
    l1_sensitivity: float | None = None,
) -> np.ndarray:
    """Skellam RDP with Poisson client sampling: Zhu & Wang (2019) Thm. 6, min'd with :func:`skellam_rdp`.

    Args:
        orders: RDP orders α > 1.
        l2_sensitivity: Δ₂ (integer units).
        total_variance: μ of the surviving clients' summed noise (integer units).
        dim: d.
        sample_rate: client sampling rate q in [0, 1].
        l1_sensitivity: Δ₁; defaults to ``Δ₂ · min(√d, Δ₂)``.

    Returns:
        Float64 array of RDP values (one round), one per order.

    Raises:
        InvalidPrivacyConfigError: invalid orders or sampling rate, or (for q > 0) invalid mechanism
            parameters, μ <= 0 included.
    """
    return _client_sampled(
        skellam_rdp,
        orders=orders,
        sample_rate=sample_rate,
        l2_sensitivity=l2_sensitivity,
        total_variance=total_variance,
        dim=dim,
        l1_sensitivity=l1_sensitivity,
    )


def discrete_gaussian_variance(*, sigma: float) -> float:
    """Exact variance of the discrete Gaussian N_ℤ(0, σ²) (Canonne, Kamath & Steinke 2020).

    For σ < 4 it is computed by summing the pmf over ``|x| <= 40σ + 40`` (the rest is below 1e-300).
    For σ >= 4 it is σ² to double precision: by Poisson summation the relative deviation is of order
    σ² exp(-2π²σ²) < 1e-130 (Canonne, Kamath & Steinke 2020, Sec. 2), so σ² is returned.

    Args:
        sigma: σ > 0 (the scale parameter, not the exact std).

    Returns:
        The variance.

    Raises:
        InvalidPrivacyConfigError: σ <= 0.
    """
    s = check_positive("sigma", sigma)
    if s >= 4.0:
        return s * s
    half = int(math.ceil(40.0 * s + 40.0))
    x = np.arange(-half, half + 1, dtype=np.float64)
    w = np.exp(-(x**2) / (2.0 * s**2))
    return float(np.sum(w * x**2) / np.sum(w))


def sampled_distributed_rdp(
    *,
    mechanism: str,
    orders: Sequence[float] | np.ndarray,
    l2_sensitivity: float,
    local_stddev: float,
    num_clients: int,
    dim: int,
    sample_rate: float,
    l1_sensitivity: float | None = None,
) -> np.ndarray:
    """RDP of one client-sampled round of either distributed mechanism, by name.

    DDG is :func:`sampled_ddg_rdp`; Skellam is :func:`sampled_skellam_rdp` with the summed variance
    ``num_clients · σ̄²``.

    Args:
        mechanism: ``"ddg"`` or ``"skellam"``.
        orders: RDP orders α > 1.
        l2_sensitivity: Δ₂ (integer units).
        local_stddev: σ̄, each client's noise std in integer units (Skellam variance is σ̄²).
        num_clients: clients whose noise reaches the sum (survivors).
        dim: d (after padding).
        sample_rate: client sampling rate q in [0, 1].
        l1_sensitivity: Δ₁; defaults to ``Δ₂ · min(√d, Δ₂)``.

    Returns:
        Float64 array of RDP values (one round), one per order.

    Raises:
        InvalidPrivacyConfigError: unknown mechanism or invalid parameters.
    """
    if mechanism == "ddg":
        return sampled_ddg_rdp(
            orders=orders,
            l2_sensitivity=l2_sensitivity,
            local_stddev=local_stddev,
            num_clients=num_clients,
            dim=dim,
            sample_rate=sample_rate,
            l1_sensitivity=l1_sensitivity,
        )
    if mechanism == "skellam":
        n = check_int("num_clients", num_clients, minimum=1)
        sigma = check_positive("local_stddev", local_stddev)
        return sampled_skellam_rdp(
            orders=orders,
            l2_sensitivity=l2_sensitivity,
            total_variance=n * sigma**2,
            dim=dim,
            sample_rate=sample_rate,
            l1_sensitivity=l1_sensitivity,
        )
    raise InvalidPrivacyConfigError(f"mechanism must be one of {DISTRIBUTED_MECHANISMS}, got {mechanism!r}")
