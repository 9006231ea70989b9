"""Accounting when participation is public: per participation, never amplified by sampling.

Privacy amplification by (Poisson) subsampling — Mironov, Talwar & Zhang (arXiv 1908.10530) for the
Gaussian, Zhu & Wang (ICML 2019) for a general RDP curve — holds only while the adversary does not
learn who was sampled. When the sample is public (drawn from a logged seed, written to metrics, or
visible to the server that runs secure aggregation with exactly the sampled clients), a unit's
privacy loss is the composition over the rounds in which its data entered a release, and nothing
over the rounds in which it did not:

* **Ex post (the schedule is known):** ``RDP_i = Σ_{t ∈ P_i} ρ_t(α)`` over the rounds ``P_i`` that
  included unit ``i`` (:func:`participation_rdp`). The guarantee stated for "any one unit" is the
  maximum over units; with identical rounds it is the composition over ``max_i |P_i|`` rounds.
* **A priori (each round includes the unit independently with probability q, and the outcome is
  published):** the round reveals the pair (participation bit, output). Both neighbouring runs draw
  the bit from the same Bernoulli(q), so the Rényi divergence of the pair is
  ``log(1 − q + q·exp((α − 1)·ρ(α))) / (α − 1)`` (the divergence of a mixture over a *shared, known*
  component: van Erven & Harremoës, "Rényi divergence and Kullback–Leibler divergence", IEEE Trans.
  Inf. Theory 2014, the chain rule for the Rényi divergence with equal marginals)
  (:func:`known_participation_rdp`). It is larger than the amplified bound and smaller than
  composing every round.

Both accept any per-round RDP curve ``ρ`` (Gaussian, distributed discrete Gaussian, Skellam).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from privacy.analysis._checks import check_delta, check_int, check_orders, check_rate, check_rdp_curve
from privacy.analysis.conversion import DEFAULT_RDP_ORDERS, rdp_to_epsilon
from privacy.analysis.gaussian import gaussian_rdp
from privacy.errors import InvalidPrivacyConfigError

__all__ = [
    "known_participation_gaussian_epsilon",
    "known_participation_rdp",
    "participation_rdp",
]


def known_participation_rdp(
    *, orders: Sequence[float] | np.ndarray, base_rdp: Sequence[float] | np.ndarray, sample_rate: float
) -> np.ndarray:
    """RDP of one round whose Bernoulli(q) participation bit is published with its output.

    ``log(1 − q + q·e^{(α−1)ρ(α)}) / (α − 1)``, computed as a log-sum-exp (no overflow for large
    ``(α−1)ρ``). At q = 1 it is ``ρ``; at q = 0 it is 0.

    Args:
        orders: RDP orders α > 1.
        base_rdp: ρ(α), the RDP of one round that includes the unit (no subsampling).
        sample_rate: q in [0, 1], the probability that a round includes the unit.

    Returns:
        Float64 array, one value per order (``inf`` where ρ is ``inf`` and q > 0).

    Raises:
        InvalidPrivacyConfigError: malformed orders, curve or rate.
    """
    a = check_orders(orders)
    rho = check_rdp_curve("base_rdp", base_rdp, a)
    q = check_rate("sample_rate", sample_rate)
    if q == 0.0:
        return np.zeros_like(rho)
    if q == 1.0:
        return rho.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        log_mix = np.logaddexp(math.log1p(-q), math.log(q) + (a - 1.0) * rho)
    out = log_mix / (a - 1.0)
    out[np.isinf(rho)] = math.inf
    return out


def participation_rdp(
    *, curves: Sequence[Sequence[float] | np.ndarray], orders: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Ex post RDP of one unit: the sum of the curves of the rounds that included it.

    Args:
        curves: ρ_t(α) of each round in which the unit's data entered the release (no subsampling;
            rounds without the unit cost nothing and are not listed).
        orders: RDP orders α > 1.

    Returns:
        Float64 array, one value per order (zeros for no rounds).

    Raises:
        InvalidPrivacyConfigError: malformed orders or curves.
    """
    a = check_orders(orders)
    total = np.zeros(a.shape)
    for c in curves:
        total = total + check_rdp_curve("base_rdp", c, a)
    return total


def known_participation_gaussian_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    orders: Sequence[float] | np.ndarray | None = None,
) -> float:
    """A priori ε of ``rounds`` Gaussian rounds, each including the unit with public probability q.

    RDP accounting of :func:`known_participation_rdp` with the Gaussian curve ``α/(2σ²)``, composed
    over ``rounds`` and converted with :func:`~privacy.analysis.conversion.rdp_to_epsilon`. Example
    (δ = 1e-5): σ = 2, q = 0.3, 100 rounds gives 17.45 (8.62 if the sample were secret); σ = 1,
    q = 0.1, 200 rounds gives 37.14 (11.02 if secret).

    Args:
        noise_multiplier: σ > 0 (noise std over the L2 sensitivity).
        sample_rate: q in [0, 1].
        rounds: number of rounds >= 0.
        delta: δ in (0, 1).
        orders: RDP orders; default :data:`~privacy.analysis.conversion.DEFAULT_RDP_ORDERS`.

    Returns:
        ε.

    Raises:
        InvalidPrivacyConfigError: invalid arguments.
    """
    a = check_orders(DEFAULT_RDP_ORDERS if orders is None else orders)
    if not (isinstance(noise_multiplier, (int, float)) and noise_multiplier > 0):
        raise InvalidPrivacyConfigError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
    t = check_int("rounds", rounds, minimum=0)
    d = check_delta(delta)
    if t == 0:
        return 0.0
    per_round = known_participation_rdp(
        orders=a, base_rdp=gaussian_rdp(noise_multiplier=noise_multiplier, orders=a), sample_rate=sample_rate
    )
    return rdp_to_epsilon(orders=a, rdp=t * per_round, delta=d)[0]
