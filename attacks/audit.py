"""Empirical lower bounds on epsilon from canary experiments (pure math).

An auditor inserts canaries, runs the mechanism, and guesses which canaries were included. If the
guesses are too good for an (epsilon, delta)-DP mechanism, epsilon is refuted with confidence. The
lower bound sits beside the accountant's epsilon: a lower bound above the claimed epsilon means
the implementation (or its accounting) is broken.

Two methods:

* Clopper–Pearson (Jagielski, Ullman, Oprea, NeurIPS 2020; Nasr, Song, Thakurta, Papernot, Carlini,
  IEEE S&P 2021): many independent trials with and without the canary. With one-sided upper
  confidence bounds ``FPR_ub`` and ``FNR_ub`` at level ``alpha/2`` each,
  ``eps_LB = max{ln((1 - delta - FNR_ub) / FPR_ub), ln((1 - delta - FPR_ub) / FNR_ub)}``.
  Choosing the decision threshold from the same data biases the bound upwards; this module
  corrects for it either by Bonferroni over the scanned thresholds or with a held-out split.
* One run (Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023):
  m canaries each included independently with probability 1/2 in a single run; the auditor makes
  r guesses of which v are correct. With ``q = e^eps / (1 + e^eps)``,
  ``beta = P[Bin(r, q) >= v]``, ``alpha = max_{i=1..v} (P[Bin(r, q) >= v - i] - beta) / i``,
  ``p(eps) = min(beta + 2 m delta alpha, 1)``; ``eps_LB = sup{eps : p(eps) <= significance}``,
  found by bisection (``p`` increases with ``eps``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from attacks.errors import AttackConfigError, AttackInputError

__all__ = [
    "EpsilonLowerBound",
    "clopper_pearson_upper",
    "clopper_pearson_epsilon",
    "epsilon_lower_bound_from_scores",
    "one_run_p_value",
    "one_run_epsilon",
    "one_run_audit",
]

_EPS_MAX = 100.0


@dataclass
class EpsilonLowerBound:
    """An empirical lower bound on epsilon.

    Attributes:
        epsilon: The bound (0 when nothing can be refuted).
        method: ``"clopper_pearson"`` or ``"one_run"``.
        delta: The delta the bound is for.
        confidence: The bound holds with at least this probability (``1 - alpha`` or ``1 - significance``).
        selection: How the threshold / guess count was chosen: ``"bonferroni"``, ``"holdout"``,
            ``"none"`` or ``"fixed"``.
        details: Method-specific numbers (counts, chosen threshold, number of candidates scanned).
    """

    epsilon: float
    method: str
    delta: float
    confidence: float
    selection: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


def _check_prob(name: str, v: float, *, open_low: bool = True) -> None:
    if not (0.0 < v < 1.0 if open_low else 0.0 <= v < 1.0):
        raise AttackConfigError(f"{name} must lie in {'(0, 1)' if open_low else '[0, 1)'}, got {v}")


def clopper_pearson_upper(*, successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper–Pearson upper confidence bound on a binomial proportion.

    ``P[p > bound] <= alpha``; the bound is the ``1 - alpha`` quantile of ``Beta(k + 1, n - k)``
    (1 when ``k = n``).

    Args:
        successes: k, in ``[0, trials]``.
        trials: n >= 1.
        alpha: Error probability in ``(0, 1)``.

    Returns:
        The upper bound in ``(0, 1]``.

    Raises:
        AttackInputError: If counts are out of range.
        AttackConfigError: If ``alpha`` is not in ``(0, 1)``.
    """
    _check_prob("alpha", alpha)
    if trials < 1 or not 0 <= successes <= trials:
        raise AttackInputError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    if successes == trials:
        return 1.0
    return float(sps.beta.ppf(1.0 - alpha, successes + 1, trials - successes))


