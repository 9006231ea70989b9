"""f-DP / Gaussian-DP analysis of canary guesses (pure math), beside the ε-DP one of :mod:`attacks.audit`.

Gaussian differential privacy (Dong, Roth & Su 2019, "Gaussian Differential Privacy", JRSS-B
2022, arXiv 1905.02383): a mechanism is ``μ``-GDP when every test between neighbours has
``FNR >= G_μ(FPR) = Φ(Φ⁻¹(1 - FPR) - μ)``. It is then ``(ε, δ_μ(ε))``-DP for every ε at once, with
``δ_μ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2)`` (their Corollary 2.13), and conversely. The Gaussian
mechanism with noise multiplier ``z`` (sensitivity over noise std) is exactly ``1/z``-GDP.

Two μ lower bounds from one run's canary guesses:

* :func:`gdp_audit` (**canaries as independent trials**): the rule "canary present iff it is
  among the top k scores" has false-positive and false-negative counts; one-sided
  Clopper–Pearson upper bounds at level ``significance / (2K)`` each (K = number of k scanned,
  Bonferroni) give ``μ_LB = Φ⁻¹(1 - FPR_ub) - Φ⁻¹(FNR_ub)`` — the trade-off curve passes below
  ``G_μ`` for every ``μ < μ_LB``. This is the GDP analysis of Nasr et al. (2023, "Tight auditing of
  differentially private machine learning", USENIX Security) applied to the one-run canary set.
  It treats the canaries' observations as independent given the inclusion bits, which the
  white-box Dirac design of :mod:`attacks.whitebox_audit` realises for any mechanism that adds
  independent noise per coordinate (the class audited there); it is not a proof for an
  arbitrary mechanism.
* :func:`fdp_one_run_audit` (**proven in one run, f-DP analysis**; Mahloujifar, Melis & Chaudhuri,
  ICML 2025, "Auditing f-Differential Privacy in One Run", arXiv 2410.22235): if the mechanism is
  ``f``-DP with respect to every canary (here ``f = G_μ``), their backward recursion over the number
  of correct guesses (:func:`fdp_one_run_consistent`) bounds the probability that ``r`` guesses
  contain ``v`` correct ones; ``μ``-GDP is rejected when that bound falls below the significance.
  ``μ_LB`` is the largest rejected ``μ`` of a fixed grid, Bonferroni over the guess counts. No
  independence assumption; tighter than the ε-DP analysis because it uses the whole curve.
* :func:`one_run_gdp_audit` (**proven in one run, any mechanism**): ``μ``-GDP implies
  ``(ε_j, δ_μ(ε_j))``-DP for each ``ε_j`` of a fixed grid, so Steinke, Nasr & Jagielski's (2023)
  one-run p-value at ``(ε_j, δ_μ(ε_j))`` bounds the probability of the observed correct guesses;
  the smallest over the grid, times the grid size (Bonferroni), is a valid p-value for "μ-GDP".
  ``μ_LB = sup{μ : p(μ) <= significance}``. Valid without any independence, and weaker.

Every μ is also stated as ``ε(μ, δ)`` (the ε of a μ-GDP mechanism at the audit's δ): a **lower
bound on ε under the assumption that the trade-off curve is Gaussian** (true of the Gaussian
mechanisms audited; Mahloujifar et al. report their empirical ε the same way). Only the ε-DP
analysis (:func:`attacks.audit.one_run_audit`) refutes ``(ε, δ)`` without that assumption.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps
from scipy.special import log_ndtr, ndtr, ndtri

from attacks.audit import (
    _best_guess,
    _default_guess_grid,
    _guess_details,
    _guess_grid,
    _guess_inputs,
    clopper_pearson_upper,
    one_run_p_value,
)
from attacks.errors import AttackConfigError, AttackInputError

__all__ = [
    "GDPLowerBound",
    "gdp_delta",
    "gdp_epsilon",
    "gdp_mu_from_rates",
    "gdp_audit",
    "gdp_ceiling",
    "one_run_gdp_p_value",
    "one_run_gdp_audit",
    "fdp_one_run_consistent",
    "fdp_one_run_audit",
]

#: μ grid of :func:`fdp_one_run_audit` (fixed in advance; resolution 0.005).
FDP_MU_GRID: np.ndarray = np.round(np.arange(0.0, 20.0 + 1e-9, 0.005), 3)

_MU_MAX = 50.0
#: ε grid of :func:`one_run_gdp_p_value` (fixed in advance, so Bonferroni over it is valid).
DEFAULT_EPSILON_GRID: tuple[float, ...] = tuple(float(e) for e in np.linspace(0.25, 12.0, 48))


@dataclass
class GDPLowerBound:
    """An empirical lower bound on the GDP parameter μ.

    Attributes:
        mu: The bound (0 when nothing is refuted).
        epsilon: ``ε(μ, δ)``: the ε of a μ-GDP mechanism at ``delta`` (a bound on ε only if the
            trade-off curve is Gaussian).
        delta: The δ of ``epsilon``.
        confidence: The bound holds with at least this probability.
        method: ``"gdp_independent_trials"`` or ``"one_run_gdp"``.
        details: Guess counts, rates and the Bonferroni factor.
    """

    mu: float
    epsilon: float
    delta: float
    confidence: float
    method: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


def _check_unit(name: str, v: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < float(v) < 1.0:
        raise AttackConfigError(f"{name} must lie in (0, 1), got {v!r}")
    return float(v)


def _gdp_bound(
    *, mu: float, delta: float, significance: float, method: str, details: dict[str, Any]
) -> GDPLowerBound:
    """The bound ``mu`` at confidence ``1 - significance``, also stated as ε at ``delta``."""
    return GDPLowerBound(
        mu=mu,
        epsilon=gdp_epsilon(mu=mu, delta=delta),
        delta=delta,
        confidence=1 - significance,
        method=method,
        details=details,
    )


def gdp_delta(*, epsilon: float, mu: float) -> float:
    """``δ_μ(ε) = Φ(-ε/μ + μ/2) - e^ε Φ(-ε/μ - μ/2)`` (Dong, Roth & Su 2019, Corollary 2.13).

    Args:
        epsilon: ε >= 0.
        mu: μ >= 0 (0 gives 0).

    Returns:
        The δ in ``[0, 1]``.

    Raises:
        AttackConfigError: If ε or μ is negative or not finite.
    """
    if not (math.isfinite(epsilon) and epsilon >= 0 and math.isfinite(mu) and mu >= 0):
        raise AttackConfigError(f"need finite epsilon >= 0 and mu >= 0, got {epsilon}, {mu}")
    if mu == 0:
        return 0.0
    a = float(log_ndtr(-epsilon / mu + mu / 2))
    b = epsilon + float(log_ndtr(-epsilon / mu - mu / 2))
    return float(math.exp(a) - math.exp(b)) if b < a else 0.0


def gdp_epsilon(*, mu: float, delta: float) -> float:
    """The smallest ε with ``δ_μ(ε) <= δ`` (bisection; 0 for μ = 0).

    Args:
        mu: μ >= 0.
        delta: δ in (0, 1).

    Returns:
        ε >= 0.

    Raises:
        AttackConfigError: On out-of-range arguments.
    """
    _check_unit("delta", delta)
    if not (math.isfinite(mu) and mu >= 0):
        raise AttackConfigError(f"mu must be finite and >= 0, got {mu}")
    if gdp_delta(epsilon=0.0, mu=mu) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while gdp_delta(epsilon=hi, mu=mu) > delta:
        lo, hi = hi, 2 * hi
    for _ in range(100):
        mid = (lo + hi) / 2
        if gdp_delta(epsilon=mid, mu=mu) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def gdp_mu_from_rates(*, fpr: float, fnr: float) -> float:
    """``Φ⁻¹(1 - FPR) - Φ⁻¹(FNR)``: the smallest μ whose curve ``G_μ`` admits the pair (0 if negative).

    Args:
        fpr: False-positive rate in ``[0, 1]``.
        fnr: False-negative rate in ``[0, 1]``.

    Returns:
        μ >= 0 (capped at 50).

    Raises:
        AttackInputError: If a rate is outside ``[0, 1]``.
    """
    if not (0.0 <= fpr <= 1.0 and 0.0 <= fnr <= 1.0):
        raise AttackInputError(f"rates must lie in [0, 1], got fpr={fpr}, fnr={fnr}")
    mu = float(sps.norm.isf(fpr) - sps.norm.ppf(fnr))
    return float(min(max(mu, 0.0), _MU_MAX)) if math.isfinite(mu) else (_MU_MAX if mu > 0 else 0.0)


def _check_scores(scores: ArrayLike, included: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    inc = np.asarray(included)
    if inc.dtype != np.bool_ or inc.shape != s.shape or s.size < 2 or not np.isfinite(s).all():
        raise AttackInputError("scores must be finite (>= 2) and included a boolean array of the same length")
    if inc.all() or not inc.any():
        raise AttackInputError("need both included and excluded canaries")
    return s, inc


def _top_grid(m: int, guess_counts: Sequence[int] | None) -> list[int]:
    if guess_counts is None:
        return sorted({kp for kp, kn in _default_guess_grid(m) if kn == 0})
    ks = sorted({int(k) for k in guess_counts})
    if not ks or ks[0] < 1 or ks[-1] > m:
        raise AttackConfigError(f"guess counts must lie in [1, {m}]")
    return ks


def gdp_audit(
    *,
    scores: ArrayLike,
    included: ArrayLike,
    delta: float,
    significance: float = 0.05,
    guess_counts: Sequence[int] | None = None,
) -> GDPLowerBound:
    """μ lower bound from the top-k rules, canaries as independent trials (module docstring).

    Args:
        scores: One score per canary (higher = more likely included).
        included: The auditor's inclusion bits.
        delta: δ at which μ is also stated as ε.
        significance: Error probability (split over the k scanned and the two rates).
        guess_counts: The k of the rules "top k are IN" (default: 0.1 % … 50 % of m).

    Returns:
        The bound; ``details`` has the chosen k, its counts and rate bounds.

    Raises:
        AttackInputError: On malformed scores.
        AttackConfigError: On invalid options.
    """
    s, inc = _check_scores(scores, included)
    _check_unit("significance", significance)
    _check_unit("delta", delta)
    ks = _top_grid(s.size, guess_counts)
    level = significance / (2 * len(ks))
    order = np.argsort(-s, kind="mergesort")
    hits = np.cumsum(inc[order])
    n_in, n_out = int(inc.sum()), int((~inc).sum())
    best: dict[str, Any] = {"mu": 0.0, "k": ks[0]}
    for k in ks:
        tp = int(hits[k - 1])
        fp, fn = k - tp, n_in - tp
        fpr_ub = clopper_pearson_upper(successes=fp, trials=n_out, alpha=level)
        fnr_ub = clopper_pearson_upper(successes=fn, trials=n_in, alpha=level)
        mu = gdp_mu_from_rates(fpr=fpr_ub, fnr=fnr_ub)
        if mu > best["mu"]:
            best = {
                "mu": mu,
                "k": k,
                "false_positives": fp,
                "false_negatives": fn,
                "fpr_upper": fpr_ub,
                "fnr_upper": fnr_ub,
            }
    mu = float(best.pop("mu"))
    best.update({"positives": n_in, "negatives": n_out, "num_candidates": len(ks)})
    return _gdp_bound(
        mu=mu, delta=delta, significance=significance, method="gdp_independent_trials", details=best
    )


def gdp_ceiling(
    *,
    included: ArrayLike,
    delta: float,
    significance: float = 0.05,
    guess_counts: Sequence[int] | None = None,
) -> GDPLowerBound:
    """The largest μ :func:`gdp_audit` can certify with these canaries: every guess right.

    Args:
        included: The inclusion bits (only their counts matter).
        delta: δ of the ε statement.
        significance: As in :func:`gdp_audit`.
        guess_counts: As in :func:`gdp_audit`.

    Returns:
        :func:`gdp_audit` on perfectly separating scores.
    """
    inc = np.asarray(included)
    return gdp_audit(
        scores=inc.astype(np.float64),
        included=inc,
        delta=delta,
        significance=significance,
        guess_counts=guess_counts,
    )


def _one_run_inputs(
    scores: ArrayLike,
    included: ArrayLike,
    delta: float,
    significance: float,
    guess_counts: Sequence[tuple[int, int]] | None,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """The checked scores, inclusion bits and guess grid of the one-run μ audits."""
    s, inc = _guess_inputs(scores, included)
    _check_unit("significance", significance)
    _check_unit("delta", delta)
    return s, inc, _guess_grid(s.size, guess_counts)


def one_run_gdp_p_value(
    *,
    mu: float,
    num_canaries: int,
    num_guesses: int,
    num_correct: int,
    epsilon_grid: Sequence[float] = DEFAULT_EPSILON_GRID,
) -> float:
    """A valid p-value for "the mechanism is μ-GDP" from one run's guesses (module docstring).

    ``min(1, J · min_j p_Steinke(ε_j, δ_μ(ε_j)))`` over the ``J`` values of a fixed ε grid.

    Args:
        mu: The μ tested (>= 0).
        num_canaries: m.
        num_guesses: r.
        num_correct: v.
        epsilon_grid: The fixed grid of ε (each >= 0).

    Returns:
        The p-value in ``[0, 1]``.

    Raises:
        AttackInputError: If the counts are inconsistent.
        AttackConfigError: If the grid is empty or μ invalid.
    """
    grid = [float(e) for e in epsilon_grid]
    if not grid or any(not (math.isfinite(e) and e >= 0) for e in grid):
        raise AttackConfigError("epsilon_grid must be a non-empty list of finite values >= 0")
    best = 1.0
    for eps in grid:
        d = gdp_delta(epsilon=eps, mu=mu)
        if d >= 1.0:
            continue
        p = one_run_p_value(
            epsilon=eps, delta=d, num_canaries=num_canaries, num_guesses=num_guesses, num_correct=num_correct
        )
        best = min(best, p)
    return float(min(1.0, len(grid) * best))


def one_run_gdp_audit(
    *,
    scores: ArrayLike,
    included: ArrayLike,
    delta: float,
    significance: float = 0.05,
    guess_counts: Sequence[tuple[int, int]] | None = None,
    epsilon_grid: Sequence[float] = DEFAULT_EPSILON_GRID,
) -> GDPLowerBound:
    """Proven one-run μ lower bound (any mechanism): top-k+ IN, bottom-k- OUT, Bonferroni over the guess grid.

    Args:
        scores: One score per canary.
        included: The auditor's inclusion bits.
        delta: δ at which μ is also stated as ε.
        significance: Error probability of the bound.
        guess_counts: ``(k_pos, k_neg)`` pairs (default as :func:`attacks.audit.one_run_audit`).
        epsilon_grid: The ε grid of :func:`one_run_gdp_p_value`.

    Returns:
        The bound; ``details`` has the chosen guesses.

    Raises:
        AttackInputError: On malformed scores.
        AttackConfigError: On invalid options.
    """
    s, inc, grid = _one_run_inputs(scores, included, delta, significance, guess_counts)
    m = s.size
    sig = significance / len(grid)

    def bound(r: int, v: int) -> float:
        def p(mu: float) -> float:
            return one_run_gdp_p_value(
                mu=mu, num_canaries=m, num_guesses=r, num_correct=v, epsilon_grid=epsilon_grid
            )

        if p(1e-9) > sig:
            return 0.0
        lo, hi = 0.0, 1.0
        while p(hi) <= sig and hi < _MU_MAX:
            lo, hi = hi, 2 * hi
        while hi - lo > 1e-4:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if p(mid) <= sig else (lo, mid)
        return lo

    best = _best_guess(s, inc, grid, bound)
    details = {**_guess_details(best, grid), "epsilon_grid_size": len(list(epsilon_grid))}
    return _gdp_bound(
        mu=best[0], delta=delta, significance=significance, method="one_run_gdp", details=details
    )


def fdp_one_run_consistent(
    *, mu: ArrayLike, num_canaries: int, num_guesses: int, num_correct: int, significance: float
) -> np.ndarray:
    """Whether ``v`` correct of ``r`` guesses stays plausible for a ``μ``-GDP mechanism (vectorised in μ).

    Mahloujifar, Melis & Chaudhuri (2025), guessing game with two options per canary (membership):
    with ``τ = significance·r/m`` the recursion starts at ``v`` from ``(α, β) = (τ·v/r, τ·(r−v)/r)``
    and steps down to 0 with ``h_i = max(h_{i+1}, G⁻(a_{i+1}))`` and ``a_i = a_{i+1} + i/(r−i)·(h_i −
    h_{i+1})``, where ``G⁻(x) = Φ(Φ⁻¹(x) − μ)`` is the inverse of the trade-off curve's blow-up. The
    observation is consistent with ``μ``-GDP (at this significance) iff ``a_0 + h_0 <= r/m``.

    Args:
        mu: One or more μ >= 0.
        num_canaries: m.
        num_guesses: r (1..m).
        num_correct: v (0..r).
        significance: Error probability in (0, 1).

    Returns:
        Boolean array, one per μ: True = not rejected.

    Raises:
        AttackInputError: On invalid counts or μ.
    """
    m, r, v = num_canaries, num_guesses, num_correct
    if (
        not (isinstance(m, int) and isinstance(r, int) and isinstance(v, int))
        or not 0 <= v <= r <= m
        or r < 1
    ):
        raise AttackInputError(f"need 0 <= num_correct <= num_guesses <= num_canaries, got {v}, {r}, {m}")
    _check_unit("significance", significance)
    mus = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    if not np.isfinite(mus).all() or (mus < 0).any():
        raise AttackInputError("mu must be finite and >= 0")
    tau = significance * r / m
    a = np.full(mus.shape, tau * v / r)
    h = np.full(mus.shape, tau * (r - v) / r)
    for i in range(v - 1, -1, -1):
        with np.errstate(divide="ignore"):
            g = ndtr(ndtri(np.clip(a, 0.0, 1.0)) - mus)
        h_new = np.maximum(h, g)
        a = a + (i / (r - i)) * (h_new - h)
        h = h_new
    return np.asarray(a + h <= r / m)


def fdp_one_run_audit(
    *,
    scores: ArrayLike,
    included: ArrayLike,
    delta: float,
    significance: float = 0.05,
    guess_counts: Sequence[tuple[int, int]] | None = None,
    mu_grid: ArrayLike | None = None,
) -> GDPLowerBound:
    """Proven one-run μ lower bound by the f-DP analysis of Mahloujifar et al. (2025) (module docstring).

    Guesses as :func:`attacks.audit.one_run_audit` (top-k+ IN, bottom-k- OUT); each guess count is
    tested at ``significance / len(guess_counts)`` (Bonferroni); the bound is the largest μ of the
    grid rejected by :func:`fdp_one_run_consistent` (smaller μ are rejected a fortiori: the recursion
    is monotone in μ).

    Args:
        scores: One score per canary (higher = more likely included).
        included: The auditor's inclusion bits.
        delta: δ at which μ is also stated as ε.
        significance: Error probability of the bound.
        guess_counts: ``(k_pos, k_neg)`` pairs (default as :func:`attacks.audit.one_run_audit`).
        mu_grid: Increasing μ grid fixed in advance (default :data:`FDP_MU_GRID`).

    Returns:
        The bound (``method = "fdp_one_run"``); ``details`` has the chosen guesses.

    Raises:
        AttackInputError: On malformed scores.
        AttackConfigError: On invalid options.
    """
    s, inc, grid = _one_run_inputs(scores, included, delta, significance, guess_counts)
    m = s.size
    mus = np.asarray(FDP_MU_GRID if mu_grid is None else mu_grid, dtype=np.float64)
    if mus.ndim != 1 or mus.size == 0 or (np.diff(mus) <= 0).any():
        raise AttackConfigError("mu_grid must be a non-empty increasing 1-d grid")
    sig = significance / len(grid)

    def bound(r: int, v: int) -> float:
        ok = fdp_one_run_consistent(mu=mus, num_canaries=m, num_guesses=r, num_correct=v, significance=sig)
        rejected = np.flatnonzero(~ok)
        return float(mus[rejected.max()]) if rejected.size else 0.0

    best = _best_guess(s, inc, grid, bound)
    details = {**_guess_details(best, grid), "mu_grid_size": int(mus.size)}
    return _gdp_bound(
        mu=best[0], delta=delta, significance=significance, method="fdp_one_run", details=details
    )
