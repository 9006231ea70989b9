"""Client-level accounting per participation, shared by the ``client`` and ``distributed`` modes.

Client sampling is public (drawn from ``experiment.seed``, logged in ``metrics.jsonl``, and under
secure aggregation the server sees who sends a masked input), so amplification by subsampling
(Mironov, Talwar & Zhang 2019; Zhu & Wang 2019) does not apply. A site's client-level ε composes
only the releases that contained its update, and the reported ε is the maximum over sites, exactly,
from the rounds each site actually took part in. The ledger keeps it as one chain of ``q = 1``
rounds that steps exactly when the most exposed site's RDP curve would rise above the chain
(:class:`Participation` holds each site's count and, in distributed mode, its curve).

Each site's own column holds a *record-level* bound derived from the aggregate's noise: adding or
removing one record moves the site's clipped update inside the C-ball, so by at most 2C, and only
in rounds whose released aggregate contains the site's update (:meth:`ClientLevelMode.site_record`).
"""

from __future__ import annotations

from typing import Any

from privacy.accountants import Accountant, DistributedDPAccountant, DistributedEvent
from privacy.adjacency import Adjacency
from privacy.ledger import MechanismRecord
from secfed.dp.modes.base import AccountingState
from secfed.dp.params import DPParams
from secfed.dp.planning import CLIENT_ACCOUNTING
from secfed.dp.reports import SiteReport
from secfed.errors import CheckpointError

__all__ = ["SITE_BOUND_NOTE", "ClientLevelMode", "Participation"]

#: What a site's column holds in the client-level modes (``params["note"]`` of its records).
SITE_BOUND_NOTE = "record bound from the aggregate's noise: sensitivity 2C, no sampling amplification"


class Participation:
    """Client-level participations so far: a count per site and, in distributed mode, its RDP curve.

    Args:
        key: Identifies the ledger state it was rebuilt from (ledger id, entries, last hash).
    """

    def __init__(self, *, key: tuple[int, int, str]) -> None:
        self.key = key
        self.counts: dict[int, int] = {}
        self.curves: dict[int, DistributedDPAccountant] = {}

    def add(self, *, included: list[int], event: DistributedEvent | None) -> None:
        """Record one release containing the updates of ``included`` (``event``: distributed mode)."""
        for s in included:
            self.counts[s] = self.counts.get(s, 0) + 1
            if event is not None:
                self.curves.setdefault(s, DistributedDPAccountant()).step(event=event)


