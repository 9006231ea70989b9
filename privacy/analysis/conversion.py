"""Conversion from Rényi DP to (ε, δ)-DP.

We use the improved conversion of Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential
Privacy" (NeurIPS 2020, arXiv 2004.00010, Proposition 12), which is the same bound as Balle et al.,
"Hypothesis Testing Interpretations and Renyi Differential Privacy" (AISTATS 2020, arXiv 1905.09982,
Theorem 21) and Asoodeh et al. (arXiv 2001.05990, Eq. 20): a mechanism with RDP ``r`` at order
``α > 1`` satisfies (ε, δ)-DP with

    ε = r + log1p(-1/α) - (log δ + log α) / (α - 1).

This is exactly what Opacus 1.6 (``opacus.accountants.analysis.rdp.get_privacy_spent``) and
dp_accounting 0.6 (``dp_accounting.rdp.compute_epsilon``) compute. Like dp_accounting, we also use
that (0, δ)-DP holds whenever ``sqrt(1 - exp(-r)) <= δ`` (Bretagnolle–Huber bound on total variation
from the KL divergence, which is at most the order-α Rényi divergence for α > 1), and we skip orders
``α <= 1.01`` for the main bound where it is numerically unstable (it is useless there anyway).

The classic conversion ``ε = r + log(1/δ)/(α-1)`` (Mironov 2017, Proposition 3) is available as
:func:`rdp_to_epsilon_classic` for comparison only; it is never tighter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from privacy.analysis._checks import check_delta, check_finite_nonneg, check_orders, check_rdp_curve

__all__ = [
    "DEFAULT_RDP_ORDERS",
    "OPACUS_RDP_ORDERS",
    "rdp_to_delta",
    "rdp_to_epsilon",
    "rdp_to_epsilon_classic",
]

#: Default RDP orders: those of dp_accounting 0.6 (a superset of Opacus' default orders except 11,
#: with large orders added for small-noise regimes).
DEFAULT_RDP_ORDERS: tuple[float, ...] = tuple(
    [1.0 + x / 10.0 for x in range(1, 100)]
    + [float(a) for a in range(11, 64)]
    + [128.0, 256.0, 512.0, 1024.0]
)

#: Opacus 1.6 ``RDPAccountant.DEFAULT_ALPHAS`` (for reproducing Opacus numbers exactly).
OPACUS_RDP_ORDERS: tuple[float, ...] = tuple(
    [1.0 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)]
)


def _check_pair(
    orders: Sequence[float] | np.ndarray, rdp: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    orders_arr = check_orders(orders)
    return orders_arr, check_rdp_curve("rdp", rdp, orders_arr)


def rdp_to_epsilon(
    *, orders: Sequence[float] | np.ndarray, rdp: Sequence[float] | np.ndarray, delta: float
) -> tuple[float, float]:
    """Smallest ε over the given orders such that the RDP curve implies (ε, δ)-DP.

    Args:
        orders: RDP orders α (each > 1).
        rdp: RDP values at those orders (``inf`` allowed: no privacy at that order).
        delta: target δ in (0, 1).

    Returns:
        ``(epsilon, best_order)``; ``epsilon`` is ``inf`` if no order gives a finite bound (then
        ``best_order`` is ``nan``).

    Raises:
        InvalidPrivacyConfigError: orders/rdp malformed or of different lengths, delta not in (0, 1).
    """
    orders_arr, rdp_arr = _check_pair(orders, rdp)
    delta = check_delta(delta)
    eps = np.full(orders_arr.shape, np.inf)
    finite = np.isfinite(rdp_arr)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        main = orders_arr > 1.01
        sel = finite & main
        eps[sel] = (
            rdp_arr[sel]
            + np.log1p(-1.0 / orders_arr[sel])
            - (math.log(delta) + np.log(orders_arr[sel])) / (orders_arr[sel] - 1.0)
        )
        # Bretagnolle–Huber: TV <= sqrt(1 - exp(-KL)) <= delta  =>  (0, delta)-DP.
        tv_ok = finite & (delta**2 + np.expm1(-rdp_arr) > 0)
    eps[tv_ok] = 0.0
    if not np.any(np.isfinite(eps)):
        return math.inf, math.nan
    idx = int(np.argmin(eps))
    return max(0.0, float(eps[idx])), float(orders_arr[idx])


def rdp_to_epsilon_classic(
    *, orders: Sequence[float] | np.ndarray, rdp: Sequence[float] | np.ndarray, delta: float
) -> tuple[float, float]:
    """The classic conversion ``ε = r + log(1/δ)/(α-1)`` (Mironov 2017, Prop. 3), for comparison.

    Args:
        orders: RDP orders α (each > 1).
        rdp: RDP values at those orders.
        delta: target δ in (0, 1).

    Returns:
        ``(epsilon, best_order)``.

    Raises:
        InvalidPrivacyConfigError: malformed inputs.
    """
    orders_arr, rdp_arr = _check_pair(orders, rdp)
    delta = check_delta(delta)
    with np.errstate(invalid="ignore"):
        eps = rdp_arr + math.log(1.0 / delta) / (orders_arr - 1.0)
    if not np.any(np.isfinite(eps)):
        return math.inf, math.nan
    idx = int(np.argmin(eps))
    return float(eps[idx]), float(orders_arr[idx])


def rdp_to_delta(
    *, orders: Sequence[float] | np.ndarray, rdp: Sequence[float] | np.ndarray, epsilon: float
) -> tuple[float, float]:
    """Smallest δ over the given orders such that the RDP curve implies (ε, δ)-DP.

    Inverse direction of :func:`rdp_to_epsilon`, same bound (Canonne, Kamath & Steinke 2020, Prop. 12):
    ``δ = exp((α-1)(r - ε + log1p(-1/α)) - log α)``, min'd with the Bretagnolle–Huber bound
    ``sqrt(1 - exp(-r))``.

    Args:
        orders: RDP orders α (each > 1).
        rdp: RDP values at those orders.
        epsilon: target ε >= 0.

    Returns:
        ``(delta, best_order)`` with ``delta`` in [0, 1].

    Raises:
        InvalidPrivacyConfigError: malformed inputs.
    """
    orders_arr, rdp_arr = _check_pair(orders, rdp)
    epsilon = check_finite_nonneg("epsilon", epsilon)
    log_delta = np.zeros(orders_arr.shape)
    finite = np.isfinite(rdp_arr)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tv = np.where(finite, 0.5 * np.log1p(-np.exp(-rdp_arr)), 0.0)
        main = finite & (orders_arr > 1.01)
        bound = (orders_arr - 1.0) * (rdp_arr - epsilon + np.log1p(-1.0 / orders_arr)) - np.log(orders_arr)
        log_delta = np.where(main, np.minimum(tv, bound), tv)
    idx = int(np.argmin(log_delta))
    return min(1.0, float(math.exp(log_delta[idx]))), float(orders_arr[idx])
