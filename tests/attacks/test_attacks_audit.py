"""Auditing: Clopper–Pearson and one-run lower bounds are sound on known mechanisms and catch a broken one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from attacks import (
    AttackConfigError,
    AttackInputError,
    GaussianMechanismAudit,
    clopper_pearson_epsilon,
    clopper_pearson_upper,
    epsilon_lower_bound_from_scores,
    gaussian_epsilon,
    gaussian_epsilon_pld,
    one_run_audit,
    one_run_epsilon,
    one_run_p_value,
)

DELTA = 1e-5
POSITIVE_ONLY = [(k, 0) for k in (50, 100, 200, 500, 1000, 2000, 3000, 4000)]

# ---------------------------------------------------------------- pure math


def test_clopper_pearson_upper_bound_values() -> None:
    # k = 0 has the closed form 1 - alpha^(1/n).
    assert clopper_pearson_upper(successes=0, trials=100, alpha=0.05) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert clopper_pearson_upper(successes=10, trials=10, alpha=0.05) == 1.0
    ub = clopper_pearson_upper(successes=30, trials=100, alpha=0.025)
    assert sps.binom.cdf(30, 100, ub) == pytest.approx(0.025, rel=1e-6)  # exact coverage at the bound
    assert clopper_pearson_upper(successes=31, trials=100, alpha=0.025) > ub
    with pytest.raises(AttackInputError):
        clopper_pearson_upper(successes=5, trials=4, alpha=0.05)
    with pytest.raises(AttackConfigError):
        clopper_pearson_upper(successes=1, trials=4, alpha=1.5)


def test_clopper_pearson_epsilon_formula() -> None:
    fpr = clopper_pearson_upper(successes=0, trials=1000, alpha=0.025)
    fnr = clopper_pearson_upper(successes=500, trials=1000, alpha=0.025)
    expected = max(math.log((1 - DELTA - fnr) / fpr), math.log((1 - DELTA - fpr) / fnr))
    got = clopper_pearson_epsilon(
        false_positives=0, negatives=1000, false_negatives=500, positives=1000, delta=DELTA
    )
    assert got == pytest.approx(expected)
    assert got == pytest.approx(math.log((1 - DELTA - fnr) / fpr))
    # A useless rule proves nothing.
    assert (
        clopper_pearson_epsilon(
            false_positives=500, negatives=1000, false_negatives=500, positives=1000, delta=DELTA
        )
        == 0.0
    )


def test_one_run_p_value_matches_the_formula_and_is_monotone() -> None:
    m, r, v, eps = 1000, 100, 80, 1.0
    q = math.exp(eps) / (1 + math.exp(eps))
    beta = sps.binom.sf(v - 1, r, q)
    alpha = max((sps.binom.sf(v - i - 1, r, q) - beta) / i for i in range(1, v + 1))
    expected = min(beta + 2 * m * DELTA * alpha, 1.0)
    assert one_run_p_value(
        epsilon=eps, delta=DELTA, num_canaries=m, num_guesses=r, num_correct=v
    ) == pytest.approx(expected, rel=1e-9)
    ps = [
        one_run_p_value(epsilon=e, delta=DELTA, num_canaries=m, num_guesses=r, num_correct=v)
        for e in np.linspace(0, 3, 13)
    ]
    assert all(a <= b + 1e-12 for a, b in zip(ps, ps[1:], strict=False))
    lb = one_run_epsilon(num_canaries=m, num_guesses=r, num_correct=v, delta=DELTA)
    assert one_run_p_value(epsilon=lb, delta=DELTA, num_canaries=m, num_guesses=r, num_correct=v) <= 0.05
    assert (
        one_run_p_value(epsilon=lb + 1e-3, delta=DELTA, num_canaries=m, num_guesses=r, num_correct=v) > 0.05
    )
    # Chance-level guessing refutes nothing.
    assert one_run_epsilon(num_canaries=m, num_guesses=100, num_correct=50, delta=DELTA) == 0.0
    with pytest.raises(AttackInputError):
        one_run_p_value(epsilon=1.0, delta=DELTA, num_canaries=10, num_guesses=20, num_correct=5)


def test_gaussian_epsilon_matches_pld_and_the_notes() -> None:
    for mu in (0.5, 1.0, 4.0):
        assert gaussian_epsilon(mu=mu, delta=DELTA) == pytest.approx(
            gaussian_epsilon_pld(mu=mu, delta=DELTA), abs=1e-3
        )
    assert gaussian_epsilon(mu=1.0, delta=DELTA) == pytest.approx(4.38, abs=0.01)
    assert gaussian_epsilon(mu=4.0, delta=DELTA) == pytest.approx(24.4, abs=0.05)


# ---------------------------------------------------------------- soundness on known mechanisms


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0, 4.0])
def test_lower_bounds_never_exceed_the_true_epsilon(mu: float) -> None:
    for seed in (0, 1):
        audit = GaussianMechanismAudit(mu=mu, delta=DELTA, seed=seed)
        true_eps = audit.true_epsilon()
        for sel in ("bonferroni", "holdout"):
            rep = audit.run_clopper_pearson(trials_per_side=2000, selection=sel)
            assert 0.0 <= rep.lower_bound.epsilon <= true_eps, (mu, seed, sel)
            assert not rep.violation
        rep = audit.run_one_run(num_canaries=10_000)
        assert 0.0 <= rep.lower_bound.epsilon <= true_eps, (mu, seed)
        assert rep.lower_bound.epsilon > 0.0  # with 10^4 canaries something is always refuted


def test_threshold_selection_correction_controls_false_claims_under_the_null() -> None:
    """With no signal (true epsilon 0) a valid bound is positive in at most ~alpha of the runs."""
    positives = {"bonferroni": 0, "holdout": 0}
    for seed in range(40):
        rng = np.random.default_rng(seed)
        s_in, s_out = rng.normal(size=300), rng.normal(size=300)
        for sel in positives:
            lb = epsilon_lower_bound_from_scores(
                scores_in=s_in, scores_out=s_out, delta=0.0, selection=sel, num_thresholds=None, seed=seed
            )
            positives[sel] += lb.epsilon > 0
    assert positives["bonferroni"] <= 4 and positives["holdout"] <= 4


def test_broken_mechanism_with_four_times_less_noise_is_detected() -> None:
    for seed in (0, 1, 2):
        broken = GaussianMechanismAudit(mu=1.0, delta=DELTA, noise_factor=0.25, seed=seed)
        claimed = broken.claimed_epsilon()
        assert claimed == pytest.approx(4.38, abs=0.01)
        cp = broken.run_clopper_pearson(trials_per_side=2000, selection="bonferroni")
        assert cp.violation and cp.lower_bound.epsilon > claimed
        one = broken.run_one_run(num_canaries=10_000, guess_counts=[(1000, 1000)])
        assert one.lower_bound.selection == "fixed"
        assert one.violation and one.lower_bound.epsilon > claimed
        assert cp.lower_bound.epsilon <= cp.true_epsilon and one.lower_bound.epsilon <= one.true_epsilon
    honest = GaussianMechanismAudit(mu=1.0, delta=DELTA, seed=0).run_clopper_pearson()
    assert not honest.violation
    d = cp.to_dict()
    assert d["violation"] is True and d["lower_bound"]["method"] == "clopper_pearson"


# ---------------------------------------------------------------- sanity values (PRIVACY_NOTES.md section 4)


def test_sanity_values_from_the_notes() -> None:
    # One run, m = 10^4, best positive-only guess count (uncorrected, as the notes' numbers are):
    one1 = GaussianMechanismAudit(mu=1.0, seed=0).run_one_run(selection="none", guess_counts=POSITIVE_ONLY)
    one4 = GaussianMechanismAudit(mu=4.0, seed=0).run_one_run(selection="none", guess_counts=POSITIVE_ONLY)
    assert one1.lower_bound.epsilon == pytest.approx(2.23, abs=0.25)
    assert one4.lower_bound.epsilon == pytest.approx(6.22, abs=0.5)
    # Clopper–Pearson, 2 x 2000 trials: the notes' 1.58 / 5.87 lie between our corrected and
    # uncorrected threshold scans (the notes do not say which selection they used).
    for mu, ref in ((1.0, 1.58), (4.0, 5.87)):
        audit = GaussianMechanismAudit(mu=mu, seed=0)
        corrected = audit.run_clopper_pearson(selection="bonferroni").lower_bound.epsilon
        uncorrected = audit.run_clopper_pearson(selection="none", num_thresholds=None).lower_bound.epsilon
        assert corrected <= uncorrected
        assert corrected - 0.1 <= ref <= uncorrected + 0.1
        assert abs(corrected - ref) < 0.8 and abs(uncorrected - ref) < 0.6


def test_audit_inputs_are_validated() -> None:
    with pytest.raises(AttackConfigError):
        GaussianMechanismAudit(mu=-1.0)
    with pytest.raises(AttackInputError):
        epsilon_lower_bound_from_scores(scores_in=[], scores_out=[1.0], delta=DELTA)
    with pytest.raises(AttackConfigError):
        epsilon_lower_bound_from_scores(scores_in=[1.0], scores_out=[0.0], delta=DELTA, selection="best")
    with pytest.raises(AttackInputError):
        one_run_audit(scores=[1.0, 2.0], included=[1, 0], delta=DELTA)  # included must be boolean
    with pytest.raises(AttackConfigError):
        one_run_audit(scores=[1.0, 2.0], included=np.array([True, False]), delta=DELTA, guess_counts=[(3, 0)])
