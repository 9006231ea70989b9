"""What the canary audits share: their configuration checks, accountant ε, proven bounds and statements.

The white-box audit (:mod:`attacks.whitebox_audit`), the canary-client audit
(:mod:`attacks.canary_clients`) and the black-box audit with worst-case initial parameters
(:mod:`attacks.blackbox_init_audit`) each check a frozen configuration, score canaries, bound ε from
the scores with the proven one-run ε-DP analysis (:func:`attacks.audit.one_run_audit`) and the GDP
analysis (:func:`attacks.fdp.gdp_audit`), each beside its **ceiling** (the bound when every guess is
right: what the audit could detect at most), and state the outcome against the accountant's ε. This
module holds those shared steps once; each audit keeps its own mechanism, scores and report layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from attacks.audit import EpsilonLowerBound, one_run_audit
from attacks.errors import AttackConfigError
from attacks.fdp import GDPLowerBound, gdp_audit, gdp_ceiling

__all__ = [
    "ACCOUNTANTS",
    "AuditReport",
    "CanaryBounds",
    "audit_statement",
    "canary_bounds",
    "check_audit_config",
    "check_choice",
    "check_ints",
    "check_positive_numbers",
    "check_probabilities",
    "check_sample_rate",
    "distributed_accountant_epsilon",
    "distributed_sum",
    "dp_fedavg_sums",
    "gaussian_accountant_epsilon",
    "participation",
    "progress_sink",
    "require_config",
]

Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------------------
# the report layout
# --------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class AuditReport:
    """What an audit's result reports, in one layout: ``method`` (when the class names one), the
    configuration, the accountant's ε, the audit's own findings (:meth:`findings`), the verdict,
    the statement and the timings. The audits' results are dataclasses that add their findings.

    Attributes:
        method: The audit's method, first in the report (``None``: no ``method`` key).
        config: The audit configuration (with ``to_dict``).
        accountant_epsilon: The accountant's ε of the audited steps.
        statement: The outcome against the accountant's ε, in words.
        timings: Seconds per phase.
    """

    method: ClassVar[str | None] = None
    config: Any
    accountant_epsilon: float
    statement: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def violation(self) -> bool:
        """True when the audit refutes the accountant's ε (each audit decides)."""
        raise NotImplementedError

    def findings(self) -> dict[str, Any]:
        """The audit's own entries of the report, between the accountant's ε and the verdict."""
        raise NotImplementedError

    def reported_epsilon(self) -> float | None:
        """The accountant's ε as the report states it."""
        return self.accountant_epsilon

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        head: dict[str, Any] = {} if self.method is None else {"method": self.method}
        return {
            **head,
            "config": self.config.to_dict(),
            "accountant_epsilon": self.reported_epsilon(),
            **self.findings(),
            "violation": self.violation,
            "statement": self.statement,
            "timings_s": self.timings,
        }


# --------------------------------------------------------------------------------------------------
# configuration checks (AttackConfigError with the field's name)
# --------------------------------------------------------------------------------------------------


def check_positive_numbers(*, config: object, names: Sequence[str]) -> None:
    """Refuse a field of ``config`` among ``names`` that is not a finite number > 0 (``bool`` refused).

    Args:
        config: The audit configuration.
        names: Its fields to check.

    Raises:
        AttackConfigError: Naming the first offending field.
    """
    for name in names:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise AttackConfigError(f"{name} must be a finite number > 0, got {v!r}")


def check_ints(*, config: object, minimums: Sequence[tuple[str, int]]) -> None:
    """Refuse a field of ``config`` that is not an ``int`` (``bool`` refused) at least its minimum.

    Args:
        config: The audit configuration.
        minimums: ``(field, smallest allowed value)`` pairs.

    Raises:
        AttackConfigError: Naming the first offending field.
    """
    for name, lo in minimums:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise AttackConfigError(f"{name} must be an int >= {lo}, got {v!r}")


def check_sample_rate(*, sample_rate: float) -> None:
    """Refuse a Poisson rate outside ``(0, 1]``.

    Args:
        sample_rate: The rate.

    Raises:
        AttackConfigError: If it is outside ``(0, 1]``.
    """
    if not 0 < sample_rate <= 1:
        raise AttackConfigError(f"sample_rate must lie in (0, 1], got {sample_rate!r}")


