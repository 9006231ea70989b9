"""Calibration API (used by the CLI): ε of a schedule, and the noise needed for a target ε.

Thin front-ends over :mod:`privacy.analysis.calibration` (which validates the arguments and does the
bisection); they hide its expert knobs (RDP orders, PRV/PLD precision):

* :func:`epsilon_for` / :func:`calibrate_noise` — Poisson-subsampled Gaussian (DP-SGD steps or
  DP-FedAvg rounds) with the ``"rdp"``, ``"prv"`` or ``"pld"`` accountant. With q = 0.01, T = 1000,
  δ = 1e-5, σ = 1 they give 2.1014 (RDP), 1.8384 (PRV) and 1.8282 (PLD), as Opacus 1.6 and
  dp_accounting 0.6 do.
* :func:`distributed_epsilon_for` / :func:`calibrate_distributed_noise` — distributed discrete
  Gaussian (Kairouz et al. 2021) or Skellam (Agarwal et al. 2021) in integer units; the latter is
  :func:`privacy.analysis.calibration.calibrate_distributed_noise` itself (it has no expert knobs). To
  plan a whole encoder (σ and γ for a bit width) use :func:`privacy.distributed.calibrate_distributed_dp`.
"""

from __future__ import annotations

from privacy.analysis.calibration import (
    GAUSSIAN_ACCOUNTANTS,
    calibrate_distributed_noise,
    calibrate_gaussian_noise,
    distributed_epsilon,
    gaussian_epsilon,
)

__all__ = [
    "GAUSSIAN_ACCOUNTANTS",
    "calibrate_distributed_noise",
    "calibrate_noise",
    "distributed_epsilon_for",
    "epsilon_for",
]


def epsilon_for(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """ε after ``steps`` Poisson-subsampled Gaussian steps with noise multiplier σ and rate q.

    Args:
        noise_multiplier: σ >= 0.
        sample_rate: q in [0, 1].
        steps: number of steps >= 0.
        delta: δ in (0, 1).
        accountant: ``"rdp"``, ``"prv"`` or ``"pld"``.

    Returns:
        ε.

    Raises:
        InvalidPrivacyConfigError: invalid arguments or accountant name.
    """
    return gaussian_epsilon(
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        steps=steps,
        delta=delta,
        accountant=accountant,
    )


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
    rtol: float = 1e-3,
) -> float:
    """Smallest σ (to relative ``rtol``) with ``epsilon_for(σ, ...) <= target_epsilon``.

    Args:
        target_epsilon: ε* > 0.
        delta: δ in (0, 1).
        sample_rate: q in (0, 1].
        steps: number of steps >= 1.
        accountant: ``"rdp"``, ``"prv"`` or ``"pld"``.
        rtol: relative precision on σ.

    Returns:
        σ; ``epsilon_for(noise_multiplier=σ, ...) <= target_epsilon`` is guaranteed.

    Raises:
        InvalidPrivacyConfigError: invalid arguments.
        CalibrationError: the target cannot be reached.
    """
    return calibrate_gaussian_noise(
        target_epsilon=target_epsilon,
        delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=accountant,
        rtol=rtol,
    )


def distributed_epsilon_for(
    *,
    mechanism: str,
    local_stddev: float,
    num_clients: int,
    l2_sensitivity: float,
    dim: int,
    sample_rate: float,
    rounds: int,
    delta: float,
    l1_sensitivity: float | None = None,
) -> float:
    """ε of ``rounds`` rounds of the distributed DDG/Skellam mechanism (integer units; RDP accounting).

    Args:
        mechanism: ``"ddg"`` or ``"skellam"``.
        local_stddev: σ̄ per client (integer units).
        num_clients: clients whose noise reaches the sum each round.
        l2_sensitivity: Δ₂ (integer units).
        dim: d (after padding).
        sample_rate: client sampling rate q.
        rounds: number of rounds.
        delta: δ.
        l1_sensitivity: Δ₁; defaults to ``Δ₂ · min(√d, Δ₂)``.

    Returns:
        ε.

    Raises:
        InvalidPrivacyConfigError: invalid arguments.
    """
    return distributed_epsilon(
        mechanism=mechanism,
        local_stddev=local_stddev,
        num_clients=num_clients,
        l2_sensitivity=l2_sensitivity,
        dim=dim,
        sample_rate=sample_rate,
        rounds=rounds,
        delta=delta,
        l1_sensitivity=l1_sensitivity,
    )