def clopper_pearson_epsilon(
    *,
    false_positives: int,
    negatives: int,
    false_negatives: int,
    positives: int,
    delta: float,
    alpha: float = 0.05,
) -> float:
    """Epsilon lower bound of one fixed decision rule (Jagielski et al. 2020; Nasr et al. 2021).

    ``eps_LB = max{ln((1 - delta - FNR_ub) / FPR_ub), ln((1 - delta - FPR_ub) / FNR_ub)}`` with
    one-sided Clopper–Pearson upper bounds at level ``alpha / 2`` each; holds with probability at
    least ``1 - alpha``.

    Args:
        false_positives: Trials without the canary where the rule said "canary".
        negatives: Trials without the canary.
        false_negatives: Trials with the canary where the rule said "no canary".
        positives: Trials with the canary.
        delta: The delta of the (epsilon, delta) claim, in ``[0, 1)``.
        alpha: Total error probability.

    Returns:
        The lower bound (>= 0).

    Raises:
        AttackInputError: If counts are out of range.
        AttackConfigError: If ``alpha`` or ``delta`` is out of range.
    """
    _check_prob("delta", delta, open_low=False)
    _check_prob("alpha", alpha)
    fpr = clopper_pearson_upper(successes=false_positives, trials=negatives, alpha=alpha / 2)
    fnr = clopper_pearson_upper(successes=false_negatives, trials=positives, alpha=alpha / 2)
    return _cp_eps(fpr, fnr, delta)


def _cp_eps(fpr_ub: float, fnr_ub: float, delta: float) -> float:
    best = 0.0
    for num, den in ((1 - delta - fnr_ub, fpr_ub), (1 - delta - fpr_ub, fnr_ub)):
        if num > 0 and den > 0:
            best = max(best, math.log(num / den))
    return best