def check_probabilities(*, delta: float, significance: float) -> None:
    """Refuse a δ or an error probability outside ``(0, 1)``.

    Args:
        delta: δ of the bounds and of the accountant's ε.
        significance: Error probability of the bounds.

    Raises:
        AttackConfigError: If either is outside ``(0, 1)``.
    """
    if not 0 < delta < 1 or not 0 < significance < 1:
        raise AttackConfigError("delta and significance must lie in (0, 1)")


def check_choice(*, name: str, value: str, choices: Sequence[str]) -> None:
    """Refuse a value outside ``choices`` (message: ``name must be 'a', 'b' or 'c', got ...``).

    Args:
        name: The field's name.
        value: Its value.
        choices: The allowed values (at least two).

    Raises:
        AttackConfigError: If ``value`` is not among ``choices``.
    """
    if value not in choices:
        quoted = [repr(c) for c in choices]
        allowed = f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise AttackConfigError(f"{name} must be {allowed}, got {value!r}")


#: Accountants an audit's ε can come from.
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv", "pld")


def check_audit_config(
    *,
    config: Any,
    positive: Sequence[str],
    minimums: Sequence[tuple[str, int]],
    choices: Sequence[tuple[str, Sequence[str]]] = (),
) -> None:
    """The checks every canary audit's configuration makes, in one place: its positive numbers, its
    ``sample_rate``, its counts, its ``delta`` and ``significance``, its ``accountant`` (one of
    :data:`ACCOUNTANTS`) and any other choice fields.

    Args:
        config: The audit configuration (with ``sample_rate``, ``delta``, ``significance`` and
            ``accountant`` fields).
        positive: Fields that must be finite numbers > 0.
        minimums: ``(field, smallest allowed value)`` of the int fields.
        choices: ``(field, allowed values)`` of further choice fields.

    Raises:
        AttackConfigError: Naming the first offending field.
    """
    check_positive_numbers(config=config, names=positive)
    check_sample_rate(sample_rate=config.sample_rate)
    check_ints(config=config, minimums=minimums)
    check_probabilities(delta=config.delta, significance=config.significance)
    for name, allowed in (*choices, ("accountant", ACCOUNTANTS)):
        check_choice(name=name, value=getattr(config, name), choices=allowed)


def require_config(*, config: object, kind: type) -> None:
    """Refuse a configuration that is not a ``kind`` (the audits' run functions take only their own).

    Args:
        config: What the caller passed.
        kind: The audit's configuration class.

    Raises:
        AttackConfigError: If ``config`` is not a ``kind``.
    """
    if not isinstance(config, kind):
        raise AttackConfigError(f"config must be a {kind.__name__}, got {type(config).__name__}")


def progress_sink(progress: Progress | None) -> Progress:
    """``progress``, or a callable that drops the lines when there is none."""
    return progress if progress is not None else (lambda _line: None)


# --------------------------------------------------------------------------------------------------
# the mechanism's randomness and the distributed release
# --------------------------------------------------------------------------------------------------


def participation(*, sample_rate: float, count: int) -> np.ndarray:
    """Poisson coins (rate ``sample_rate``) of ``count`` units for one step, from the mechanism's noise
    source (:func:`privacy.noise.noise_source`, so a fixed source fixes them too); all ``True`` at 1.

    Args:
        sample_rate: ``q`` in ``(0, 1]``.
        count: Units.

    Returns:
        A bool array of ``count`` coins.
    """
    from privacy.noise import noise_source

    if sample_rate >= 1.0:
        return np.ones(count, dtype=bool)
    return np.asarray(noise_source().bernoulli(p=np.full(count, sample_rate)), dtype=bool)


