"""Calibration API, the one front end used outside ``privacy/`` (CLI, DP planning): ε of a
schedule, and the noise needed for a target ε.

The implementations are :mod:`privacy.analysis.calibration`'s (which validates the arguments and
does the bisection); this module names them for their callers and adds no code of its own, so
there is one implementation of each calculation (issue 20). The expert knobs (RDP orders, PRV/PLD
precision, ``rtol``) keep their defaults unless a caller sets them.

* :func:`epsilon_for` / :func:`calibrate_noise` (:func:`~privacy.analysis.calibration.gaussian_epsilon`
  / :func:`~privacy.analysis.calibration.calibrate_gaussian_noise`): Poisson-subsampled Gaussian
  (DP-SGD steps or DP-FedAvg rounds) with the ``"rdp"``, ``"prv"`` or ``"pld"`` accountant. With
  q = 0.01, T = 1000, δ = 1e-5, σ = 1 they give 2.1014 (RDP), 1.8384 (PRV) and 1.8282 (PLD), as
  Opacus 1.6 and dp_accounting 0.6 do.
* :func:`distributed_epsilon_for` / :func:`calibrate_distributed_noise`
  (:func:`~privacy.analysis.calibration.distributed_epsilon` /
  :func:`~privacy.analysis.calibration.calibrate_distributed_noise`): distributed discrete Gaussian
  (Kairouz et al. 2021) or Skellam (Agarwal et al. 2021) in integer units. To plan a whole encoder
  (σ and γ for a bit width) use :func:`privacy.distributed.calibrate_distributed_dp`.
"""

from __future__ import annotations

from privacy.analysis import calibration as _impl

__all__ = [
    "GAUSSIAN_ACCOUNTANTS",
    "calibrate_distributed_noise",
    "calibrate_noise",
    "distributed_epsilon_for",
    "epsilon_for",
]

#: Accounting methods for the Poisson-subsampled Gaussian.
GAUSSIAN_ACCOUNTANTS = _impl.GAUSSIAN_ACCOUNTANTS
#: ε after ``steps`` Poisson-subsampled Gaussian steps with noise multiplier σ and rate q.
epsilon_for = _impl.gaussian_epsilon
#: Smallest σ (to relative ``rtol``) with ``epsilon_for(σ, ...) <= target_epsilon``.
calibrate_noise = _impl.calibrate_gaussian_noise
#: ε of ``rounds`` rounds of the distributed DDG/Skellam mechanism (integer units; RDP accounting).
distributed_epsilon_for = _impl.distributed_epsilon
#: Local noise of the distributed DDG/Skellam mechanism for a target ε.
calibrate_distributed_noise = _impl.calibrate_distributed_noise
