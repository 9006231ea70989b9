"""The site-side privacy hook's interface: :class:`SitePrivacy`, its error and public names.

One object per site for the whole run, built by :func:`secfed.dp.site.build.build_site_privacy`
from a :class:`~secfed.dp.site.params.SiteDPParams` (never the configuration). The forms:
client-level clipping (:mod:`secfed.dp.site.client`) and record-level DP-SGD
(:mod:`secfed.dp.site.record`, :mod:`secfed.dp.site.episodic`, :mod:`secfed.dp.site.per_sample`).
See :mod:`secfed.dp.site` for the design.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from torch import nn

from privacy.adjacency import Adjacency
from secfed.dp.sharing import ledger_params, noise_sharing_enabled, site_noise_multiplier
from secfed.dp.site.params import SiteDPParams
from secfed.errors import ConfigError, SecfedError
from secfed.learners.base import Learner, LocalUpdate
from secfed.site import Site

__all__ = [
    "ADJACENCY_CLIENT",
    "ADJACENCY_RECORD",
    "MECHANISM_CLIENT_CLIP",
    "MECHANISM_EPISODIC",
    "MECHANISM_PER_SAMPLE",
    "SitePrivacy",
    "SitePrivacyStateError",
]

#: Adjacency of record-level DP (alias of :attr:`privacy.adjacency.Adjacency.RECORD`).
ADJACENCY_RECORD = Adjacency.RECORD
#: Adjacency of client-level DP (alias of :attr:`privacy.adjacency.Adjacency.CLIENT`).
ADJACENCY_CLIENT = Adjacency.CLIENT
#: Per-episode clipping + Gaussian noise (ProtoNet, MAML, FOMAML).
MECHANISM_EPISODIC = "episodic-gaussian"
#: Per-record clipping + Gaussian noise (Reptile, FedAvg).
MECHANISM_PER_SAMPLE = "per-sample-gaussian"
#: Whole-update clipping at the site; noise added by the aggregator (client / distributed DP).
MECHANISM_CLIENT_CLIP = "client-clip"


class SitePrivacyStateError(SecfedError, RuntimeError):
    """The privacy hook was called out of order or with objects that do not belong to it."""


# --------------------------------------------------------------------------------------------------
# The hook
# --------------------------------------------------------------------------------------------------
class SitePrivacy(ABC):
    """Base class of the site-side privacy hooks (one object per site for the whole run).

    Args:
        params: The site's parameters, read from the configuration once
            (:func:`secfed.dp.site.params.site_dp_params`; ``privacy.mode`` is not ``"none"``).
        site_id: The site's id.
    """

    unit: ClassVar[str] = ""
    adjacency: ClassVar[Adjacency]

    def __init__(self, *, params: SiteDPParams, site_id: int) -> None:
        self._params = params
        self._dp = params.dp  # the run's privacy parameters (z, C, q, δ, ...)
        self.site_id = int(site_id)
        self._round: int | None = None
        self._round_steps = 0
        self._exhausted = False

    @property
    def params(self) -> SiteDPParams:
        """The site's parameters (the run's :class:`~secfed.dp.params.DPParams` in ``params.dp``)."""
        return self._params

    @property
    @abstractmethod
    def mechanism(self) -> str:
        """Mechanism name reported to the server."""

    def _sharing_params(self) -> dict[str, Any]:
        """``{"noise_sharing": <its ledger parameters>}`` when noise sharing is on, else ``{}``
        (the collusion assumption every description, report and ledger record carries)."""
        if noise_sharing_enabled(params=self._dp):
            return {"noise_sharing": ledger_params(params=self._dp, survivors=None)}
        return {}

    @property
    def sample_rate(self) -> float:
        """The sampling rate the accountant is told (record rate, or client rate)."""
        return self._dp.sample_rate

    @property
    def accounted_noise_multiplier(self) -> float:
        """The ``z`` this site accounts: the configured one, or with noise sharing the worst case
        ``z_min = z·√((t_floor − c)/(m − c))`` (:func:`secfed.dp.sharing.site_noise_multiplier`)."""
        if noise_sharing_enabled(params=self._dp):
            return site_noise_multiplier(params=self._dp)
        return self._dp.noise_multiplier

    @property
    def engine_noise_multiplier(self) -> float:
        """The ``z`` the DP engines add at this site: the configured one, or 0 with noise sharing
        (the site's share is added by its SecAgg encoder, :class:`secfed.dp.sharing.SharedNoiseEncoder`)."""
        return 0.0 if noise_sharing_enabled(params=self._dp) else self._dp.noise_multiplier

    def describe(self) -> dict[str, Any]:
        """Public description of the mechanism (JSON-serialisable).

        Returns:
            Mode, privacy unit, adjacency, mechanism, ``noise_multiplier`` (z), ``max_grad_norm``
            (C), ``sample_rate`` (q), ``expected_batch``, ``delta``, ``accountant`` and
            ``steps_per_round``.
        """
        dp = self._dp
        return {
            "mode": dp.mode,
            "unit": self.unit,
            "adjacency": self.adjacency.value,
            "mechanism": self.mechanism,
            "noise_multiplier": dp.noise_multiplier,
            "max_grad_norm": dp.max_grad_norm,
            "sample_rate": self.sample_rate,
            "expected_batch": self._params.expected_batch,
            "delta": dp.delta,
            "accountant": dp.accountant,
            "steps_per_round": self.steps_per_round,
            **self._sharing_params(),
        }

    @property
    @abstractmethod
    def steps_per_round(self) -> int:
        """DP steps one round takes (a public function of the configuration)."""

    @abstractmethod
    def local_update(
        self, *, learner: Learner, model: nn.Module, site: Site, rng: np.random.Generator, round_idx: int
    ) -> LocalUpdate:
        """Train locally under the configured mechanism.

        Args:
            learner: The site's learner (must be the configured one).
            model: The model holding the global parameters; it holds the local ones on return.
            site: The site's data (must be the site this hook was built for).
            rng: The runtime's per-round generator (public randomness).
            round_idx: The round number.

        Returns:
            The local update.
        """

    def finalize_update(self, *, update: np.ndarray, round_idx: int) -> np.ndarray:
        """Post-process the flat update before it leaves the site (identity for record-level DP).

        Args:
            update: The flat update ``after - before``.
            round_idx: The round number.

        Returns:
            The update to release.
        """
        return update

    def round_report(self, *, round_idx: int) -> dict[str, Any]:
        """Public facts about this round's mechanism, for the server's ledger.

        Args:
            round_idx: The round whose :meth:`local_update` just ran.

        Returns:
            ``{"mode", "unit", "adjacency", "mechanism", "noise_multiplier", "sample_rate",
            "steps"}``, plus ``"budget_exhausted": True`` when the site refused to train because
            of its ε budget. Record level: ``"steps"`` is the round's increase of the worst
            public class's step count (class-aware accounting, a function of the public plans).
            Nothing computed from private data.

        Raises:
            SitePrivacyStateError: If ``round_idx`` is not the round of the last local update.
        """
        if self._round is None or round_idx != self._round:
            raise SitePrivacyStateError(
                f"site {self.site_id}: round_report for round {round_idx}, but the last local update "
                f"was for round {self._round}"
            )
        report: dict[str, Any] = {
            "mode": self._dp.mode,
            "unit": self.unit,
            "adjacency": self.adjacency.value,
            "mechanism": self.mechanism,
            "noise_multiplier": self.accounted_noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": int(self._round_steps),
        }
        report.update(self._sharing_params())
        if self._exhausted:
            report["budget_exhausted"] = True
        return report

    # ---- shared checks ----------------------------------------------------------------------
    def _check_call(self, *, learner: Learner, model: nn.Module, site: Site, round_idx: int) -> None:
        if not isinstance(learner, Learner) or learner.name != self._params.learner:
            raise ConfigError(
                f"site {self.site_id}: privacy hook built for learner {self._params.learner!r}, "
                f"got {getattr(learner, 'name', type(learner).__name__)!r}"
            )
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(site, Site) or site.site_id != self.site_id:
            raise SitePrivacyStateError(
                f"privacy hook of site {self.site_id} got the data of site {getattr(site, 'site_id', None)}"
            )
        if isinstance(round_idx, bool) or not isinstance(round_idx, int | np.integer):
            raise ConfigError(f"round_idx must be an int, got {round_idx!r}")
