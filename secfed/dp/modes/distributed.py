"""Distributed DP under secure aggregation (``privacy.mode = "distributed"``): DDG or Skellam.

Privacy unit: one site; adjacency: zero-out (Kairouz, Liu & Steinke, ICML 2021, arXiv 2102.06387;
Agarwal, Kairouz & Liu, NeurIPS 2021, arXiv 2110.04995). Each site adds its share of integer noise
inside the SecAgg sum (:mod:`secfed.dp.distributed`), so the server adds none. The client-level
chain composes one distributed round (:class:`privacy.accountants.DistributedEvent`) with the noise
of the *survivors only*, per participation (:mod:`secfed.dp.modes.participation`), for every round
whose sum was decoded: dropouts raise ε. For the budget, the next round is projected with every
feasible survivor count down to the fewest that can still produce a sum
(:func:`worst_case_survivors`), so no ledger ε exceeds the budget. Under zero-out adjacency a site
that is not sampled contributes no noise share either, a second reason not to claim amplification
by client sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from privacy.accountants import Accountant, DistributedDPAccountant, DistributedEvent
from privacy.adjacency import Adjacency
from privacy.distributed import DistributedDPConfig
from privacy.ledger import MechanismRecord
from secfed.dp.distributed import distributed_dp_config
from secfed.dp.modes.base import AccountingState
from secfed.dp.modes.participation import ClientLevelMode, Participation
from secfed.dp.params import DistributedParams, DPParams
from secfed.dp.reports import SiteReport

__all__ = ["DistributedMode", "worst_case_survivors"]


def worst_case_survivors(*, params: DPParams) -> int:
    """Fewest clients whose noise can reach a decoded SecAgg sum in one round.

    With fixed-size sampling and no simulated dropouts or stragglers every sampled site survives
    (``m``). Otherwise 2: SecAgg needs at least ``t >= 2`` survivors to unmask
    (:func:`protocols.params.resolve_params`), and a round with fewer releases nothing.

    Args:
        params: The run's privacy parameters (computed once by
            :func:`secfed.dp.params.worst_case_survivors`).

    Returns:
        The survivor count.
    """
    return params.worst_case_survivors


class DistributedMode(ClientLevelMode):
    """The distributed discrete Gaussian or Skellam mechanism (see the module docstring).

    Args:
        params: The run's privacy parameters (``mode = "distributed"``).
        dim: Finds the flat update length when the encoding is first needed.
    """

    name = "distributed"
    adjacency = Adjacency.DISTRIBUTED
    planned_key: str | None = None
    accountant_name = DistributedDPAccountant.kind

    def __init__(self, *, params: DPParams, dim: Callable[[], int]) -> None:
        super().__init__(params=params)
        assert params.distributed is not None
        self._dist_params: DistributedParams = params.distributed
        self._dim = dim
        self.mechanism = params.distributed.mechanism
        self._dist: DistributedDPConfig | None = None
        self._candidate_events: list[DistributedEvent] | None = None

    def distributed_config(self) -> DistributedDPConfig:
        """The distributed-DP encoding of the run (built once; needs the model size).

        Raises:
            ConfigError: When the encoding cannot be planned.
        """
        if self._dist is None:
            self._dist = distributed_dp_config(params=self._params, dim=self._dim())
        return self._dist

    def new_site_accountant(self) -> Accountant:
        """A distributed RDP accountant (the site's record-level bound)."""
        return DistributedDPAccountant()

    def new_global_accountant(self) -> Accountant:
        """A distributed RDP accountant: the client-level chain."""
        return DistributedDPAccountant()

    def round_event(self, survivors: int) -> DistributedEvent | None:
        """The client-level event of a decoded round with ``survivors`` (``q = 1``)."""
        if survivors < 1:
            return None
        return self.distributed_config().event(num_survivors=survivors, sample_rate=1.0)

    def _events(self) -> list[DistributedEvent]:
        """Client-level events of a round with any feasible number of survivors (``q = 1``)."""
        if self._candidate_events is None:
            dcfg = self.distributed_config()
            lo, hi = self._params.worst_case_survivors, self._dist_params.max_participants
            self._candidate_events = [dcfg.event(num_survivors=n, sample_rate=1.0) for n in range(lo, hi + 1)]
        return self._candidate_events

    def _rises(
        self, state: AccountingState, part: Participation, sites: list[int], event: DistributedEvent
    ) -> bool:
        """Whether one more ``event`` for any of ``sites`` lifts its RDP curve above the chain's."""
        assert isinstance(state.global_acc, DistributedDPAccountant)
        chain = state.global_acc.get_rdp()
        for s in sites:
            acc = part.curves.get(s)
            after = acc.copy() if acc is not None else DistributedDPAccountant()
            after.step(event=event)
            if np.any(after.get_rdp() > chain + 1e-12 * np.maximum(1.0, np.abs(chain))):
                return True
        return False

    def _planned_event(
        self, state: AccountingState, part: Participation, sites: list[int]
    ) -> DistributedEvent | None:
        """The candidate event projecting the largest ε if the chain can rise, else None."""
        candidates = self._events()
        if not sites or not any(self._rises(state, part, sites, event) for event in candidates):
            return None
        glob = state.global_acc
        assert isinstance(glob, DistributedDPAccountant)
        return max(candidates, key=lambda e: glob.projected_epsilon(delta=self._delta, event=e))

    def global_plan(self, *, state: AccountingState, round_idx: int) -> DistributedEvent | None:
        """The candidate event (any survivor count from :func:`worst_case_survivors` to
        :func:`~secfed.dp.distributed.max_participants`) that projects the largest ε, if some site
        of the round's public sample would lift its curve above the chain; else ``None``."""
        sample = self.may_take_part(state=state, round_idx=round_idx)
        if not sample:
            return None
        return self._planned_event(state, self.participation(state=state), sample)

    def write_ahead(
        self, *, state: AccountingState, may_train: list[int]
    ) -> tuple[dict[str, SiteReport], int]:
        """No site reports to plan; the fewest survivors that can decode are charged."""
        return {}, min(len(may_train), self._params.worst_case_survivors)

    def _bound_step(
        self, *, acc: Accountant, included: bool, survivors: int, params: dict[str, Any]
    ) -> tuple[Accountant, str, float]:
        dcfg = self.distributed_config()
        event = DistributedEvent(
            mechanism=dcfg.mechanism,
            l2_sensitivity=2.0 * dcfg.l2_sensitivity,
            l1_sensitivity=2.0 * dcfg.l1_sensitivity,
            dim=dcfg.padded_dim,
            local_stddev=dcfg.scaled_local_stddev,
            num_survivors=max(1, survivors),
            sample_rate=1.0,
        )
        params["event"] = event.to_dict()
        new = acc
        if included:
            new = acc.copy()
            assert isinstance(new, DistributedDPAccountant)
            new.step(event=event)
        return new, dcfg.mechanism, self._z

    def global_record(
        self, *, state: AccountingState, round_idx: int, clients: list[int], planning: bool
    ) -> tuple[MechanismRecord, Accountant]:
        """The round's event (its actual survivors, ``q = 1``) is added when some included site's
        RDP curve would otherwise rise above the chain's, so the chain dominates every site's curve;
        nothing is charged for a round without survivors. For the write-ahead ``begin``
        (``planning``) the event is the worst candidate (:meth:`global_plan`)."""
        assert state.global_acc is not None
        part = self.participation(state=state)
        included = self.included(state=state, round_idx=round_idx, clients=clients, planning=planning)
        new = state.global_acc.copy()
        n = len(included)
        dcfg = self.distributed_config()
        if planning:
            worst = self._planned_event(state, part, included)
            steps = 0 if worst is None else 1
            event = worst if worst is not None else self._events()[0]
        else:
            event = dcfg.event(num_survivors=max(1, n), sample_rate=1.0)
            steps = 1 if n > 0 and self._rises(state, part, included, event) else 0
        if steps:
            assert isinstance(new, DistributedDPAccountant)
            new.step(event=event)
        params = self.chain_params(included)
        params.update(
            survivors=event.num_survivors if planning and n else n,
            event=event.to_dict(),
            expected_participants=self._dist_params.expected_participants,
            gamma=dcfg.gamma,
            bits=dcfg.bits,
            max_participations=max(
                [0, *(part.counts.get(s, 0) + 1 for s in included), *part.counts.values()]
            ),
        )
        return self.chain_record(
            chain=new, mechanism=dcfg.mechanism, steps=steps, adjacency=Adjacency.DISTRIBUTED, params=params
        ), new

    def release(self, *, total: np.ndarray, n_survivors: int, round_idx: int) -> np.ndarray:
        """The aggregate unchanged: the sites' noise shares are in the SecAgg sum."""
        return total

    def check_released(self, *, round_idx: int, n_clients: int) -> None:
        """Nothing to check: the noise is in the sites' shares."""
