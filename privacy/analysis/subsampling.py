"""Privacy amplification by Poisson subsampling for an arbitrary RDP curve.

Zhu & Wang, "Poisson Subsampled Rényi Differential Privacy" (ICML 2019), Theorem 6 (general upper
bound): if a mechanism M satisfies (ℓ, ε(ℓ))-RDP for every integer ℓ >= 2 (with respect to adding or
removing one unit, in both directions), then M applied to a Poisson sample with rate γ satisfies, for
every integer α >= 2,

    ε'(α) <= 1/(α-1) · log{ (1-γ)^(α-1) (αγ - γ + 1)
                            + C(α,2) γ² (1-γ)^(α-2) e^{ε(2)}
                            + 3 Σ_{ℓ=3..α} C(α,ℓ) (1-γ)^(α-ℓ) γ^ℓ e^{(ℓ-1) ε(ℓ)} }.

We evaluate it in log space and take the minimum with the unamplified ε(α) (subsampling never hurts,
and the bound can exceed ε(α) when ε is large). Fractional orders use the value at ⌈α⌉, valid since
Rényi divergences are non-decreasing in the order (van Erven & Harremoës 2014, Thm. 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import special

from privacy.analysis._checks import check_orders, check_rate

__all__ = ["poisson_subsampled_rdp", "zhu_wang_bound"]


def zhu_wang_bound(*, alpha: int, sample_rate: float, base_rdp_int: np.ndarray) -> float:
    """Zhu & Wang (2019) Theorem 6 at one integer order.

    Args:
        alpha: integer order >= 2.
        sample_rate: Poisson sampling rate γ in (0, 1).
        base_rdp_int: array ``e`` with ``e[ℓ] = ε(ℓ)`` of the unsampled mechanism for ``ℓ = 0..alpha``
            (entries 0 and 1 are ignored). ``inf`` entries are allowed.

    Returns:
        The amplified RDP bound at order ``alpha`` (may be ``inf``).
    """
    g = sample_rate
    log_g, log_1mg = math.log(g), math.log1p(-g)
    terms = [
        (alpha - 1) * log_1mg + math.log1p((alpha - 1) * g),
        math.log(special.comb(alpha, 2, exact=False)) + 2 * log_g + (alpha - 2) * log_1mg + base_rdp_int[2],
    ]
    if alpha >= 3:
        ells = np.arange(3, alpha + 1, dtype=np.float64)
        log_comb = special.gammaln(alpha + 1) - special.gammaln(ells + 1) - special.gammaln(alpha - ells + 1)
        with np.errstate(invalid="ignore"):
            extra = (
                math.log(3.0)
                + log_comb
                + (alpha - ells) * log_1mg
                + ells * log_g
                + (ells - 1) * base_rdp_int[3 : alpha + 1]
            )
        terms.extend(extra.tolist())
    arr = np.asarray(terms, dtype=np.float64)
    if np.any(np.isposinf(arr)):
        return math.inf
    return float(special.logsumexp(arr)) / (alpha - 1)


def poisson_subsampled_rdp(
    *,
    orders: Sequence[float] | np.ndarray,
    sample_rate: float,
    base_rdp: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """RDP of a Poisson-subsampled mechanism: Zhu & Wang (2019) Thm. 6, min'd with the unamplified curve.

    Args:
        orders: RDP orders α > 1 (fractional orders are bounded through ⌈α⌉).
        sample_rate: Poisson sampling rate γ in [0, 1]. γ = 0 gives RDP 0; γ = 1 the unamplified curve.
        base_rdp: function mapping an array of orders (float64) to the RDP of the unsampled mechanism
            at those orders. It must accept integer-valued orders ``2, 3, ..., ⌈max α⌉``.

    Returns:
        Float64 array of amplified RDP values, one per order.

    Raises:
        InvalidPrivacyConfigError: invalid orders or sample rate.
    """
    orders_arr = check_orders(orders)
    g = check_rate("sample_rate", sample_rate)
    if g == 0.0:
        return np.zeros(orders_arr.shape)
    unamplified = np.asarray(base_rdp(orders_arr), dtype=np.float64)
    if g == 1.0:
        return unamplified
    max_int = int(math.ceil(float(orders_arr.max())))
    max_int = max(max_int, 2)
    int_orders = np.arange(2, max_int + 1, dtype=np.float64)
    base_int = np.concatenate([[0.0, 0.0], np.asarray(base_rdp(int_orders), dtype=np.float64)])
    cache: dict[int, float] = {}
    out = np.empty(orders_arr.shape)
    for i, a in enumerate(orders_arr):
        ceil_a = max(2, int(math.ceil(float(a))))
        if ceil_a not in cache:
            cache[ceil_a] = zhu_wang_bound(alpha=ceil_a, sample_rate=g, base_rdp_int=base_int)
        out[i] = min(float(unamplified[i]), cache[ceil_a])
    return out