def dp_fedavg_sums(
    *,
    rows: np.ndarray,
    clip_norm: float,
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    progress: Progress,
) -> np.ndarray:
    """The noisy sums DP-FedAvg releases over ``rounds`` rounds when the clients hold ``rows``: each
    round Poisson-samples the clients (:func:`participation`), clips their rows and adds central
    Gaussian noise (:class:`privacy.client_dp.DPFedAvgAggregator`).

    Args:
        rows: ``(n, d)`` client updates.
        clip_norm: The mechanism's clip bound.
        noise_multiplier: The mechanism's ``z`` (noise std ``z * clip_norm`` on the sum).
        sample_rate: Per-round participation rate.
        rounds: Rounds released.
        progress: Receives a line per round.

    Returns:
        ``(rounds, d)`` released sums.
    """
    from privacy.client_dp import DPFedAvgAggregator, DPFedAvgConfig

    n, dim = rows.shape
    agg = DPFedAvgAggregator(
        config=DPFedAvgConfig(
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            sample_rate=sample_rate,
            num_clients=max(1, n),
        )
    )
    out = np.zeros((rounds, dim))
    for t in range(rounds):
        take = participation(sample_rate=sample_rate, count=n)
        out[t] = np.asarray(agg.noisy_sum(updates=list(rows[take]), dim=dim), dtype=np.float64)
        progress(f"DP-FedAvg round {t + 1}/{rounds} ({int(take.sum())} clients)")
    return out


def distributed_sum(
    *, plan: Any, bits: int, rows: np.ndarray, take: np.ndarray, rotation_seed: bytes
) -> np.ndarray:
    """What the server of distributed DP decodes when the clients ``take`` send ``rows``: each encodes
    its row (clip, rotate, scale, add its share of the noise, round) with the round's public rotation
    seed, the encodings are summed modulo ``2^bits``, and the sum is decoded.

    Args:
        plan: The :class:`privacy.distributed.DistributedDPConfig` of the mechanism.
        bits: Modulus bits of the sum.
        rows: ``(n, d)`` client updates.
        take: Indices of the clients that send this round.
        rotation_seed: The round's public rotation seed.

    Returns:
        The decoded ``(d,)`` sum.
    """
    from privacy.distributed import DistributedDPEncoder

    mask = np.uint64((1 << bits) - 1) if bits < 64 else None
    total = np.zeros(plan.padded_dim, dtype=np.uint64)
    for j in take:
        total += DistributedDPEncoder(config=plan, rotation_seed=rotation_seed).encode(x=rows[j])
        if mask is not None:
            total &= mask
    server = DistributedDPEncoder(config=plan, rotation_seed=rotation_seed)
    return np.asarray(server.decode(total=total, n_summed=max(1, int(len(take)))))


# --------------------------------------------------------------------------------------------------
# the accountant's ε of the audited steps
# --------------------------------------------------------------------------------------------------


def gaussian_accountant_epsilon(
    *, config: Any, steps: int | None = None, sample_rate: float | None = None
) -> float:
    """ε of the configuration's claimed subsampled Gaussian steps by its accountant
    (:func:`privacy.calibration.epsilon_for`).

    Args:
        config: The audit configuration: its ``noise_multiplier`` (the claimed ``z``),
            ``sample_rate``, ``steps``, ``delta`` and ``accountant`` (``"rdp"``, ``"prv"`` or ``"pld"``).
        steps: Steps composed, when not ``config.steps``.
        sample_rate: ``q`` of every step, when not ``config.sample_rate``.

    Returns:
        ε at ``config.delta``.

    Raises:
        privacy.errors.PrivacyError: If the accountant refuses the parameters.
    """
    from privacy.calibration import epsilon_for

    return float(
        epsilon_for(
            noise_multiplier=config.noise_multiplier,
            sample_rate=config.sample_rate if sample_rate is None else sample_rate,
            steps=config.steps if steps is None else steps,
            delta=config.delta,
            accountant=config.accountant,
        )
    )


def distributed_accountant_epsilon(
    *, plan: Any, survivors: int, sample_rate: float, rounds: int, delta: float
) -> float:
    """ε of ``rounds`` distributed-DP rounds by :class:`privacy.accountants.DistributedDPAccountant`.

    Args:
        plan: The :class:`privacy.distributed.DistributedDPConfig` of the mechanism (its ``event``).
        survivors: Clients whose noise shares are in every sum.
        sample_rate: Client sampling rate of a round.
        rounds: Rounds composed.
        delta: δ of the ε.

    Returns:
        ε at ``delta``.
    """
    from privacy.accountants import DistributedDPAccountant

    acc = DistributedDPAccountant()
    acc.step(event=plan.event(num_survivors=survivors, sample_rate=sample_rate), num_rounds=rounds)
    return float(acc.get_epsilon(delta=delta))