def _scan(
    s_in: np.ndarray, s_out: np.ndarray, thresholds: np.ndarray, delta: float, alpha_each: float
) -> tuple[float, int, dict[str, Any]]:
    """Best CP bound over thresholds (rule: canary iff score >= t), each at level ``alpha_each``."""
    sin, sout = np.sort(s_in), np.sort(s_out)
    fn = np.searchsorted(sin, thresholds, side="left")  # in-scores below t
    fp = sout.size - np.searchsorted(sout, thresholds, side="left")  # out-scores at or above t
    a = alpha_each / 2
    # Vectorised Clopper–Pearson upper bounds.
    fpr_ub = np.where(fp >= sout.size, 1.0, sps.beta.ppf(1 - a, fp + 1, np.maximum(sout.size - fp, 1)))
    fnr_ub = np.where(fn >= sin.size, 1.0, sps.beta.ppf(1 - a, fn + 1, np.maximum(sin.size - fn, 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.where((1 - delta - fnr_ub > 0) & (fpr_ub > 0), np.log((1 - delta - fnr_ub) / fpr_ub), 0.0)
        e2 = np.where((1 - delta - fpr_ub > 0) & (fnr_ub > 0), np.log((1 - delta - fpr_ub) / fnr_ub), 0.0)
    eps = np.maximum(np.maximum(e1, e2), 0.0)
    i = int(np.argmax(eps))
    return (
        float(eps[i]),
        i,
        {"threshold": float(thresholds[i]), "false_positives": int(fp[i]), "false_negatives": int(fn[i])},
    )


def _threshold_grid(s_in: np.ndarray, s_out: np.ndarray, num_thresholds: int | None) -> np.ndarray:
    pooled = np.unique(np.concatenate([s_in, s_out]))
    if num_thresholds is None or num_thresholds >= pooled.size:
        return pooled
    qs = np.linspace(0.0, 1.0, num_thresholds)
    return np.unique(np.quantile(pooled, qs, method="nearest"))


def epsilon_lower_bound_from_scores(
    *,
    scores_in: ArrayLike,
    scores_out: ArrayLike,
    delta: float,
    alpha: float = 0.05,
    selection: str = "bonferroni",
    thresholds: ArrayLike | None = None,
    num_thresholds: int | None = 100,
    holdout_fraction: float = 0.5,
    seed: int = 0,
) -> EpsilonLowerBound:
    """Clopper–Pearson epsilon lower bound from canary scores, corrected for threshold selection.

    The rule is "canary present iff score >= t" (higher score = more canary-like).

    * ``selection="bonferroni"``: every threshold of the grid is evaluated at level
      ``alpha / T`` (T = grid size) and the maximum is reported; the union bound makes all T
      bounds hold simultaneously with probability ``1 - alpha``. Rigorous for a grid fixed in
      advance (``thresholds=``); the default grid (``num_thresholds`` pooled-score quantiles) is
      chosen from the data without membership and is the usual practice.
    * ``selection="holdout"``: a random ``holdout_fraction`` of each side selects the best
      threshold (at level ``alpha``), the rest evaluates that single threshold at level ``alpha``
      — rigorous at the cost of fewer trials.
    * ``selection="none"``: the uncorrected maximum over the grid. NOT a valid bound (it is
      biased upwards); offered only to compare with papers that report it.

    Args:
        scores_in: Scores of trials with the canary.
        scores_out: Scores of trials without it.
        delta: The delta of the (epsilon, delta) claim.
        alpha: Total error probability of the bound.
        selection: ``"bonferroni"``, ``"holdout"`` or ``"none"``.
        thresholds: A fixed threshold grid (overrides ``num_thresholds``).
        num_thresholds: Size of the data-derived grid (``None``: every distinct score).
        holdout_fraction: Fraction of trials used for selection (holdout only).
        seed: Seed of the holdout split.

    Returns:
        The bound with the chosen threshold and counts in ``details``.

    Raises:
        AttackInputError: On empty or non-finite scores.
        AttackConfigError: On invalid options.
    """
    s_in = np.asarray(scores_in, dtype=np.float64).reshape(-1)
    s_out = np.asarray(scores_out, dtype=np.float64).reshape(-1)
    if s_in.size == 0 or s_out.size == 0 or not (np.isfinite(s_in).all() and np.isfinite(s_out).all()):
        raise AttackInputError("scores_in and scores_out must be non-empty and finite")
    _check_prob("delta", delta, open_low=False)
    _check_prob("alpha", alpha)
    if selection not in ("bonferroni", "holdout", "none"):
        raise AttackConfigError(f"selection must be 'bonferroni', 'holdout' or 'none', got {selection!r}")
    if num_thresholds is not None and num_thresholds < 1:
        raise AttackConfigError(f"num_thresholds must be >= 1 or None, got {num_thresholds}")
    fixed = np.unique(np.asarray(thresholds, dtype=np.float64)) if thresholds is not None else None
    if fixed is not None and (fixed.size == 0 or not np.isfinite(fixed).all()):
        raise AttackConfigError("thresholds must be a non-empty finite grid")
    if selection in ("bonferroni", "none"):
        grid = fixed if fixed is not None else _threshold_grid(s_in, s_out, num_thresholds)
        level = alpha / grid.size if selection == "bonferroni" else alpha
        eps, _, det = _scan(s_in, s_out, grid, delta, level)
        det.update(
            {"num_thresholds": int(grid.size), "positives": int(s_in.size), "negatives": int(s_out.size)}
        )
        if grid.size == 1:
            selection = "fixed"
        return EpsilonLowerBound(
            epsilon=eps,
            method="clopper_pearson",
            delta=delta,
            confidence=1 - alpha,
            selection=selection,
            details=det,
        )
    if not 0.0 < holdout_fraction < 1.0:
        raise AttackConfigError(f"holdout_fraction must lie in (0, 1), got {holdout_fraction}")
    rng = np.random.default_rng(seed)
    pin, pout = rng.permutation(s_in.size), rng.permutation(s_out.size)
    k_in, k_out = int(round(holdout_fraction * s_in.size)), int(round(holdout_fraction * s_out.size))
    if min(k_in, k_out) < 1 or k_in >= s_in.size or k_out >= s_out.size:
        raise AttackInputError("too few trials to split into selection and evaluation parts")
    sel_in, ev_in = s_in[pin[:k_in]], s_in[pin[k_in:]]
    sel_out, ev_out = s_out[pout[:k_out]], s_out[pout[k_out:]]
    grid = fixed if fixed is not None else _threshold_grid(sel_in, sel_out, num_thresholds)
    _, i, _ = _scan(sel_in, sel_out, grid, delta, alpha)
    t = grid[i : i + 1]
    eps, _, det = _scan(ev_in, ev_out, t, delta, alpha)
    det.update(
        {
            "num_thresholds": int(grid.size),
            "positives": int(ev_in.size),
            "negatives": int(ev_out.size),
            "selection_positives": int(sel_in.size),
            "selection_negatives": int(sel_out.size),
        }
    )
    return EpsilonLowerBound(
        epsilon=eps,
        method="clopper_pearson",
        delta=delta,
        confidence=1 - alpha,
        selection="holdout",
        details=det,
    )


def one_run_p_value(
    *, epsilon: float, delta: float, num_canaries: int, num_guesses: int, num_correct: int
) -> float:
    """p-value of observing ``num_correct`` correct guesses under (epsilon, delta)-DP (Steinke et al. 2023).

    ``q = e^eps/(1+e^eps)``, ``beta = P[Bin(r, q) >= v]``,
    ``alpha = max_{i=1..v} (P[Bin(r, q) >= v - i] - beta) / i``, ``p = min(beta + 2 m delta alpha, 1)``.

    Args:
        epsilon: The epsilon being tested (>= 0).
        delta: The delta of the claim, in ``[0, 1)``.
        num_canaries: m, all canaries (guessed or not).
        num_guesses: r, guesses made (<= m).
        num_correct: v, correct guesses (<= r).

    Returns:
        ``p(epsilon)`` in ``[0, 1]``.

    Raises:
        AttackInputError: If counts are inconsistent.
        AttackConfigError: If epsilon or delta is out of range.
    """
    if not epsilon >= 0 or not math.isfinite(epsilon):
        raise AttackConfigError(f"epsilon must be finite and >= 0, got {epsilon}")
    _check_prob("delta", delta, open_low=False)
    if not 0 <= num_correct <= num_guesses <= num_canaries or num_canaries < 1:
        raise AttackInputError(
            "need 0 <= num_correct <= num_guesses <= num_canaries, "
            f"got {num_correct}, {num_guesses}, {num_canaries}"
        )
    r, v = num_guesses, num_correct
    if v == 0:
        return 1.0
    q = math.exp(epsilon - math.log1p(math.exp(epsilon))) if epsilon < 700 else 1.0
    beta = float(sps.binom.sf(v - 1, r, q))  # P[Bin >= v]
    alpha = 0.0
    if delta > 0:
        i = np.arange(1, v + 1)
        tails = sps.binom.sf(v - i - 1, r, q)  # P[Bin >= v - i]
        alpha = float(np.max((tails - beta) / i))
    return float(min(beta + 2 * num_canaries * delta * alpha, 1.0))


def one_run_epsilon(
    *,
    num_canaries: int,
    num_guesses: int,
    num_correct: int,
    delta: float,
    significance: float = 0.05,
    tolerance: float = 1e-6,
) -> float:
    """``sup{eps : p(eps) <= significance}`` by bisection (Steinke, Nasr, Jagielski 2023).

    Args:
        num_canaries: m.
        num_guesses: r.
        num_correct: v.
        delta: The delta of the claim.
        significance: The bound holds with probability at least ``1 - significance``.
        tolerance: Bisection tolerance on epsilon.

    Returns:
        The lower bound (0 when even eps = 0 cannot be rejected).

    Raises:
        AttackInputError: If counts are inconsistent.
        AttackConfigError: If parameters are out of range.
    """
    _check_prob("significance", significance)

    def p(e: float) -> float:
        return one_run_p_value(
            epsilon=e,
            delta=delta,
            num_canaries=num_canaries,
            num_guesses=num_guesses,
            num_correct=num_correct,
        )

    if p(0.0) > significance:
        return 0.0
    lo, hi = 0.0, 1.0
    while p(hi) <= significance and hi < _EPS_MAX:
        lo, hi = hi, 2 * hi
    if hi >= _EPS_MAX and p(hi) <= significance:
        return _EPS_MAX
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        if p(mid) <= significance:
            lo = mid
        else:
            hi = mid
    return lo


def _default_guess_grid(m: int) -> list[tuple[int, int]]:
    fracs = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    ks = sorted({max(1, int(round(f * m))) for f in fracs})
    return [(k, 0) for k in ks] + [(k, k) for k in ks if 2 * k <= m]


def _guess_inputs(scores: ArrayLike, included: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """One finite score and one boolean inclusion bit per canary (the inputs of every one-run audit)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    inc = np.asarray(included)
    if inc.dtype != np.bool_ or inc.shape != s.shape or s.size == 0 or not np.isfinite(s).all():
        raise AttackInputError("scores must be finite and included a boolean array of the same length")
    return s, inc


def _guess_grid(m: int, guess_counts: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """The ``(k_pos, k_neg)`` pairs to try on ``m`` canaries (default :func:`_default_guess_grid`)."""
    grid = list(guess_counts) if guess_counts is not None else _default_guess_grid(m)
    if not grid or any(kp < 0 or kn < 0 or kp + kn < 1 or kp + kn > m for kp, kn in grid):
        raise AttackConfigError(f"guess counts must satisfy k_pos, k_neg >= 0 and 1 <= k_pos + k_neg <= {m}")
    return grid


def _best_guess(
    s: np.ndarray,
    inc: np.ndarray,
    grid: Sequence[tuple[int, int]],
    bound: Callable[[int, int], float],
) -> tuple[float, int, int, int]:
    """Guess the top-k+ canaries IN and the bottom-k- OUT for each pair of ``grid``; the largest
    ``bound(num_guesses, num_correct)`` with its ``(k_pos, k_neg, num_correct)`` (0 and the first pair
    when no bound is positive)."""
    m = s.size
    order = np.argsort(-s, kind="mergesort")
    best: tuple[float, int, int, int] = (0.0, grid[0][0], grid[0][1], 0)
    for kp, kn in grid:
        correct = int(inc[order[:kp]].sum()) + (int((~inc[order[m - kn :]]).sum()) if kn > 0 else 0)
        value = bound(kp + kn, correct)
        if value > best[0]:
            best = (value, kp, kn, correct)
    return best


def _guess_details(best: tuple[float, int, int, int], grid: Sequence[tuple[int, int]]) -> dict[str, int]:
    """The chosen guesses of :func:`_best_guess` as a bound's ``details``."""
    return {
        "k_pos": best[1],
        "k_neg": best[2],
        "num_guesses": best[1] + best[2],
        "num_correct": best[3],
        "num_candidates": len(grid),
    }


def one_run_audit(
    *,
    scores: ArrayLike,
    included: ArrayLike,
    delta: float,
    significance: float = 0.05,
    guess_counts: Sequence[tuple[int, int]] | None = None,
    selection: str = "bonferroni",
) -> EpsilonLowerBound:
    """One-run audit: guess the top-k+ canaries IN, the bottom-k- OUT, abstain on the rest.

    Each ``(k_pos, k_neg)`` of ``guess_counts`` gives a bound; the largest is reported. With
    ``selection="bonferroni"`` each is computed at ``significance / len(guess_counts)`` so the
    maximum remains valid; ``"none"`` reports the uncorrected maximum (as is common in papers;
    biased upwards, not a valid bound). A single pair fixed in advance needs no correction.

    Args:
        scores: One score per canary (higher = more likely included).
        included: Boolean inclusion of each canary (the auditor's own coin flips).
        delta: The delta of the claim.
        significance: Error probability of the bound.
        guess_counts: ``(k_pos, k_neg)`` pairs (default: a grid of 0.1 % to 50 % of m, one- and two-sided).
        selection: ``"bonferroni"`` or ``"none"``.

    Returns:
        The bound with the chosen guess counts and correct guesses in ``details``.

    Raises:
        AttackInputError: On malformed inputs.
        AttackConfigError: On invalid options.
    """
    s, inc = _guess_inputs(scores, included)
    if selection not in ("bonferroni", "none"):
        raise AttackConfigError(f"selection must be 'bonferroni' or 'none', got {selection!r}")
    m = s.size
    grid = _guess_grid(m, guess_counts)
    sig = significance / len(grid) if selection == "bonferroni" else significance

    def bound(r: int, v: int) -> float:
        return one_run_epsilon(num_canaries=m, num_guesses=r, num_correct=v, delta=delta, significance=sig)

    best = _best_guess(s, inc, grid, bound)
    mode = "fixed" if len(grid) == 1 else selection
    return EpsilonLowerBound(
        epsilon=best[0],
        method="one_run",
        delta=delta,
        confidence=1 - significance,
        selection=mode,
        details={"num_canaries": m, **_guess_details(best, grid)},
    )
