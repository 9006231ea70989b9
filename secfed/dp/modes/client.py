"""Client-level DP-FedAvg (``privacy.mode = "client"``): a trusted aggregator noises the sum.

Privacy unit: one site's entire dataset; adjacency: add/remove one site's data. Every site clips
its whole update to C; the server adds ``N(0, (zC)^2 I)`` to the aggregate SUM every round, also
when no update survived, and divides by a public constant
(:func:`secfed.federation.server.public_normaliser`) — McMahan, Ramage, Talwar & Zhang, ICLR 2018,
arXiv 1710.06963. The release is a Gaussian mechanism with noise multiplier z for every site whose
update is in the sum and costs nothing to a site whose update is not; it is accounted per
participation (:mod:`secfed.dp.modes.participation`). The budget caps the client-level ε.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privacy.accountants import Accountant, GaussianAccountant, create_accountant
from privacy.adjacency import Adjacency
from privacy.errors import InvalidInputError
from privacy.ledger import MechanismRecord, PlannedSteps
from privacy.noise import add_gaussian_noise, noise_source
from secfed.dp.modes.base import AccountingState, PrivacyStateError
from secfed.dp.modes.participation import ClientLevelMode
from secfed.dp.params import DPParams
from secfed.dp.reports import SiteReport

__all__ = ["MECHANISM_DP_FEDAVG", "MECHANISM_RECORD_BOUND", "ClientMode"]

#: Ledger name of the global mechanism in ``client`` mode.
MECHANISM_DP_FEDAVG = "dp-fedavg"
#: Ledger name of a site's record-level bound derived from the client-level aggregate's noise.
MECHANISM_RECORD_BOUND = "dp-fedavg-record-bound"


class ClientMode(ClientLevelMode):
    """DP-FedAvg with central noise (see the module docstring).

    Args:
        params: The run's privacy parameters (``mode = "client"``).
    """

    name = "client"
    adjacency = Adjacency.CLIENT
    planned_key: str | None = "client_epsilon"
    mechanism = MECHANISM_DP_FEDAVG

    def __init__(self, *, params: DPParams) -> None:
        super().__init__(params=params)
        self.accountant_name = params.accountant
        self._noise_source = noise_source()
        self._noised_rounds: set[int] = set()

    def new_site_accountant(self) -> Accountant:
        """A Gaussian accountant of ``privacy.accountant``'s kind."""
        return create_accountant(kind=self.accountant_name)

    def new_global_accountant(self) -> Accountant:
        """A Gaussian accountant of ``privacy.accountant``'s kind: the client-level chain."""
        return create_accountant(kind=self.accountant_name)

    def global_plan(self, *, state: AccountingState, round_idx: int) -> PlannedSteps | None:
        """One more Gaussian round if a site of the round's public sample would exceed the largest
        participation count so far (:func:`secfed.federation.server.sampled_sites`, before budget
        exclusions; dropouts only remove sites), else ``None``."""
        sample = self.may_take_part(state=state, round_idx=round_idx)
        if not sample:
            return None
        part = self.participation(state=state)
        top = max(part.counts.values(), default=0)
        if any(part.counts.get(s, 0) + 1 > top for s in sample):
            return PlannedSteps(noise_multiplier=self._z, sample_rate=1.0, steps=1)
        return None

    def write_ahead(
        self, *, state: AccountingState, may_train: list[int]
    ) -> tuple[dict[str, SiteReport], int]:
        """No site reports to plan; every site that may train is in the aggregate."""
        return {}, len(may_train)

    def _bound_step(
        self, *, acc: Accountant, included: bool, survivors: int, params: dict[str, Any]
    ) -> tuple[Accountant, str, float]:
        sigma = self._z / 2.0  # noise zC over record sensitivity 2C
        params.update(client_noise_multiplier=self._z, clip_norm=self._clip)
        new = acc
        if included:
            new = acc.copy()
            assert isinstance(new, GaussianAccountant)
            new.step(noise_multiplier=sigma, sample_rate=1.0, num_steps=1)
        return new, MECHANISM_RECORD_BOUND, sigma

    def global_record(
        self, *, state: AccountingState, round_idx: int, clients: list[int], planning: bool
    ) -> tuple[MechanismRecord, Accountant]:
        """The chain of Gaussian rounds at ``q = 1``: it steps exactly when the largest number of
        releases containing one site's update grows, so it equals the composition over
        ``max_i |P_i|`` rounds. The participants are written to the record."""
        assert state.global_acc is not None
        part = self.participation(state=state)
        included = self.included(state=state, round_idx=round_idx, clients=clients, planning=planning)
        new = state.global_acc.copy()
        top = max(part.counts.values(), default=0)
        after = max([top, *(part.counts.get(s, 0) + 1 for s in included)])
        steps = after - top
        if steps:
            assert isinstance(new, GaussianAccountant)
            new.step(noise_multiplier=self._z, sample_rate=1.0, num_steps=steps)
        params = self.chain_params(included)
        params.update(survivors=len(included), clip_norm=self._clip, max_participations=after)
        return self.chain_record(
            chain=new, mechanism=MECHANISM_DP_FEDAVG, steps=steps, adjacency=Adjacency.CLIENT, params=params
        ), new

    def release(self, *, total: np.ndarray, n_survivors: int, round_idx: int) -> np.ndarray:
        """Add DP-FedAvg's Gaussian noise ``N(0, (zC)^2 I)`` to the aggregate SUM.

        Sensitivity of the sum is C: every site clips its whole update to C and weights are
        uniform (McMahan et al. 2018). The noise comes from :func:`privacy.noise.add_gaussian_noise`
        (AES-256-CTR keystream under a fresh 256-bit key, the sum snapped to a lattice far below
        the noise scale, exact discrete Gaussian noise).

        Args:
            total: The decoded sum of the survivors' updates (1-D float; zeros when none survived:
                the noise is released every round).
            n_survivors: Number of updates in the sum (>= 0). It does not set the noise: the std is
                ``z·C`` whatever the count.
            round_idx: The round.

        Returns:
            The noisy sum (float64).

        Raises:
            InvalidInputError: ``total`` is not a finite 1-D float array or ``n_survivors < 0``.
        """
        arr = np.asarray(total)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
            raise InvalidInputError(f"total must be a finite 1-D float array, got {arr.dtype} {arr.shape}")
        if isinstance(n_survivors, bool) or not isinstance(n_survivors, (int, np.integer)) or n_survivors < 0:
            raise InvalidInputError(f"n_survivors must be an integer >= 0, got {n_survivors!r}")
        std = self._z * self._clip
        noisy = (
            add_gaussian_noise(values=arr, sigma=std, source=self._noise_source)
            if std > 0
            else arr.astype(np.float64)
        )
        self._noised_rounds.add(int(round_idx))
        return noisy

    def check_released(self, *, round_idx: int, n_clients: int) -> None:
        """Refuse a round whose aggregate was released without central noise.

        Raises:
            PrivacyStateError: :meth:`release` did not noise round ``round_idx``.
        """
        if round_idx not in self._noised_rounds:
            raise PrivacyStateError(
                f"round {round_idx}: the aggregate of {n_clients} sites was released without "
                "central noise (pass ServerPrivacy.central_noise to the server; it adds noise every round)"
            )
