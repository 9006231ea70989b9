"""What every privacy mode's accounting shares: the server's state between rounds and the protocol.

:class:`AccountingState` is what :class:`secfed.dp.server.ServerPrivacy` holds between rounds (the
ledger, the sites' columns, the client-level chain), rebuilt from the ledger on every resume.
:class:`PrivacyMode` is the one small protocol each mode implements (record-level DP-SGD,
:mod:`secfed.dp.modes.record`; client-level DP-FedAvg, :mod:`secfed.dp.modes.client`; distributed
DDG/Skellam, :mod:`secfed.dp.modes.distributed`): how a round is planned, noised and accounted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from privacy.accountants import Accountant, DistributedEvent
from privacy.adjacency import Adjacency
from privacy.ledger import MechanismRecord, PlannedSteps, PrivacyLedger
from secfed.dp.reports import SiteReport
from secfed.errors import SecfedError

__all__ = ["AccountingState", "PrivacyMode", "PrivacyStateError", "RoundRecords"]


class PrivacyStateError(SecfedError, RuntimeError):
    """:class:`secfed.dp.server.ServerPrivacy` was called out of order (e.g. a round before
    ``resume_to``), or a round would be released without the noise it is accounted with."""


#: A ledger line's columns after one round: every site's record and the global record (or None).
RoundRecords = tuple[dict[str, MechanismRecord], MechanismRecord | None]


@dataclass
class AccountingState:
    """The server's privacy state between rounds; everything but ``site_info`` replays from the ledger.

    Attributes:
        ledger: The open ledger (``None`` before ``resume_to``).
        site_ids: The registered sites, sorted.
        site_info: Each site's public ``describe()`` (from ``site_info``), by site id.
        site_acc: Each site's record-level accountant, by site name (``str(site id)``).
        site_last: Each site's last ledger record.
        site_plan: Each site's last reported DP steps (the plan of its next round).
        exhausted: Sites whose own ledger reported their budget spent.
        global_acc: The client-level chain (``None`` in record mode).
        global_last: The chain's last ledger record.
        excluded: The sites the budget excludes from the round in flight.
    """

    ledger: PrivacyLedger | None = None
    site_ids: list[int] = field(default_factory=list)
    site_info: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    site_acc: dict[str, Accountant] = field(default_factory=dict)
    site_last: dict[str, MechanismRecord] = field(default_factory=dict)
    site_plan: dict[str, PlannedSteps] = field(default_factory=dict)
    exhausted: set[str] = field(default_factory=set)
    global_acc: Accountant | None = None
    global_last: MechanismRecord | None = None
    excluded: frozenset[int] = frozenset()

    def replay(
        self, *, ledger: PrivacyLedger, site_acc: dict[str, Accountant], global_acc: Accountant | None
    ) -> None:
        """Rebuild the state from an opened ledger and its replayed accountants (``resume_to``).

        Every counted release sets each site's last record, its plan (its last round with steps)
        and whether its own budget is spent, and the chain's last record; the sites' registration
        and descriptions are kept.
        """
        self.ledger = ledger
        self.site_acc = dict(site_acc)
        self.global_acc = global_acc
        self.site_last, self.site_plan, self.exhausted = {}, {}, set()
        self.global_last = None
        for entry in ledger.releases():
            for name, rec in entry.sites.items():
                self.site_last[name] = rec
                if rec.steps > 0:
                    self.site_plan[name] = PlannedSteps(
                        noise_multiplier=rec.noise_multiplier, sample_rate=rec.sample_rate, steps=rec.steps
                    )
                if rec.params.get("budget_exhausted") is True:
                    self.exhausted.add(name)
            if entry.global_record is not None:
                self.global_last = entry.global_record

    def require_ledger(self) -> PrivacyLedger:
        """The open ledger.

        Raises:
            PrivacyStateError: Before ``resume_to``.
        """
        if self.ledger is None:
            raise PrivacyStateError(
                "call ServerPrivacy.resume_to(completed_round=...) before the first round"
            )
        return self.ledger


class PrivacyMode(Protocol):
    """How one privacy mode plans, noises and accounts a round (the server's strategy object).

    Attributes:
        name: ``record``, ``client`` or ``distributed`` (``privacy.mode``).
        privacy_unit: ``record`` or ``client``: the unit of the claimed (reported) ε.
        adjacency: The adjacency relation of the claimed guarantee.
        mechanism: The mechanism of the claimed guarantee (ledger and summary name).
        accountant_name: ``rdp``/``prv``/``pld`` (Gaussian mechanisms) or ``distributed-rdp``.
        planned_key: The key of :func:`secfed.dp.planning.planned_epsilon` that plans the claimed
            ε (``None``: no Gaussian plan of it; distributed calibration plans its own).
    """

    name: str
    privacy_unit: str
    adjacency: Adjacency
    mechanism: str
    accountant_name: str
    planned_key: str | None

    def new_site_accountant(self) -> Accountant:
        """A fresh accountant of a site's record-level column."""
        ...

    def new_global_accountant(self) -> Accountant | None:
        """A fresh client-level chain (``None``: the mode has none)."""
        ...

    def over_budget(self, *, state: AccountingState, budget: float) -> tuple[set[int], list[str]]:
        """Sites whose record-level ε would exceed ``budget`` after one more round, and why."""
        ...

    def global_plan(
        self, *, state: AccountingState, round_idx: int
    ) -> PlannedSteps | DistributedEvent | None:
        """The round's worst-case step of the client-level chain (``None``: it cannot rise)."""
        ...

    def write_ahead(
        self, *, state: AccountingState, may_train: list[int]
    ) -> tuple[dict[str, SiteReport], int]:
        """The largest cost the round can have: planned site reports and the survivor count to charge."""
        ...

    def site_record(
        self,
        *,
        state: AccountingState,
        name: str,
        report: SiteReport | None,
        included: bool,
        survivors: int,
    ) -> tuple[MechanismRecord, Accountant]:
        """A site's ledger record after the round, with its accountant stepped on a copy."""
        ...

    def global_record(
        self, *, state: AccountingState, round_idx: int, clients: list[int], planning: bool
    ) -> tuple[MechanismRecord | None, Accountant | None]:
        """The client-level chain's record after the round (``planning``: the write-ahead worst case)."""
        ...

    def release(self, *, total: np.ndarray, n_survivors: int, round_idx: int) -> np.ndarray:
        """The aggregate SUM as released (with the mode's central noise, if any)."""
        ...

    def check_released(self, *, round_idx: int, n_clients: int) -> None:
        """Refuse to account a round whose aggregate left without the mode's central noise."""
        ...

    def summary(self, *, state: AccountingState) -> dict[str, Any]:
        """The mode's own facts for ``summary.json``."""
        ...
