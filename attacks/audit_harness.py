"""A Gaussian mechanism with known privacy, for checking that the auditors are sound and sharp.

The mechanism releases ``b + N(0, s^2)`` for a canary bit ``b`` in {0, 1} (sensitivity 1); its
claimed noise is ``s = 1 / mu`` (``mu``-GDP, Dong, Roth, Su 2019). ``noise_factor`` scales the
noise actually added: ``noise_factor = 0.25`` is a bug that adds 4x less noise than claimed,
which a sound and sharp audit should detect. The true epsilon at a delta is the analytic Gaussian
mechanism curve (Balle and Wang, ICML 2018), ``delta(eps) = Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu)``,
cross-checked against dp_accounting's privacy-loss distribution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks.audit import EpsilonLowerBound, epsilon_lower_bound_from_scores, one_run_audit
from attacks.errors import AttackConfigError
from attacks.fdp import gdp_epsilon

__all__ = ["gaussian_epsilon", "gaussian_epsilon_pld", "GaussianMechanismAudit", "AuditReport"]


def gaussian_epsilon(*, mu: float, delta: float) -> float:
    """Exact epsilon of a mu-GDP Gaussian mechanism at ``delta`` (Balle and Wang 2018).

    Balle and Wang's analytic curve is the ``δ_μ(ε)`` of :func:`attacks.fdp.gdp_delta`; the bisection
    is :func:`attacks.fdp.gdp_epsilon`'s.

    Args:
        mu: Sensitivity divided by the noise standard deviation (> 0).
        delta: Target delta in ``(0, 1)``.

    Returns:
        The smallest epsilon with ``delta(epsilon) <= delta``.

    Raises:
        AttackConfigError: If ``mu <= 0`` or ``delta`` is not in ``(0, 1)``.
    """
    if not mu > 0 or not 0 < delta < 1:
        raise AttackConfigError(f"need mu > 0 and 0 < delta < 1, got mu={mu}, delta={delta}")
    return gdp_epsilon(mu=mu, delta=delta)


def gaussian_epsilon_pld(*, mu: float, delta: float) -> float:
    """Epsilon of the same mechanism from dp_accounting's privacy-loss distribution (a cross-check).

    Args:
        mu: Sensitivity divided by the noise standard deviation.
        delta: Target delta.

    Returns:
        Epsilon (a slight over-estimate from the PLD discretisation).

    Raises:
        AttackConfigError: If parameters are out of range.
    """
    if not mu > 0 or not 0 < delta < 1:
        raise AttackConfigError(f"need mu > 0 and 0 < delta < 1, got mu={mu}, delta={delta}")
    from dp_accounting.pld import privacy_loss_distribution as pld

    dist = pld.from_gaussian_mechanism(standard_deviation=1.0 / mu, sensitivity=1.0)
    return float(dist.get_epsilon_for_delta(delta))


@dataclass
class AuditReport:
    """A lower bound next to the claimed and the true epsilon.

    Attributes:
        lower_bound: The audit's bound.
        claimed_epsilon: Epsilon of the mechanism as claimed (noise ``1/mu``).
        true_epsilon: Epsilon of the mechanism as implemented (noise ``noise_factor/mu``).
        mu: Claimed mu.
        noise_factor: Actual over claimed noise.
    """

    lower_bound: EpsilonLowerBound
    claimed_epsilon: float
    true_epsilon: float
    mu: float
    noise_factor: float

    @property
    def violation(self) -> bool:
        """True when the audit refutes the claim (lower bound above the claimed epsilon)."""
        return self.lower_bound.epsilon > self.claimed_epsilon

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out = dataclasses.asdict(self)
        out["violation"] = self.violation
        return out


@dataclass(frozen=True)
class GaussianMechanismAudit:
    """Simulated canary experiments on a Gaussian mechanism with known privacy.

    Attributes:
        mu: Claimed mu (sensitivity 1, claimed noise ``1/mu``).
        delta: Delta of the claims and bounds.
        noise_factor: Actual noise over claimed noise (1 = correct; 0.25 = 4x too little noise).
        seed: Seed of the simulation (non-cryptographic: this is a test harness).
    """

    mu: float
    delta: float = 1e-5
    noise_factor: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.mu > 0 or not self.noise_factor > 0 or not 0 < self.delta < 1:
            raise AttackConfigError(
                "need mu > 0, noise_factor > 0 and 0 < delta < 1; "
                f"got {self.mu}, {self.noise_factor}, {self.delta}"
            )

    @property
    def actual_mu(self) -> float:
        """mu of the mechanism as implemented."""
        return self.mu / self.noise_factor

    def claimed_epsilon(self) -> float:
        """Epsilon as claimed (analytic Gaussian mechanism)."""
        return gaussian_epsilon(mu=self.mu, delta=self.delta)

    def true_epsilon(self) -> float:
        """Epsilon of the mechanism as implemented."""
        return gaussian_epsilon(mu=self.actual_mu, delta=self.delta)

    def _report(self, lower_bound: EpsilonLowerBound) -> AuditReport:
        return AuditReport(
            lower_bound=lower_bound,
            claimed_epsilon=self.claimed_epsilon(),
            true_epsilon=self.true_epsilon(),
            mu=self.mu,
            noise_factor=self.noise_factor,
        )

    def _release(self, bits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return bits.astype(np.float64) + rng.normal(0.0, self.noise_factor / self.mu, size=bits.shape)

    def run_clopper_pearson(
        self,
        *,
        trials_per_side: int = 2000,
        alpha: float = 0.05,
        selection: str = "bonferroni",
        num_thresholds: int | None = 100,
    ) -> AuditReport:
        """Many independent runs with and without the canary, then a Clopper–Pearson bound.

        Args:
            trials_per_side: Runs with the canary and runs without.
            alpha: Error probability.
            selection: ``"bonferroni"``, ``"holdout"`` or ``"none"``
                (see :func:`attacks.audit.epsilon_lower_bound_from_scores`).
            num_thresholds: Threshold grid size.

        Returns:
            The report.

        Raises:
            AttackConfigError: If ``trials_per_side < 2``.
        """
        if trials_per_side < 2:
            raise AttackConfigError(f"trials_per_side must be >= 2, got {trials_per_side}")
        rng = np.random.default_rng(self.seed)
        s_in = self._release(np.ones(trials_per_side), rng)
        s_out = self._release(np.zeros(trials_per_side), rng)
        lb = epsilon_lower_bound_from_scores(
            scores_in=s_in,
            scores_out=s_out,
            delta=self.delta,
            alpha=alpha,
            selection=selection,
            num_thresholds=num_thresholds,
            seed=self.seed,
        )
        return self._report(lb)

    def run_one_run(
        self,
        *,
        num_canaries: int = 10_000,
        significance: float = 0.05,
        selection: str = "bonferroni",
        guess_counts: Sequence[tuple[int, int]] | None = None,
    ) -> AuditReport:
        """One run with ``num_canaries`` independently included canaries (Steinke et al. 2023).

        Args:
            num_canaries: m.
            significance: Error probability.
            selection: ``"bonferroni"`` or ``"none"`` over the guess-count grid.
            guess_counts: ``(k_pos, k_neg)`` pairs (default grid: see :func:`attacks.audit.one_run_audit`).

        Returns:
            The report.

        Raises:
            AttackConfigError: If ``num_canaries < 2``.
        """
        if num_canaries < 2:
            raise AttackConfigError(f"num_canaries must be >= 2, got {num_canaries}")
        rng = np.random.default_rng(self.seed)
        included = rng.random(num_canaries) < 0.5
        scores = self._release(included, rng)
        lb = one_run_audit(
            scores=scores,
            included=included,
            delta=self.delta,
            significance=significance,
            selection=selection,
            guess_counts=guess_counts,
        )
        return self._report(lb)
