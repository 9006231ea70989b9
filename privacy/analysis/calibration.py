"""ε of a fixed schedule, and noise calibration by bisection, for every supported mechanism.

All mechanisms here have ε non-increasing in the noise level, so the smallest noise reaching a target
ε is found by bisection (in log space). The returned noise always satisfies ``ε(noise) <= target``
(it is the upper end of the final bracket), and is within a relative ``rtol`` of the smallest such
noise. This mirrors Opacus' ``get_noise_multiplier`` (which stops at an absolute ε tolerance of 0.01)
but with a tolerance on σ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from privacy.analysis._checks import (
    check_delta,
    check_finite_nonneg,
    check_int,
    check_positive,
    check_rate,
)
from privacy.analysis.conversion import DEFAULT_RDP_ORDERS, rdp_to_epsilon
from privacy.analysis.discrete import DDG_MIN_LOCAL_STDDEV, sampled_distributed_rdp
from privacy.analysis.gaussian import composed_gaussian_rdp
from privacy.analysis.numerical import pld_epsilon, prv_epsilon
from privacy.errors import CalibrationError, InvalidPrivacyConfigError

__all__ = [
    "GAUSSIAN_ACCOUNTANTS",
    "bisect_noise",
    "calibrate_distributed_noise",
    "calibrate_gaussian_noise",
    "distributed_epsilon",
    "gaussian_epsilon",
]

#: Accounting methods for the Poisson-subsampled Gaussian.
GAUSSIAN_ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv", "pld")


def gaussian_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
    orders: Sequence[float] | None = None,
    eps_error: float = 0.01,
    value_discretization_interval: float = 1e-4,
) -> float:
    """ε after ``steps`` Poisson-subsampled Gaussian steps with fixed (σ, q).

    Args:
        noise_multiplier: σ >= 0.
        sample_rate: q in [0, 1].
        steps: number of steps >= 0.
        delta: target δ in (0, 1).
        accountant: ``"rdp"`` (Mironov et al. 2019 + Canonne et al. 2020 conversion), ``"prv"``
            (Gopi et al. 2021, via Opacus) or ``"pld"`` (dp_accounting).
        orders: RDP orders (``"rdp"`` only); defaults to :data:`DEFAULT_RDP_ORDERS`.
        eps_error: PRV error budget in ε (``"prv"`` only).
        value_discretization_interval: PLD grid (``"pld"`` only).

    Returns:
        ε.

    Raises:
        InvalidPrivacyConfigError: invalid parameters or unknown accountant.
    """
    sigma = check_finite_nonneg("noise_multiplier", noise_multiplier)
    q = check_rate("sample_rate", sample_rate)
    n = check_int("steps", steps, minimum=0)
    delta = check_delta(delta)
    history = [(sigma, q, n)]
    if accountant == "rdp":
        use_orders = DEFAULT_RDP_ORDERS if orders is None else orders
        rdp = composed_gaussian_rdp(history=history, orders=use_orders)
        return rdp_to_epsilon(orders=use_orders, rdp=rdp, delta=delta)[0]
    if accountant == "prv":
        return prv_epsilon(history=history, delta=delta, eps_error=eps_error)
    if accountant == "pld":
        return pld_epsilon(
            history=history, delta=delta, value_discretization_interval=value_discretization_interval
        )
    raise InvalidPrivacyConfigError(f"accountant must be one of {GAUSSIAN_ACCOUNTANTS}, got {accountant!r}")


def bisect_noise(
    *,
    epsilon_fn: Callable[[float], float],
    target_epsilon: float,
    lower: float,
    upper: float,
    rtol: float = 1e-3,
    max_noise: float = 1e6,
) -> float:
    """Smallest noise (within relative ``rtol``) whose ε is at most ``target_epsilon``.

    Assumes ``epsilon_fn`` is non-increasing. The bracket is grown by doubling ``upper`` until it
    reaches the target, then bisected geometrically.

    Args:
        epsilon_fn: noise level -> ε.
        target_epsilon: ε* > 0.
        lower: smallest admissible noise (> 0); returned as is if it already meets the target.
        upper: initial guess for a noise meeting the target (> lower).
        rtol: relative precision on the noise (> 0).
        max_noise: give up beyond this noise level.

    Returns:
        A noise level ``s`` with ``epsilon_fn(s) <= target_epsilon``.

    Raises:
        InvalidPrivacyConfigError: invalid arguments.
        CalibrationError: the target is not reached below ``max_noise``.
    """
    target = check_positive("target_epsilon", target_epsilon)
    lo = check_positive("lower", lower)
    hi = check_positive("upper", upper)
    rtol = check_positive("rtol", rtol)
    if hi <= lo:
        hi = 2.0 * lo
    if epsilon_fn(lo) <= target:
        return lo
    eps_hi = epsilon_fn(hi)
    while not eps_hi <= target:
        lo, hi = hi, 2.0 * hi
        if hi > max_noise:
            raise CalibrationError(
                f"no noise level up to {max_noise:g} reaches epsilon <= {target:g} (last epsilon {eps_hi:g})"
            )
        eps_hi = epsilon_fn(hi)
    return _bisect_bracket(epsilon_fn, target, lo, hi, rtol)


def _bisect_bracket(
    epsilon_fn: Callable[[float], float], target: float, lo: float, hi: float, rtol: float
) -> float:
    """Geometric bisection of a bracket with ``ε(lo) > target >= ε(hi)``; returns the upper end."""
    while hi / lo - 1.0 > rtol:
        mid = math.sqrt(lo * hi)
        if epsilon_fn(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_gaussian_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    rtol: float = 1e-3,
    orders: Sequence[float] | None = None,
    eps_error: float = 0.01,
    value_discretization_interval: float = 1e-4,
) -> float:
    """Smallest noise multiplier σ with ``ε(σ) <= target_epsilon`` for a fixed (q, steps) schedule.

    Args:
        target_epsilon: ε* > 0.
        delta: δ in (0, 1).
        sample_rate: q in (0, 1].
        steps: number of steps >= 1.
        accountant: ``"rdp"``, ``"prv"`` or ``"pld"``.
        rtol: relative precision on σ.
        orders: RDP orders (``"rdp"`` only).
        eps_error: PRV ε error (``"prv"`` only).
        value_discretization_interval: PLD grid (``"pld"`` only).

    Returns:
        σ.

    Raises:
        InvalidPrivacyConfigError: invalid parameters.
        CalibrationError: the target cannot be reached.
    """
    check_positive("target_epsilon", target_epsilon)
    check_delta(delta)
    q = check_rate("sample_rate", sample_rate)
    if q == 0:
        raise InvalidPrivacyConfigError("sample_rate must be > 0 to calibrate noise")
    check_int("steps", steps, minimum=1)
    if accountant not in GAUSSIAN_ACCOUNTANTS:
        raise InvalidPrivacyConfigError(
            f"accountant must be one of {GAUSSIAN_ACCOUNTANTS}, got {accountant!r}"
        )

    def eps(sigma: float) -> float:
        return gaussian_epsilon(
            noise_multiplier=sigma,
            sample_rate=q,
            steps=steps,
            delta=delta,
            accountant=accountant,
            orders=orders,
            eps_error=eps_error,
            value_discretization_interval=value_discretization_interval,
        )

    if accountant == "rdp":
        return bisect_noise(epsilon_fn=eps, target_epsilon=target_epsilon, lower=0.05, upper=1.0, rtol=rtol)
    # PRV/PLD are tighter than RDP, so the RDP answer brackets from above; evaluating them at tiny
    # noise is very slow, so the lower end is found by halving from there.
    hi = calibrate_gaussian_noise(
        target_epsilon=target_epsilon,
        delta=delta,
        sample_rate=q,
        steps=steps,
        accountant="rdp",
        rtol=rtol,
        orders=orders,
    )
    if not eps(hi) <= target_epsilon:  # pragma: no cover - numerical accountant looser than RDP
        return bisect_noise(epsilon_fn=eps, target_epsilon=target_epsilon, lower=hi, upper=2 * hi, rtol=rtol)
    lo = hi / 2.0
    while eps(lo) <= target_epsilon:
        hi, lo = lo, lo / 2.0
        if lo < 1e-3:
            return hi
    return _bisect_bracket(eps, target_epsilon, lo, hi, rtol)


def distributed_epsilon(
    *,
    mechanism: str,
    local_stddev: float,
    num_clients: int,
    l2_sensitivity: float,
    dim: int,
    sample_rate: float,
    rounds: int,
    delta: float,
    l1_sensitivity: float | None = None,
    orders: Sequence[float] | None = None,
) -> float:
    """ε after ``rounds`` identical rounds of a distributed DDG or Skellam mechanism (RDP accounting).

    Args:
        mechanism: ``"ddg"`` (Kairouz et al. 2021) or ``"skellam"`` (Agarwal et al. 2021).
        local_stddev: σ̄, each client's noise std in integer units (Skellam variance is σ̄²).
        num_clients: clients whose noise reaches the sum each round (survivors).
        l2_sensitivity: Δ₂ (integer units).
        dim: d (after padding).
        sample_rate: client sampling rate q in [0, 1] (Zhu & Wang 2019 amplification).
        rounds: number of rounds >= 0.
        delta: δ in (0, 1).
        l1_sensitivity: Δ₁ (integer units); defaults to ``Δ₂ · min(√d, Δ₂)``.
        orders: RDP orders; defaults to :data:`DEFAULT_RDP_ORDERS`.

    Returns:
        ε.

    Raises:
        InvalidPrivacyConfigError: invalid parameters.
    """
    use_orders = np.asarray(DEFAULT_RDP_ORDERS if orders is None else orders, dtype=np.float64)
    n_rounds = check_int("rounds", rounds, minimum=0)
    delta = check_delta(delta)
    per_round = sampled_distributed_rdp(
        mechanism=mechanism,
        orders=use_orders,
        l2_sensitivity=l2_sensitivity,
        local_stddev=local_stddev,
        num_clients=num_clients,
        dim=dim,
        sample_rate=sample_rate,
        l1_sensitivity=l1_sensitivity,
    )
    if n_rounds == 0:
        return 0.0
    return rdp_to_epsilon(orders=use_orders, rdp=per_round * n_rounds, delta=delta)[0]


def calibrate_distributed_noise(
    *,
    mechanism: str,
    target_epsilon: float,
    delta: float,
    num_clients: int,
    l2_sensitivity: float,
    dim: int,
    sample_rate: float,
    rounds: int,
    l1_sensitivity: float | None = None,
    rtol: float = 1e-3,
) -> float:
    """Smallest per-client noise σ̄ (integer units) with ``ε <= target_epsilon``, sensitivities fixed.

    Args:
        mechanism: ``"ddg"`` or ``"skellam"``.
        target_epsilon: ε* > 0.
        delta: δ in (0, 1).
        num_clients: clients whose noise is assumed to reach the sum each round.
        l2_sensitivity: Δ₂ (integer units).
        dim: d (after padding).
        sample_rate: client sampling rate q in (0, 1].
        rounds: number of rounds >= 1.
        l1_sensitivity: Δ₁; defaults to ``Δ₂ · min(√d, Δ₂)``.
        rtol: relative precision on σ̄.

    Returns:
        σ̄ (for DDG at least 1/2, the minimum allowed by Kairouz et al. 2021).

    Raises:
        InvalidPrivacyConfigError: invalid parameters.
        CalibrationError: the target cannot be reached.
    """
    check_int("rounds", rounds, minimum=1)
    if check_rate("sample_rate", sample_rate) == 0:
        raise InvalidPrivacyConfigError("sample_rate must be > 0 to calibrate noise")

    def eps(sigma: float) -> float:
        return distributed_epsilon(
            mechanism=mechanism,
            local_stddev=sigma,
            num_clients=num_clients,
            l2_sensitivity=l2_sensitivity,
            dim=dim,
            sample_rate=sample_rate,
            rounds=rounds,
            delta=delta,
            l1_sensitivity=l1_sensitivity,
        )

    lower = DDG_MIN_LOCAL_STDDEV if mechanism == "ddg" else 1e-3
    upper = max(2.0 * lower, float(l2_sensitivity) / math.sqrt(max(1, int(num_clients))))
    return bisect_noise(
        epsilon_fn=eps, target_epsilon=target_epsilon, lower=lower, upper=upper, rtol=rtol, max_noise=1e9
    )