# --------------------------------------------------------------------------------------------------
# the proven bounds beside their ceilings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryBounds:
    """The proven one-run ε-DP bound and the GDP bound of one set of canary scores, with their ceilings.

    Attributes:
        one_run: :func:`attacks.audit.one_run_audit` on the scores.
        one_run_ceiling: The same on perfectly separating scores (every guess right).
        gdp: :func:`attacks.fdp.gdp_audit` on the scores.
        gdp_ceiling: :func:`attacks.fdp.gdp_ceiling` of the inclusion bits.
    """

    one_run: EpsilonLowerBound
    one_run_ceiling: EpsilonLowerBound
    gdp: GDPLowerBound
    gdp_ceiling: GDPLowerBound

    def gdp_entry(self) -> dict[str, Any]:
        """The GDP bound as a dict, with its ceiling's ε (``ceiling``) and μ (``ceiling_mu``)."""
        return {
            **self.gdp.to_dict(),
            "ceiling": float(self.gdp_ceiling.epsilon),
            "ceiling_mu": float(self.gdp_ceiling.mu),
        }


def canary_bounds(
    *, scores: np.ndarray, included: np.ndarray, delta: float, significance: float
) -> CanaryBounds:
    """Both proven bounds of ``scores`` and their ceilings, at ``delta`` and ``significance``.

    Args:
        scores: One score per canary (higher = more likely included).
        included: The auditor's inclusion bits.
        delta: δ of the bounds.
        significance: Error probability of each bound.

    Returns:
        The :class:`CanaryBounds`.

    Raises:
        attacks.errors.AttackInputError: On malformed scores.
    """
    inc = np.asarray(included)
    return CanaryBounds(
        one_run=one_run_audit(scores=scores, included=inc, delta=delta, significance=significance),
        one_run_ceiling=one_run_audit(
            scores=inc.astype(np.float64), included=inc, delta=delta, significance=significance
        ),
        gdp=gdp_audit(scores=scores, included=inc, delta=delta, significance=significance),
        gdp_ceiling=gdp_ceiling(included=inc, delta=delta, significance=significance),
    )


# --------------------------------------------------------------------------------------------------
# the statement
# --------------------------------------------------------------------------------------------------


def audit_statement(
    *,
    accountant_epsilon: float,
    ceilings: Sequence[tuple[str, float]],
    sample: str,
    violation: bool,
    findings: Sequence[str] = (),
    exceeded: str = "an empirical lower bound",
) -> str:
    """One line: the audit's findings, the bounds whose ceiling is below the accountant's ε, the verdict.

    Args:
        accountant_epsilon: The accountant's ε (infinite: no DP claimed).
        ceilings: ``(label, ceiling ε)`` of each bound; one whose ceiling is below a finite
            accountant ε gets a clause "cannot detect leakage below ...".
        sample: What the ceilings were computed with ("these canaries", "400 trials").
        violation: Whether the audit refutes the accountant's ε.
        findings: Leading clauses (estimates, further bounds).
        exceeded: What exceeds the accountant's ε when ``violation``.

    Returns:
        The clauses joined by ``"; "``.
    """
    acc = accountant_epsilon
    parts = list(findings)
    if math.isfinite(acc):
        parts += [
            f"{label}: cannot detect leakage below {acc:.2f} (the accountant's epsilon): its ceiling with "
            f"{sample} is {ceiling:.2f}"
            for label, ceiling in ceilings
            if ceiling < acc
        ]
    if violation:
        parts.append(f"VIOLATION: {exceeded} exceeds the accountant's epsilon")
    elif math.isfinite(acc):
        parts.append("no violation detected")
    else:
        parts.append("no DP claimed: the bounds show how much one run reveals")
    return "; ".join(parts)