class ClientLevelMode:
    """What the client-level modes share: the participation chain, the site bounds, the summary.

    Subclasses set ``name``, ``adjacency``, ``mechanism`` and ``accountant_name`` and implement
    the chain's step (``global_record``, ``global_plan``) and the site bound's (``_bound_step``).

    Args:
        params: The run's privacy parameters (``mode`` ``client`` or ``distributed``).
    """

    privacy_unit = "client"

    def __init__(self, *, params: DPParams) -> None:
        self._params = params
        self._delta = params.delta
        self._z = params.noise_multiplier
        self._clip = params.max_grad_norm
        self._q_client = params.client_sample_rate
        self._cache: Participation | None = None

    def _eps(self, acc: Accountant) -> float:
        return float(acc.get_epsilon(delta=self._delta))

    def over_budget(self, *, state: AccountingState, budget: float) -> tuple[set[int], list[str]]:
        """No per-site exclusion: the budget caps the client-level chain (:meth:`global_plan`)."""
        return set(), []

    def may_take_part(self, *, state: AccountingState, round_idx: int) -> list[int]:
        """The round's public sample less the sites excluded by the budget (a superset of its clients)."""
        return sorted(s for s in self._params.sampled_sites(round_idx=round_idx) if s not in state.excluded)

    def round_event(self, survivors: int) -> DistributedEvent | None:
        """The client-level event of a decoded round with ``survivors`` (distributed mode only)."""
        return None

    def participation(self, *, state: AccountingState) -> Participation:
        """Each site's client-level participations, rebuilt from the ledger's counted releases.

        Every counted release's global record lists the sites whose update it contained
        (``params["participants"]``; for lines written before that field, the sites whose record
        bound took a step). The round in flight (its ``begin`` pending) is not counted. Rebuilt
        whenever the ledger changed (a new line, a resume), so it never drifts from what is on disk.

        Raises:
            PrivacyStateError: Before ``resume_to``.
            CheckpointError: The ledger's client-level lines claim client-sampling amplification
                (written by an earlier version): their ε understates the loss of a public sample.
        """
        ledger = state.require_ledger()
        pending = ledger.pending
        # The round in flight (begun, not committed) is the one being accounted: not yet counted here.
        entries = tuple(e for e in ledger.releases() if e is not pending)
        key = (id(ledger), len(entries), entries[-1].hash if entries else "")
        if self._cache is not None and self._cache.key == key:
            return self._cache
        part = Participation(key=key)
        for entry in entries:
            glob = entry.global_record
            if glob is None:
                continue
            if glob.sample_rate < 1.0:
                raise CheckpointError(
                    f"{ledger.path}: round {entry.round} was accounted with client-sampling "
                    f"amplification (q = {glob.sample_rate:g}), which a public sample does not give; its "
                    "epsilon understates the loss. Start a new run directory."
                )
            listed = glob.params.get("participants")
            if isinstance(listed, list):
                included = sorted({int(s) for s in listed})
            else:
                included = sorted(int(n) for n, rec in entry.sites.items() if n.isdigit() and rec.steps > 0)
            survivors = glob.params.get("survivors", len(included))
            part.add(included=included, event=self.round_event(int(survivors)) if included else None)
        self._cache = part
        return part

    def included(
        self, *, state: AccountingState, round_idx: int, clients: list[int], planning: bool
    ) -> list[int]:
        """The sites whose update the release holds; for the write-ahead ``begin`` (``planning``) the
        largest set it can hold: every site of the public sample that may take part."""
        if planning:
            return self.may_take_part(state=state, round_idx=round_idx)
        return sorted({int(s) for s in clients})

    def chain_params(self, included: list[int]) -> dict[str, Any]:
        """The params every client-level chain record starts with."""
        return {"participants": included, "client_sampling": CLIENT_ACCOUNTING}

    def chain_record(
        self, *, chain: Accountant, mechanism: str, steps: int, adjacency: Adjacency, params: dict[str, Any]
    ) -> MechanismRecord:
        """The chain's ledger record after a round (``q = 1``: no amplification is claimed)."""
        return MechanismRecord(
            epsilon=self._eps(chain),
            mechanism=mechanism,
            noise_multiplier=self._z,
            sample_rate=1.0,
            steps=steps,
            privacy_unit="client",
            adjacency=adjacency.value,
            params=params,
        )

    def _bound_step(
        self, *, acc: Accountant, included: bool, survivors: int, params: dict[str, Any]
    ) -> tuple[Accountant, str, float]:
        """The site bound's step: ``(new accountant, mechanism, noise multiplier)``; adds to ``params``."""
        raise NotImplementedError

    def site_record(
        self,
        *,
        state: AccountingState,
        name: str,
        report: SiteReport | None,
        included: bool,
        survivors: int,
    ) -> tuple[MechanismRecord, Accountant]:
        """The site's record-level bound from the aggregate's noise (accountant stepped on a copy).

        One record moves the site's clipped update by at most 2C (both versions lie in the C-ball),
        so a round whose released aggregate holds the site's update is a Gaussian mechanism with
        noise multiplier z/2 (client mode) or a distributed round with sensitivities 2Δ₂, 2Δ₁
        (distributed mode), without sampling amplification. The site's report is not needed.
        """
        params: dict[str, Any] = {"note": SITE_BOUND_NOTE}
        new, mechanism, noise = self._bound_step(
            acc=state.site_acc[name], included=included, survivors=survivors, params=params
        )
        prev = state.site_last.get(name)
        rec = MechanismRecord(
            epsilon=self._eps(new) if included or prev is None else prev.epsilon,
            mechanism=mechanism,
            noise_multiplier=noise,
            sample_rate=1.0,
            steps=1 if included else 0,
            privacy_unit="record",
            adjacency=Adjacency.RECORD.value,
            params=params,
        )
        return rec, new

    def summary(self, *, state: AccountingState) -> dict[str, Any]:
        """How client sampling is accounted, the public sampling rate, the most participations."""
        out: dict[str, Any] = {"client_sampling": CLIENT_ACCOUNTING, "client_sample_rate": self._q_client}
        if state.ledger is not None:
            counts = self.participation(state=state).counts
            out["client_participations_max"] = max(counts.values(), default=0)
        return out
