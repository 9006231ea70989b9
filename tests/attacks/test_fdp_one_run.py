"""The one-run f-DP analysis of Mahloujifar, Melis & Chaudhuri (2025) beside the GDP and ε-DP ones (issue 21).

From the auditor's view (the canary scores and its own inclusion bits): the bound is sound on
Gaussian mechanisms of known μ, tighter than the ε-DP analysis of the same guesses, and — a proven
one-run bound — detects a noise cut 2x that the ε-DP analysis cannot (its ceiling is below the claim).
"""

from __future__ import annotations

import numpy as np
import pytest

from attacks.audit import one_run_audit
from attacks.errors import AttackConfigError, AttackInputError
from attacks.fdp import FDP_MU_GRID, fdp_one_run_audit, fdp_one_run_consistent
from tests.attacks.test_whitebox_audit import _audit as whitebox_audit


def _gaussian_scores(mu: float, seed: int, m: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    inc = rng.random(m) < 0.5
    return rng.standard_normal(m) + mu * inc, inc


@pytest.mark.parametrize("mu", [1.0, 2.0])
def test_sound_on_known_gaussian_and_tighter_than_epsilon_dp(mu: float) -> None:
    for seed in range(3):
        s, inc = _gaussian_scores(mu, seed)
        b = fdp_one_run_audit(scores=s, included=inc, delta=1e-5)
        assert 0 < b.mu <= mu
        if mu == 2.0:
            assert b.epsilon > one_run_audit(scores=s, included=inc, delta=1e-5).epsilon


def test_recursion_is_monotone_and_checked() -> None:
    ok = fdp_one_run_consistent(
        mu=FDP_MU_GRID, num_canaries=4000, num_guesses=400, num_correct=393, significance=0.0025
    )
    assert (np.diff(ok.astype(int)) >= 0).all() and not ok[0] and ok[-1]  # rejected below mu*, not above
    fewer = fdp_one_run_consistent(
        mu=FDP_MU_GRID, num_canaries=4000, num_guesses=400, num_correct=300, significance=0.0025
    )
    assert fewer.sum() > ok.sum()  # fewer correct guesses: fewer mu rejected
    with pytest.raises(AttackInputError):
        fdp_one_run_consistent(mu=1.0, num_canaries=10, num_guesses=20, num_correct=5, significance=0.05)
    with pytest.raises(AttackInputError):
        fdp_one_run_consistent(mu=-1.0, num_canaries=10, num_guesses=5, num_correct=5, significance=0.05)
    with pytest.raises(AttackConfigError):
        fdp_one_run_audit(scores=np.zeros(4), included=np.ones(4, bool), delta=1e-5, mu_grid=[1.0, 0.5])


def test_proven_one_run_bound_detects_noise_cut_2x() -> None:
    """Record-level DP-SGD at accountant epsilon 4.73 (z = 1), 1000 Dirac canaries, fixed noise: the
    ε-DP one-run analysis cannot exceed its ceiling 4.49 < 4.73; the f-DP one does, with the noise cut 2x."""

    def audit(noise_factor: float) -> dict:
        return whitebox_audit("record", noise_factor=noise_factor, fdp_one_run=True)

    honest, cut = audit(1.0), audit(0.5)
    acc = honest["accountant_epsilon"]
    assert honest["fdp_one_run"]["epsilon"] < acc and not honest["violation"]
    assert cut["one_run"]["ceiling"] < acc  # the ε-DP analysis could never detect it
    assert cut["fdp_one_run"]["epsilon"] > acc
    assert cut["fdp_one_run"]["epsilon"] <= cut["fdp_one_run"]["ceiling_epsilon"]
    assert cut["violation"] and "f-DP one-run bound" in cut["statement"]
