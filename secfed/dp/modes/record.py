"""Record-level DP (``privacy.mode = "record"``): each site runs DP-SGD; the server keeps the columns.

Privacy unit: one record of a site; adjacency: add/remove one record. One column per site, fed by
the site's own report (:class:`secfed.dp.reports.SiteReport`: noise multiplier z, sample rate q,
number of DP steps); sites that did not train add nothing. There is no global (client-level) ε;
the reported ε is the maximum over sites. The budget caps every site's ε: a site whose next round
would exceed it is excluded (:meth:`RecordMode.over_budget`).

With ``privacy.noise_sharing`` (:mod:`secfed.dp.sharing`) every survivor's step of a round is
accounted with ``z_eff = z·√((s − c)/(m − c))`` for the round's ``s`` survivors (dropouts raise ε;
a round whose sum was not decoded, and the write-ahead ``begin``, are charged at the worst case
``t_floor``; a decoded sum of ``s <= c`` survivors is refused: :class:`PrivacyStateError`), and
every line carries the collusion assumption in ``params["noise_sharing"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privacy.accountants import Accountant, DistributedEvent, GaussianAccountant, create_accountant
from privacy.adjacency import Adjacency
from privacy.ledger import MechanismRecord, PlannedSteps
from secfed.dp.modes.base import AccountingState, PrivacyStateError
from secfed.dp.params import DPParams
from secfed.dp.reports import SiteReport
from secfed.dp.sharing import (
    effective_noise_multiplier,
    ledger_params,
    noise_sharing_enabled,
    site_noise_multiplier,
    threshold_floor,
    trust_assumption,
)

__all__ = ["RecordMode"]


class RecordMode:
    """Record-level DP-SGD at every site, with or without noise sharing (see the module docstring).

    Args:
        params: The run's privacy parameters (``mode = "record"``).
    """

    name = "record"
    privacy_unit = "record"
    adjacency = Adjacency.RECORD
    planned_key: str | None = "record_epsilon"

    def __init__(self, *, params: DPParams) -> None:
        self._params = params
        self._delta = params.delta
        self._z = params.noise_multiplier
        self._q = params.sample_rate
        self._sharing = noise_sharing_enabled(params=params)
        self.mechanism = params.record_mechanism
        self.accountant_name = params.accountant
        self._projections: dict[str, tuple[Accountant, PlannedSteps, float, str | None]] = {}

    def new_site_accountant(self) -> Accountant:
        """A Gaussian accountant of ``privacy.accountant``'s kind."""
        return create_accountant(kind=self.accountant_name)

    def new_global_accountant(self) -> None:
        """None: record mode claims no client-level ε."""
        return None

    def _eps(self, acc: Accountant) -> float:
        return float(acc.get_epsilon(delta=self._delta))

    # ---------------------------------------------------------------- budgets
    def planned_steps(self, *, state: AccountingState, name: str) -> PlannedSteps:
        """The site's next round: its last reported steps, else what it described, else the plan."""
        plan = state.site_plan.get(name)
        if plan is not None:
            return plan
        desc = state.site_info.get(int(name), {})
        steps = desc.get("steps_per_round", self._params.steps_per_round)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            steps = self._params.steps_per_round
        z = site_noise_multiplier(params=self._params) if self._sharing else self._z
        return PlannedSteps(noise_multiplier=z, sample_rate=self._q, steps=steps)

    def _site_projections(
        self, state: AccountingState, names: list[str]
    ) -> dict[str, tuple[float, str | None]]:
        """Projected ε of every site after one more planned round, with the budget's reason if over.

        A projection is reused while the site's accountant object and plan are unchanged (the
        accountant is replaced, never mutated, when the site trains), which matters for PRV.
        """

        def fresh(name: str, plan: PlannedSteps) -> bool:
            cached = self._projections.get(name)
            return cached is not None and cached[0] is state.site_acc[name] and cached[1] == plan

        plans = {n: self.planned_steps(state=state, name=n) for n in names}
        stale = {n: plan for n, plan in plans.items() if not fresh(n, plan)}
        if stale:
            check = state.require_ledger().check_budget(site_accountants=state.site_acc, site_plans=stale)
            for n, plan in stale.items():
                reason = next((r for r in check.reasons if r.startswith(f"site {n!r}:")), None)
                self._projections[n] = (state.site_acc[n], plan, check.projected_site_epsilon[n], reason)
        return {n: (self._projections[n][2], self._projections[n][3]) for n in names}

    def over_budget(self, *, state: AccountingState, budget: float) -> tuple[set[int], list[str]]:
        """Sites whose ε would exceed ``budget`` after their next planned round, with the reasons."""
        over: set[int] = set()
        reasons: list[str] = []
        for n, (eps, reason) in self._site_projections(state, [str(s) for s in state.site_ids]).items():
            if not eps <= budget:
                over.add(int(n))
                reasons.append(reason or f"site {n!r}: epsilon would reach {eps:.4g}")
        return over, reasons

    def global_plan(
        self, *, state: AccountingState, round_idx: int
    ) -> PlannedSteps | DistributedEvent | None:
        """None: there is no client-level chain."""
        return None

    # ---------------------------------------------------------------- accounting
    def write_ahead(
        self, *, state: AccountingState, may_train: list[int]
    ) -> tuple[dict[str, SiteReport], int]:
        """Every site that may train takes its planned steps; with noise sharing, at ``t_floor`` survivors."""
        planned: dict[str, SiteReport] = {}
        for sid in may_train:
            plan = self.planned_steps(state=state, name=str(sid))
            planned[str(sid)] = SiteReport(
                mechanism=self.mechanism,
                adjacency=Adjacency.RECORD,
                noise_multiplier=plan.noise_multiplier,
                sample_rate=plan.sample_rate,
                steps=plan.steps,
            )
        return planned, 0 if self._sharing else len(may_train)  # 0: the worst case t_floor

    def shared_noise_multiplier(self, survivors: int) -> tuple[float, dict[str, Any]]:
        """Noise sharing: ``z_eff`` of a round with ``survivors`` in the decoded sum, and the line's
        ``params["noise_sharing"]``; ``survivors = 0`` (not decoded, or a write-ahead ``begin``) is
        charged at the worst case ``t_floor``.

        Args:
            survivors: Sites in the decoded sum (0: not decoded).

        Returns:
            ``(z_eff, params)``.

        Raises:
            PrivacyStateError: A decoded sum of ``1 <= s <= c`` survivors (no counted noise).
        """
        c = self._params.noise_sharing.colluding_sites if self._params.noise_sharing else 0
        if 1 <= survivors <= c:
            raise PrivacyStateError(
                f"the decoded sum holds {survivors} site(s) and colluding_sites = {c}: no counted noise, "
                "refusing to release the round (honest sites refuse to unmask below the threshold "
                f"t_floor = {threshold_floor(params=self._params)} > c)"
            )
        if survivors < 1:
            return site_noise_multiplier(params=self._params), ledger_params(
                params=self._params, survivors=None
            )
        z = effective_noise_multiplier(params=self._params, survivors=survivors)
        return z, ledger_params(params=self._params, survivors=survivors)

    def site_record(
        self,
        *,
        state: AccountingState,
        name: str,
        report: SiteReport | None,
        included: bool,
        survivors: int,
    ) -> tuple[MechanismRecord, Accountant]:
        """The site's column after this round, from its report (accountant stepped on a copy).

        With noise sharing every trained site's steps are accounted with ``z_eff`` of the round's
        ``survivors`` (:meth:`shared_noise_multiplier`), whatever the site reported (its own ledger
        uses the worst case); a trained site whose update is not in the sum is charged too.
        """
        acc = state.site_acc[name]
        if report is None:  # did not train: unchanged epsilon, no steps
            prev = state.site_last.get(name)
            rec = MechanismRecord(
                epsilon=self._eps(acc) if prev is None else prev.epsilon,
                mechanism=self.mechanism if prev is None else prev.mechanism,
                noise_multiplier=self._z if prev is None else prev.noise_multiplier,
                sample_rate=self._q if prev is None else prev.sample_rate,
                steps=0,
                privacy_unit="record",
                adjacency=Adjacency.RECORD.value if prev is None else prev.adjacency,
                params=(
                    {"noise_sharing": ledger_params(params=self._params, survivors=None)}
                    if self._sharing
                    else {}
                ),
            )
            return rec, acc
        z, shared = report.noise_multiplier, None
        if self._sharing:
            z, shared = self.shared_noise_multiplier(survivors)
        new = acc.copy()
        if report.steps > 0:
            assert isinstance(new, GaussianAccountant)
            new.step(noise_multiplier=z, sample_rate=report.sample_rate, num_steps=report.steps)
        rec = MechanismRecord(
            epsilon=self._eps(new),
            mechanism=report.mechanism,
            noise_multiplier=z,
            sample_rate=report.sample_rate,
            steps=report.steps,
            privacy_unit="record",
            adjacency=report.adjacency.value,
            params={
                **({"budget_exhausted": True} if report.budget_exhausted else {}),
                **({"noise_sharing": shared} if shared is not None else {}),
            },
        )
        return rec, new

    def global_record(
        self, *, state: AccountingState, round_idx: int, clients: list[int], planning: bool
    ) -> tuple[None, None]:
        """None: there is no client-level chain."""
        return None, None

    def release(self, *, total: np.ndarray, n_survivors: int, round_idx: int) -> np.ndarray:
        """The aggregate unchanged: the sites' updates (or their noise shares) are already DP."""
        return total

    def check_released(self, *, round_idx: int, n_clients: int) -> None:
        """Nothing to check: record mode adds no central noise."""

    def summary(self, *, state: AccountingState) -> dict[str, Any]:
        """With noise sharing, its parameters and the trust assumption."""
        if not self._sharing:
            return {}
        shared = ledger_params(params=self._params, survivors=None)
        shared.pop("survivors")  # per round in the ledger; the site ledgers assume threshold_floor
        return {"noise_sharing": shared, "trust_assumption": trust_assumption(params=self._params)}
