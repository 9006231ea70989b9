"""RDP of the (Poisson-subsampled) Gaussian mechanism.

The per-step RDP curve of the Sampled Gaussian Mechanism (Poisson sampling with rate ``q``, Gaussian
noise with standard deviation ``σ`` times the L2 sensitivity, add/remove adjacency) is computed by
Opacus 1.6's ``opacus.accountants.analysis.rdp.compute_rdp``, which implements Mironov, Talwar &
Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism" (arXiv 1908.10530, Sec. 3.3):
exact at integer orders, numerically integrated at fractional orders. The test-suite checks it
against dp_accounting's independent implementation to 1e-4.

Curves depend only on ``(σ, q, orders)``; they are memoised so that an accountant holding a handful
of distinct ``(σ, q)`` pairs answers in microseconds however many steps it has recorded.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from opacus.accountants.analysis import rdp as _opacus_rdp

from privacy.analysis._checks import check_finite_nonneg, check_int, check_orders, check_rate
from privacy.errors import InvalidPrivacyConfigError

__all__ = ["composed_gaussian_rdp", "gaussian_rdp", "poisson_subsampled_gaussian_rdp"]


@functools.lru_cache(maxsize=4096)
def _sgm_rdp_cached(
    noise_multiplier: float, sample_rate: float, orders: tuple[float, ...]
) -> tuple[float, ...]:
    if sample_rate == 0.0:
        return tuple(0.0 for _ in orders)
    if noise_multiplier == 0.0:
        return tuple(math.inf for _ in orders)
    values = _opacus_rdp.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(orders)
    )
    return tuple(float(v) for v in np.atleast_1d(values))


def poisson_subsampled_gaussian_rdp(
    *, noise_multiplier: float, sample_rate: float, orders: Sequence[float] | np.ndarray
) -> np.ndarray:
    """RDP, per step, of the Poisson-subsampled Gaussian mechanism (Mironov, Talwar & Zhang 2019).

    Args:
        noise_multiplier: σ, the noise standard deviation divided by the L2 sensitivity (>= 0; 0 means
            no noise and gives ``inf``).
        sample_rate: q in [0, 1], the Poisson sampling probability (1 = no subsampling; 0 = nothing
            is released about the unit, RDP 0).
        orders: RDP orders α > 1.

    Returns:
        A fresh float64 array of RDP values, one per order, for ONE step.

    Raises:
        InvalidPrivacyConfigError: invalid σ, q or orders.
    """
    sigma = check_finite_nonneg("noise_multiplier", noise_multiplier)
    q = check_rate("sample_rate", sample_rate)
    orders_arr = check_orders(orders)
    return np.array(_sgm_rdp_cached(sigma, q, tuple(float(a) for a in orders_arr)), dtype=np.float64)


def gaussian_rdp(*, noise_multiplier: float, orders: Sequence[float] | np.ndarray) -> np.ndarray:
    """RDP of the Gaussian mechanism without subsampling: ``α / (2σ²)`` (Mironov 2017, Prop. 7).

    Args:
        noise_multiplier: σ >= 0 (noise std over L2 sensitivity); 0 gives ``inf``.
        orders: RDP orders α > 1.

    Returns:
        Float64 array of RDP values, one per order.

    Raises:
        InvalidPrivacyConfigError: invalid σ or orders.
    """
    sigma = check_finite_nonneg("noise_multiplier", noise_multiplier)
    orders_arr = check_orders(orders)
    if sigma == 0:
        return np.full(orders_arr.shape, np.inf)
    return orders_arr / (2.0 * sigma**2)


def composed_gaussian_rdp(
    *, history: Sequence[tuple[float, float, int]], orders: Sequence[float] | np.ndarray
) -> np.ndarray:
    """RDP of a composition of Poisson-subsampled Gaussian steps (RDP composes additively).

    Args:
        history: grouped ``(σ, q, steps)`` entries (order does not matter).
        orders: RDP orders α > 1.

    Returns:
        Float64 array: ``Σ steps · rdp(σ, q)`` per order.

    Raises:
        InvalidPrivacyConfigError: a malformed entry or invalid orders.
    """
    orders_arr = check_orders(orders)
    total = np.zeros(orders_arr.shape)
    for i, entry in enumerate(history):
        if len(entry) != 3:
            raise InvalidPrivacyConfigError(f"history[{i}] must be (noise_multiplier, sample_rate, steps)")
        steps = check_int(f"history[{i}].steps", entry[2], minimum=0)
        if steps == 0:
            continue
        curve = poisson_subsampled_gaussian_rdp(
            noise_multiplier=entry[0], sample_rate=entry[1], orders=orders_arr
        )
        with np.errstate(invalid="ignore"):
            total = total + steps * curve
    return total
