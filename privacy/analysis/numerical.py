"""Numerical (ε, δ) accounting of compositions of Poisson-subsampled Gaussians: PRV and PLD.

* PRV: Gopi, Lee & Wutschitz, "Numerical Composition of Differential Privacy" (NeurIPS 2021,
  arXiv 2106.02848), via Opacus 1.6's implementation (``opacus.accountants.PRVAccountant``). It
  returns an upper bound with additive error at most ``eps_error`` in ε (and ``delta_error`` in δ).
* PLD: Koskela, Jälkö & Honkela (AISTATS 2020) / Doroshenko et al., "Connect the Dots" (PETS 2022,
  arXiv 2207.04380), via dp_accounting 0.6's ``privacy_loss_distribution`` module, built exactly as its
  ``PLDAccountant`` builds a Poisson-sampled Gaussian event (add/remove adjacency, connect-the-dots,
  pessimistic discretisation with ``value_discretization_interval``); the per-(σ, q) PLD is memoised.

Both take a *grouped* history ``[(σ, q, steps), ...]``: identical (σ, q) steps are self-composed by
FFT in one go, so the cost depends on the number of distinct groups, not on the order of the steps.
Groups with ``q == 0`` or ``steps == 0`` release nothing about the unit and are skipped; any group
with ``σ == 0`` and ``q > 0`` gives ``ε = inf``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np
from dp_accounting.pld import privacy_loss_distribution
from opacus.accountants import PRVAccountant as _OpacusPRVAccountant

from privacy.analysis._checks import check_delta, check_finite_nonneg, check_int, check_positive, check_rate
from privacy.errors import InvalidPrivacyConfigError

__all__ = ["HistoryEntry", "clean_history", "pld_epsilon", "prv_epsilon"]

#: (noise_multiplier σ, sample_rate q, steps)
HistoryEntry = tuple[float, float, int]


def clean_history(*, history: Sequence[HistoryEntry]) -> tuple[list[HistoryEntry], bool]:
    """Validate a grouped history and drop groups that release nothing (q = 0 or steps = 0).

    Args:
        history: ``(σ, q, steps)`` entries.

    Returns:
        ``(groups, has_non_private)``: the remaining groups with σ > 0, and whether some group had
        σ = 0 with q > 0 (which means ε = inf).

    Raises:
        InvalidPrivacyConfigError: a malformed entry.
    """
    out: list[HistoryEntry] = []
    non_private = False
    for i, entry in enumerate(history):
        if len(entry) != 3:
            raise InvalidPrivacyConfigError(f"history[{i}] must be (noise_multiplier, sample_rate, steps)")
        sigma = check_finite_nonneg(f"history[{i}].noise_multiplier", entry[0])
        q = check_rate(f"history[{i}].sample_rate", entry[1])
        steps = check_int(f"history[{i}].steps", entry[2], minimum=0)
        if q == 0.0 or steps == 0:
            continue
        if sigma == 0.0:
            non_private = True
            continue
        out.append((sigma, q, steps))
    return out, non_private


def prv_epsilon(
    *,
    history: Sequence[HistoryEntry],
    delta: float,
    eps_error: float = 0.01,
    delta_error: float | None = None,
) -> float:
    """Upper bound on ε by PRV composition (Gopi et al. 2021; Opacus' implementation).

    Args:
        history: grouped ``(σ, q, steps)`` entries.
        delta: target δ in (0, 1).
        eps_error: allowed additive error in ε (Opacus default 0.01).
        delta_error: allowed error in δ; defaults to ``delta / 1000`` (Opacus default).

    Returns:
        ε (upper bound); 0 for an empty history, ``inf`` if some step had no noise.

    Raises:
        InvalidPrivacyConfigError: invalid parameters.
    """
    delta = check_delta(delta)
    eps_error = check_positive("eps_error", eps_error)
    d_err = delta / 1000.0 if delta_error is None else check_positive("delta_error", delta_error)
    groups, non_private = clean_history(history=history)
    if non_private:
        return math.inf
    if not groups:
        return 0.0
    acc = _OpacusPRVAccountant()
    acc.history = [(sigma, q, steps) for sigma, q, steps in groups]
    # Opacus warns about log(0) at q = 1 and about the RDP order range of its domain-size heuristic.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=delta, eps_error=eps_error, delta_error=d_err))


@functools.lru_cache(maxsize=256)
def _base_pld(sigma: float, q: float, interval: float) -> privacy_loss_distribution.PrivacyLossDistribution:
    """PLD of one (σ, q) step, as dp_accounting's PLDAccountant builds it (add/remove, connect-the-dots).

    Building it dominates the cost (about 1 s at the default grid), so it is memoised; PLD objects are
    immutable (composition returns new objects).
    """
    return privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=sigma,
        sensitivity=1.0,
        sampling_prob=q,
        value_discretization_interval=interval,
        use_connect_dots=True,
    )


def pld_epsilon(
    *,
    history: Sequence[HistoryEntry],
    delta: float,
    value_discretization_interval: float = 1e-4,
) -> float:
    """ε by privacy-loss-distribution composition (dp_accounting's ``PLDAccountant``).

    Args:
        history: grouped ``(σ, q, steps)`` entries.
        delta: target δ in (0, 1).
        value_discretization_interval: PLD grid step (dp_accounting default 1e-4); smaller is
            tighter and slower. The discretisation is pessimistic, so the result is an upper bound.

    Returns:
        ε; 0 for an empty history, ``inf`` if some step had no noise.

    Raises:
        InvalidPrivacyConfigError: invalid parameters.
    """
    delta = check_delta(delta)
    interval = check_positive("value_discretization_interval", value_discretization_interval)
    groups, non_private = clean_history(history=history)
    if non_private:
        return math.inf
    if not groups:
        return 0.0
    composed = None
    for sigma, q, steps in groups:
        if q == 1.0:
            # Unsampled Gaussians compose exactly: `steps` of them are one with σ/√steps.
            part = _base_pld(sigma / math.sqrt(steps), 1.0, interval)
        else:
            part = _base_pld(sigma, q, interval).self_compose(steps)
        composed = part if composed is None else composed.compose(part)
    assert composed is not None
    return float(composed.get_epsilon_for_delta(delta))
