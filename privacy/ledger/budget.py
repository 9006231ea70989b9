"""Would one more round exceed the privacy budget? Projections of planned steps onto accountants.

:class:`PlannedSteps` (Gaussian) or a :class:`~privacy.accountants.DistributedEvent` (DDG/Skellam)
describes the next round of a site or of the global mechanism; :func:`check_budget` projects each
accountant through it (without modifying it) and compares with the :class:`~privacy.ledger.PrivacyBudget`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from privacy.accountants import Accountant, DistributedDPAccountant, DistributedEvent, GaussianAccountant
from privacy.analysis._checks import check_finite_nonneg, check_int, check_rate
from privacy.errors import BudgetExceededError, InvalidPrivacyConfigError
from privacy.ledger.lines import PrivacyBudget

__all__ = ["BudgetCheck", "PlannedSteps", "check_budget"]


@dataclass(frozen=True)
class PlannedSteps:
    """The planned Gaussian steps of the next round for one site (or the global mechanism).

    Attributes:
        noise_multiplier: σ.
        sample_rate: q.
        steps: number of steps (>= 0).

    Raises:
        InvalidPrivacyConfigError: invalid values.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        check_finite_nonneg("noise_multiplier", self.noise_multiplier)
        check_rate("sample_rate", self.sample_rate)
        check_int("steps", self.steps, minimum=0)

    def describe(self) -> str:
        """Human-readable summary."""
        return f"sigma={self.noise_multiplier:g}, q={self.sample_rate:g}, {self.steps} steps"


@dataclass(frozen=True)
class BudgetCheck:
    """Outcome of :func:`check_budget`.

    Attributes:
        allowed: ``True`` if the planned round keeps every ε within budget.
        reasons: one message per exceeded budget (empty if allowed).
        projected_site_epsilon: ε each planned site would reach.
        projected_global_epsilon: ε the global mechanism would reach (``None`` if not planned).
    """

    allowed: bool
    reasons: tuple[str, ...]
    projected_site_epsilon: Mapping[str, float]
    projected_global_epsilon: float | None

    def raise_if_exceeded(self) -> None:
        """Raise :class:`~privacy.errors.BudgetExceededError` with the reasons if not allowed."""
        if not self.allowed:
            raise BudgetExceededError("; ".join(self.reasons), reasons=self.reasons)


def _project(
    acc: Accountant, plan: PlannedSteps | DistributedEvent, delta: float, where: str
) -> tuple[float, str]:
    if isinstance(plan, PlannedSteps):
        if not isinstance(acc, GaussianAccountant):
            raise InvalidPrivacyConfigError(f"{where}: a PlannedSteps plan needs a Gaussian accountant")
        eps = acc.projected_epsilon(
            delta=delta,
            noise_multiplier=plan.noise_multiplier,
            sample_rate=plan.sample_rate,
            num_steps=plan.steps,
        )
        return eps, plan.describe()
    if isinstance(plan, DistributedEvent):
        if not isinstance(acc, DistributedDPAccountant):
            raise InvalidPrivacyConfigError(
                f"{where}: a DistributedEvent plan needs a DistributedDPAccountant"
            )
        eps = acc.projected_epsilon(delta=delta, event=plan, num_rounds=1)
        desc = f"{plan.mechanism}, {plan.num_survivors} clients, q={plan.sample_rate:g}"
        return eps, desc
    raise InvalidPrivacyConfigError(
        f"{where}: plan must be PlannedSteps or DistributedEvent, got {type(plan).__name__}"
    )


def check_budget(
    *,
    budget: PrivacyBudget,
    site_accountants: Mapping[str, Accountant],
    site_plans: Mapping[str, PlannedSteps | DistributedEvent],
    global_accountant: Accountant | None = None,
    global_plan: PlannedSteps | DistributedEvent | None = None,
) -> BudgetCheck:
    """Would one more round, as planned, exceed the budget per site or globally?

    Args:
        budget: caps and δ.
        site_accountants: each site's accountant as of now (not modified).
        site_plans: the planned next-round steps of the sites that will train.
        global_accountant: the client-level accountant (if any).
        global_plan: the planned global mechanism of the next round (if any).

    Returns:
        A :class:`BudgetCheck`; call :meth:`BudgetCheck.raise_if_exceeded` to enforce it.

    Raises:
        InvalidPrivacyConfigError: a plan without accountant, or plan/accountant of mismatched types.
    """
    if not isinstance(budget, PrivacyBudget):
        raise InvalidPrivacyConfigError(f"budget must be a PrivacyBudget, got {type(budget).__name__}")
    reasons: list[str] = []
    projected: dict[str, float] = {}
    for name, plan in site_plans.items():
        acc = site_accountants.get(name)
        if acc is None:
            raise InvalidPrivacyConfigError(f"site {name!r} has a plan but no accountant")
        eps, desc = _project(acc, plan, budget.delta, f"site {name!r}")
        projected[name] = eps
        if budget.site_epsilon is not None and not eps <= budget.site_epsilon:
            now = acc.get_epsilon(delta=budget.delta)
            reasons.append(
                f"site {name!r}: record-level epsilon would rise from {now:.4g} to {eps:.4g} > budget "
                f"{budget.site_epsilon:g} at delta={budget.delta:g} ({desc})"
            )
    projected_global: float | None = None
    if global_plan is not None:
        if global_accountant is None:
            raise InvalidPrivacyConfigError("a global plan needs a global accountant")
        projected_global, desc = _project(global_accountant, global_plan, budget.delta, "global")
        if budget.global_epsilon is not None and not projected_global <= budget.global_epsilon:
            now = global_accountant.get_epsilon(delta=budget.delta)
            reasons.append(
                f"global: client-level epsilon would rise from {now:.4g} to {projected_global:.4g} > budget "
                f"{budget.global_epsilon:g} at delta={budget.delta:g} ({desc})"
            )
    return BudgetCheck(
        allowed=not reasons,
        reasons=tuple(reasons),
        projected_site_epsilon=projected,
        projected_global_epsilon=projected_global,
    )
