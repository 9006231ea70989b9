"""The ε of a pair of Gaussians, exactly: the privacy curve of ``N(mu0, sigma0²)`` versus ``N(mu1, sigma1²)``.

The canary-client estimate (Andrew et al. 2024, "One-shot Empirical Privacy Estimation for
Federated Learning", ICLR, Sec. 3; :mod:`attacks.canary_clients`) fits one Gaussian to the
inserted canaries' statistics and one to the unseen canaries'; its empirical ε is the ε at δ of
that pair, both directions: :func:`gaussian_pair_delta` (the hockey-stick divergence, in closed
form) and :func:`gaussian_pair_epsilon` (its inverse by bisection).
"""

from __future__ import annotations

import math

from scipy.stats import norm

from attacks.errors import AttackInputError

__all__ = ["gaussian_pair_delta", "gaussian_pair_epsilon"]


def _check_gaussian(name: str, mu: float, sigma: float) -> None:
    for label, v in ((f"{name} mean", mu), (f"{name} std", sigma)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise AttackInputError(f"{label} must be a finite number, got {v!r}")
    if sigma <= 0:
        raise AttackInputError(f"{name} std must be > 0, got {sigma!r}")


def _hockey_stick(mu_p: float, s_p: float, mu_q: float, s_q: float, eps: float) -> float:
    """``sup_S P(S) − e^ε Q(S)`` for ``P = N(mu_p, s_p²)``, ``Q = N(mu_q, s_q²)``, exactly.

    ``S = {x : log p(x) − log q(x) > ε}`` is where the quadratic ``a x² + b x + c > 0``.
    """
    a = 1.0 / (2 * s_q**2) - 1.0 / (2 * s_p**2)
    b = mu_p / s_p**2 - mu_q / s_q**2
    c = mu_q**2 / (2 * s_q**2) - mu_p**2 / (2 * s_p**2) + math.log(s_q / s_p) - eps

    def mass(mu: float, s: float, lo: float, hi: float) -> float:
        """P(lo < X < hi) for X ~ N(mu, s²), accurate in the tails."""
        zl, zh = (lo - mu) / s, (hi - mu) / s
        if zl > 0:
            return float(norm.sf(zl) - norm.sf(zh))
        return float(norm.cdf(zh) - norm.cdf(zl))

    if abs(a) < 1e-12 * (1.0 / s_q**2 + 1.0 / s_p**2):
        if b == 0:
            return max(0.0, 1.0 - math.exp(eps)) if c > 0 else 0.0
        x0 = -c / b
        lo, hi = (x0, math.inf) if b > 0 else (-math.inf, x0)
        return max(0.0, mass(mu_p, s_p, lo, hi) - math.exp(eps) * mass(mu_q, s_q, lo, hi))
    disc = b * b - 4 * a * c
    if disc <= 0:
        if a > 0:  # the quadratic is positive everywhere: S = R
            return max(0.0, 1.0 - math.exp(eps))
        return 0.0
    r = math.sqrt(disc)
    x1, x2 = sorted(((-b - r) / (2 * a), (-b + r) / (2 * a)))
    if a < 0:  # between the roots
        p, q = mass(mu_p, s_p, x1, x2), mass(mu_q, s_q, x1, x2)
    else:  # outside the roots
        p = mass(mu_p, s_p, -math.inf, x1) + mass(mu_p, s_p, x2, math.inf)
        q = mass(mu_q, s_q, -math.inf, x1) + mass(mu_q, s_q, x2, math.inf)
    return max(0.0, p - math.exp(eps) * q)


def gaussian_pair_delta(*, mu0: float, sigma0: float, mu1: float, sigma1: float, epsilon: float) -> float:
    """δ(ε) of the pair ``N(mu0, sigma0²)``, ``N(mu1, sigma1²)``: the larger hockey-stick divergence.

    Args:
        mu0: Mean of the null (unseen canaries).
        sigma0: Std of the null (> 0).
        mu1: Mean of the alternative (inserted canaries).
        sigma1: Std of the alternative (> 0).
        epsilon: ε >= 0.

    Returns:
        ``max(D_{e^ε}(P1‖P0), D_{e^ε}(P0‖P1))`` in [0, 1].

    Raises:
        AttackInputError: On non-finite parameters, a std <= 0 or ε < 0.
    """
    _check_gaussian("null", mu0, sigma0)
    _check_gaussian("alternative", mu1, sigma1)
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon >= 0:
        raise AttackInputError(f"epsilon must be a number >= 0, got {epsilon!r}")
    return max(
        _hockey_stick(mu1, sigma1, mu0, sigma0, float(epsilon)),
        _hockey_stick(mu0, sigma0, mu1, sigma1, float(epsilon)),
    )


def gaussian_pair_epsilon(*, mu0: float, sigma0: float, mu1: float, sigma1: float, delta: float) -> float:
    """The smallest ε with ``δ(ε) <= delta`` for the pair of Gaussians (Andrew et al. 2024, Sec. 3).

    With equal stds this is the ε of ``μ``-GDP at ``μ = |mu1 − mu0| / sigma`` (Dong, Roth & Su 2019).

    Args:
        mu0: Mean of the null (unseen canaries).
        sigma0: Std of the null (> 0).
        mu1: Mean of the alternative (inserted canaries).
        sigma1: Std of the alternative (> 0).
        delta: δ in (0, 1).

    Returns:
        ε >= 0 (to 1e-6; capped at 500).

    Raises:
        AttackInputError: On invalid parameters.
    """
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 < delta < 1:
        raise AttackInputError(f"delta must lie in (0, 1), got {delta!r}")

    def d(e: float) -> float:
        return gaussian_pair_delta(mu0=mu0, sigma0=sigma0, mu1=mu1, sigma1=sigma1, epsilon=e)

    if d(0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while d(hi) > delta:
        lo, hi = hi, 2 * hi
        if hi > 500:
            return 500.0
    while hi - lo > 1e-6:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if d(mid) <= delta else (mid, hi)
    return hi
