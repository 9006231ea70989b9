"""The site-side privacy hook: record-level DP-SGD inside local training, or client-level clipping.

The client runtime (:class:`secfed.federation.client.ClientRuntime`) builds one
:class:`SitePrivacy` per site with :func:`build_site_privacy` and keeps it for the whole run. Every
round it calls :meth:`SitePrivacy.local_update` instead of the learner's own ``local_update``,
then :meth:`SitePrivacy.finalize_update` on the flat update, and sends
:meth:`SitePrivacy.round_report` (public facts only) to the server, which keeps the authoritative
privacy ledger.

Record-level DP (``privacy.mode = "record"``)
---------------------------------------------
Privacy unit: **one record of the site's dataset**; adjacency: **add/remove one record**.

DP wraps each learner's own training loop (:mod:`secfed.learners`): the site hands the learner a
DP gradient engine, a private unit source and, for Reptile, a DP inner trainer
(:mod:`secfed.dp.engines`), and calls the learner's ``local_update``. There is no second copy of
any learner's loop, so DP training does what the learner does (e.g. Reptile's zeroed head).

* ProtoNet (Snell et al. 2017), MAML and FOMAML (Finn et al. 2017) have episodic meta-losses that
  couple the records of an episode, so per-record clipping is not record-level DP
  (:mod:`privacy.episodic`). Each local step draws episodes with
  :class:`privacy.sampling.RecordEpisodeSampler` (Poisson rate ``q``; every record joins a public
  slot of ``task.n_way`` classes and a role with its own keyed randomness) and takes one
  :class:`privacy.episodic.EpisodicDPSGD` step: every episode's full meta-gradient (the learner's
  own episode loss, second order for MAML) is clipped to ``C``, the clipped gradients are summed,
  ``N(0, (2zC)^2 I)`` is added (sensitivity ``2C``) and the sum is divided by the public number of
  slots per step, ``privacy.episodes_per_step``. Mechanism name: ``"episodic-gaussian"``.
* Reptile (Nichol et al. 2018) and FedAvg (McMahan et al. 2017) train on ordinary per-record
  losses, so per-sample DP-SGD (Abadi et al. 2016) with :class:`privacy.dpsgd.PerSampleDPSGD` is
  valid (Poisson rate ``q`` over the site's records, per-record clipping to ``C``, noise
  ``N(0, (zC)^2 I)``, sum divided by the public ``privacy.expected_batch``). Reptile's outer step
  and FedAvg's averaging only read the DP-SGD iterates: post-processing. Mechanism name:
  ``"per-sample-gaussian"``.

Every DP step of the site is composed by one accountant (``privacy.accountant``: RDP, PRV or PLD),
**class-aware** for the episodic learners and Reptile (:mod:`secfed.dp.engines`): a record of class
``c`` takes part only in steps whose public plan contains ``c``, the plans are public and
data-independent, so the site's ε is that of ``max_c N_c`` steps, ``N_c`` the steps whose plan
contains ``c``. Each round the site composes, writes to its ledger and reports as ``"steps"`` the
increase of that maximum (known before the round from the public plan); the server's sum over
rounds is therefore the maximum too. FedAvg counts every step. When ``privacy.epsilon_budget > 0``
and the next round's steps would take the site's ε (at ``privacy.delta``) above the budget, the
site takes no step, leaves the model unchanged and says ``"budget_exhausted": true`` in its round
report, whatever the server asks.

Noise sharing (``privacy.noise_sharing``, record mode under SecAgg)
-------------------------------------------------------------------
Each round is one DP step; the engines clip and sample as above but add no noise
(:attr:`SitePrivacy.engine_noise_multiplier` is 0) and the site's SecAgg encoder
(:class:`secfed.dp.sharing.SharedNoiseEncoder`) adds the site's share, std ``σ/√(m − c)``, on a
lattice common to all sites, so the server sees only the noisy *sum*. The site cannot know how many
shares reach the sum before its update leaves, so it accounts, budgets, ledgers and reports the
worst case ``z_min = z·√((t_floor − c)/(m − c))`` (:attr:`SitePrivacy.accounted_noise_multiplier`);
the server's ledger uses the actual survivors (:mod:`secfed.dp.sharing`). Every ledger record and
report carries the collusion assumption (``params["noise_sharing"]``).

The site's own ledger (record mode)
-----------------------------------
The budget is the only guard a site has against an untrusted server, so it must survive restarts.
Built with ``state_dir`` (the runtime passes ``<site state dir>``; in simulation
``RUN_DIR/site_state/site-<id>/``, see :class:`secfed.federation.client.ClientFactory`), the site
keeps a durable, HMAC-authenticated :class:`privacy.ledger.PrivacyLedger` at
``<state_dir>/ledger.jsonl`` (its key under ``$SECFED_KEY_DIR`` / ``~/.config/secfed/keys``, outside
the state and run directories). On start it replays the ledger into its accountant (a ledger that
fails verification or whose key is missing stops the site with
:class:`secfed.errors.IntegrityError`); every round that trains writes a ``begin`` entry with the
planned steps (fsync'ed) *before* the first DP step, and a ``commit`` with the steps taken before
the update can leave the site. A site that dies in between restarts with that round counted at its
planned cost. Without ``state_dir`` (unit tests, ad-hoc use) the accountant lives only as long as
the object. Client/distributed modes keep no site ledger (the site adds no noise in client mode;
the distributed noise is accounted by the server).

Client-level DP (``privacy.mode`` ``"client"`` or ``"distributed"``)
---------------------------------------------------------------------
Privacy unit: **one site's entire dataset** (DP-FedAvg, McMahan, Ramage, Talwar & Zhang 2018,
arXiv 1710.06963). Local training is the learner's own; the site clips its whole flat update to
L2 norm ``privacy.max_grad_norm`` (:func:`privacy.client_dp.clip_update`, scaling, never
truncation). The noise is added by the trusted aggregator (``client``) or by the secure
aggregation clients (``distributed``), not here. Mechanism name: ``"client-clip"``.

Public vs private
-----------------
:meth:`SitePrivacy.describe` and :meth:`SitePrivacy.round_report` contain configuration values
and step counts only (the number of DP steps is fixed by the configuration, not by the data).
Per-step diagnostics that depend on private data (episode counts, clip fractions, norms, batch
sizes) are never reported; the round's step count is a function of the public plans. The
``LocalUpdate`` returned under record-level DP carries a public
``num_tasks`` (planned episodes or tasks) and ``num_examples = 0`` (the true count is private);
its ``train_loss`` is a loss on private data, for the site's own use only (under DP the runtime
releases neither it nor ``num_tasks``).

Public class list
-----------------
Slots (episodic learners) and Reptile tasks are drawn from the site's *public* class list
(:attr:`secfed.site.Site.public_classes`): a function of the configuration and the dataset's
public description (:func:`secfed.data.partition.site_class_lists`), never of the labels the shard
holds. Computed from the shard, removing the only record of a class would re-plan every episode
and void the sensitivity bound. Configuration checks (``task.n_way``, the FedAvg head) read only
this list. The randomness of these choices is public too (derived from the experiment seed); only
the per-record randomness (keyed by the records' stable ids) and the noise are secret.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from privacy import sampling
from privacy.accountants import GaussianAccountant, PLDAccountant, PRVAccountant, RDPAccountant
from privacy.adjacency import Adjacency
from privacy.client_dp import clip_update
from privacy.dpsgd import check_record_independent_model
from privacy.errors import LedgerCorruptedError, PrivacyError
from privacy.ledger import (
    LedgerKeyError,
    LedgerUnverifiableError,
    MechanismRecord,
    PrivacyBudget,
    PrivacyLedger,
)
from privacy.sampling import RecordEpisodeSampler
from secfed.config import ExperimentConfig
from secfed.dp.engines import (
    AugmultEpisodeDPEngineFactory,
    ClassStepCounts,
    ClassTask,
    DPEngineError,
    EpisodeDPEngineFactory,
    PlannedClassTasks,
    PoissonClassTrainer,
    PoissonRecordBatches,
    PrivateEpisodes,
    RecordDPEngineFactory,
    StepCounter,
    draw_class_tasks,
    episode_task,
    step_normaliser,
)
from secfed.dp.params import dp_params
from secfed.dp.sharing import ledger_params, noise_sharing_enabled, site_noise_multiplier
from secfed.errors import ConfigError, IntegrityError, SecfedError
from secfed.learners import LEARNERS, episodic_learner_names, learner_class
from secfed.learners.base import Learner, LocalUpdate
from secfed.learners.common import trainable_params
from secfed.learners.episodic import EpisodicLearner
from secfed.learners.fedavg import FedAvgLearner
from secfed.learners.reptile import Reptile
from secfed.seeding import derive_seed
from secfed.site import Site

__all__ = [
    "ADJACENCY_CLIENT",
    "ADJACENCY_RECORD",
    "MECHANISM_CLIENT_CLIP",
    "MECHANISM_EPISODIC",
    "MECHANISM_PER_SAMPLE",
    "ClientLevelSitePrivacy",
    "EpisodicSitePrivacy",
    "PerSampleSitePrivacy",
    "SITE_LEDGER_FILE",
    "RecordSitePrivacy",
    "SitePrivacy",
    "SitePrivacyStateError",
    "build_site_privacy",
    "episode_task",
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

_EPISODIC_LEARNERS = episodic_learner_names()  # learners whose class declares ``episodic``
#: Learners without a per-episode loss: per-sample DP-SGD through their own loop.
_PER_SAMPLE_LEARNERS = tuple(name for name, cls in LEARNERS.items() if not cls.episodic)
#: File name of a site's own ledger inside its state directory.
SITE_LEDGER_FILE = "ledger.jsonl"
#: The site's accountant by ``privacy.accountant`` (every choice of the configuration).
_SITE_ACCOUNTANTS: dict[str, type[GaussianAccountant]] = {
    "rdp": RDPAccountant,
    "prv": PRVAccountant,
    "pld": PLDAccountant,
}
#: Probability that a sampled record is a support record of its episode.
_SUPPORT_PROB = 0.5


class SitePrivacyStateError(SecfedError, RuntimeError):
    """The privacy hook was called out of order or with objects that do not belong to it."""


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------
def _zero_update(model: nn.Module) -> LocalUpdate:
    return LocalUpdate(
        delta={n: torch.zeros_like(p, dtype=torch.float32) for n, p in trainable_params(model).items()},
        train_loss=float("nan"),
        num_tasks=0,
        num_examples=0,
    )


# --------------------------------------------------------------------------------------------------
# The hook
# --------------------------------------------------------------------------------------------------
class SitePrivacy(ABC):
    """Base class of the site-side privacy hooks (one object per site for the whole run).

    Args:
        config: The experiment configuration (``privacy.mode`` must not be ``"none"``).
        site_id: The site's id.
    """

    unit: ClassVar[str] = ""
    adjacency: ClassVar[Adjacency]

    def __init__(self, *, config: ExperimentConfig, site_id: int) -> None:
        self._cfg = config
        self._params = dp_params(config=config)  # the typed privacy parameters, read once
        self.site_id = int(site_id)
        self._round: int | None = None
        self._round_steps = 0
        self._exhausted = False

    @property
    @abstractmethod
    def mechanism(self) -> str:
        """Mechanism name reported to the server."""

    @property
    def sample_rate(self) -> float:
        """The sampling rate the accountant is told (record rate, or client rate)."""
        return self._params.sample_rate

    @property
    def accounted_noise_multiplier(self) -> float:
        """The ``z`` this site accounts: the configured one, or with noise sharing the worst case
        ``z_min = z·√((t_floor − c)/(m − c))`` (:func:`secfed.dp.sharing.site_noise_multiplier`)."""
        if noise_sharing_enabled(params=self._params):
            return site_noise_multiplier(params=self._params)
        return self._params.noise_multiplier

    @property
    def engine_noise_multiplier(self) -> float:
        """The ``z`` the DP engines add at this site: the configured one, or 0 with noise sharing
        (the site's share is added by its SecAgg encoder, :class:`secfed.dp.sharing.SharedNoiseEncoder`)."""
        return 0.0 if noise_sharing_enabled(params=self._params) else self._params.noise_multiplier

    def describe(self) -> dict[str, Any]:
        """Public description of the mechanism (JSON-serialisable).

        Returns:
            Mode, privacy unit, adjacency, mechanism, ``noise_multiplier`` (z), ``max_grad_norm``
            (C), ``sample_rate`` (q), ``expected_batch``, ``delta``, ``accountant`` and
            ``steps_per_round``.
        """
        dp = self._params
        return {
            "mode": dp.mode,
            "unit": self.unit,
            "adjacency": self.adjacency.value,
            "mechanism": self.mechanism,
            "noise_multiplier": dp.noise_multiplier,
            "max_grad_norm": dp.max_grad_norm,
            "sample_rate": self.sample_rate,
            "expected_batch": int(self._cfg.privacy.expected_batch),
            "delta": dp.delta,
            "accountant": dp.accountant,
            "steps_per_round": self.steps_per_round,
            **(
                {"noise_sharing": ledger_params(params=self._params, survivors=None)}
                if noise_sharing_enabled(params=self._params)
                else {}
            ),
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
            "mode": self._params.mode,
            "unit": self.unit,
            "adjacency": self.adjacency.value,
            "mechanism": self.mechanism,
            "noise_multiplier": self.accounted_noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": int(self._round_steps),
        }
        if noise_sharing_enabled(params=self._params):
            report["noise_sharing"] = ledger_params(params=self._params, survivors=None)
        if self._exhausted:
            report["budget_exhausted"] = True
        return report

    # ---- shared checks ----------------------------------------------------------------------
    def _check_call(self, *, learner: Learner, model: nn.Module, site: Site, round_idx: int) -> None:
        if not isinstance(learner, Learner) or learner.name != self._cfg.learner.name:
            raise ConfigError(
                f"site {self.site_id}: privacy hook built for learner {self._cfg.learner.name!r}, "
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


class ClientLevelSitePrivacy(SitePrivacy):
    """Client-level DP (``client`` / ``distributed``): learner's own training, then flat clipping."""

    unit: ClassVar[str] = "client"
    adjacency: ClassVar[Adjacency] = Adjacency.CLIENT

    @property
    def mechanism(self) -> str:
        """``"client-clip"``."""
        return MECHANISM_CLIENT_CLIP

    @property
    def sample_rate(self) -> float:
        """The federation's public client sampling rate per round."""
        return self._params.client_sample_rate

    @property
    def steps_per_round(self) -> int:
        """One client-level release per round."""
        return 1

    def local_update(
        self, *, learner: Learner, model: nn.Module, site: Site, rng: np.random.Generator, round_idx: int
    ) -> LocalUpdate:
        """The learner's own local update (no record-level noise); see :meth:`SitePrivacy.local_update`."""
        self._check_call(learner=learner, model=model, site=site, round_idx=round_idx)
        self._round = None
        result = learner.local_update(model=model, tasks=site.tasks, rng=rng)
        self._round, self._round_steps = int(round_idx), 1
        return result

    def finalize_update(self, *, update: np.ndarray, round_idx: int) -> np.ndarray:
        """Scale the whole flat update to L2 norm at most ``privacy.max_grad_norm``.

        Args:
            update: The flat float update.
            round_idx: The round number.

        Returns:
            ``update * min(1, C / ||update||)`` with the input's dtype.

        Raises:
            privacy.errors.InvalidInputError: If ``update`` is not a finite 1-D float array.
        """
        clipped, _ = clip_update(update=update, clip_norm=self._params.max_grad_norm)
        return clipped


class RecordSitePrivacy(SitePrivacy):
    """Common part of record-level DP: site tensors, the persistent accountant, the budget check.

    Args:
        config: The experiment configuration (``privacy.mode == "record"``).
        site_id: The site's id.
        site: The site's data.
        state_dir: The site's state directory: its durable ledger lives there and its accountant is
            replayed from it (``None``: the accountant lives only as long as this object).
        key_dir: Directory of the ledger's HMAC key (default ``$SECFED_KEY_DIR`` or
            ``~/.config/secfed/keys``).

    Raises:
        IntegrityError: The site's ledger fails verification or its key is missing.
        ConfigError: The ledger was written with another δ, budget or accountant.
    """

    unit: ClassVar[str] = "record"
    adjacency: ClassVar[Adjacency] = Adjacency.RECORD

    def __init__(
        self,
        *,
        config: ExperimentConfig,
        site_id: int,
        site: Site,
        state_dir: str | Path | None = None,
        key_dir: str | Path | None = None,
    ) -> None:
        super().__init__(config=config, site_id=site_id)
        p = config.privacy
        self._accountant: GaussianAccountant = _SITE_ACCOUNTANTS[p.accountant]()
        self._ledger: PrivacyLedger | None = None
        if state_dir is not None:
            self._ledger = self._open_ledger(state_dir=Path(state_dir), key_dir=key_dir)
        self._x = torch.from_numpy(np.array(site.model_inputs, dtype=np.float32))  # cached features or raw
        self._y = torch.from_numpy(np.array(site.dataset.labels, dtype=np.int64))
        self._classes = [int(c) for c in site.public_classes]
        self._record_ids = np.asarray(site.record_ids, dtype=np.int64)
        self._num_records = int(site.num_records)
        # Class-aware accounting: after a restart every class is taken to have the replayed total.
        self._class_counts = self._fresh_class_counts()
        self._prepare()

    def _prepare(self) -> None:
        """The mechanism's own set-up, after the common state above (public-class checks, samplers)."""

    def _require_n_way(self, *, n_way: int, why: str = "") -> None:
        """Refuse ``task.n_way`` above the site's public classes (``why`` is appended to the message)."""
        if n_way > len(self._classes):
            raise ConfigError(
                f"task.n_way = {n_way} exceeds the {len(self._classes)} public classes of site {self.site_id}"
                + (f": {why}" if why else "")
            )

    def _fresh_class_counts(self) -> ClassStepCounts:
        return ClassStepCounts(classes=tuple(self._classes), base=int(self._accountant.total_steps))

    @property
    def class_counts(self) -> ClassStepCounts:
        """Per public class, the DP steps whose public plan contained it (class-aware accounting)."""
        return self._class_counts

    @property
    def accountant(self) -> GaussianAccountant:
        """The site's accountant: every DP step this site took (all restarts, when it has a ledger)."""
        return self._accountant

    @property
    def ledger(self) -> PrivacyLedger | None:
        """The site's own durable ledger (``None`` without a state directory)."""
        return self._ledger

    def _open_ledger(self, *, state_dir: Path, key_dir: str | Path | None) -> PrivacyLedger:
        """Open (or create) the site's ledger and replay it into the accountant."""
        p = self._cfg.privacy
        budget = PrivacyBudget(
            delta=float(p.delta), site_epsilon=float(p.epsilon_budget) if p.epsilon_budget > 0 else None
        )
        path = state_dir / SITE_LEDGER_FILE
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            ledger = PrivacyLedger.open(
                path=path,
                budget=budget,
                accountant=p.accountant,
                recover_torn_tail=True,  # a torn line was never durable: nothing left the site after it
                key_dir=key_dir,
                round_order="any",  # a site trains only in the rounds that sample it
            )
            self._accountant = self._replay(ledger)
        except (LedgerCorruptedError, LedgerUnverifiableError, LedgerKeyError) as exc:
            raise IntegrityError(f"site {self.site_id}: {path}: integrity check failed: {exc}") from exc
        except (PrivacyError, OSError) as exc:
            raise ConfigError(f"site {self.site_id}: {path}: {exc}") from exc
        return ledger

    def _replay(self, ledger: PrivacyLedger) -> GaussianAccountant:
        sites, _ = ledger.rebuild_accountants(verify=True)
        name = str(self.site_id)
        if set(sites) - {name}:
            raise LedgerCorruptedError(
                f"the ledger holds other sites' columns: {sorted(set(sites) - {name})}"
            )
        acc = sites.get(name)
        if acc is None:
            return _SITE_ACCOUNTANTS[self._params.accountant]()
        if not isinstance(acc, GaussianAccountant):
            raise LedgerCorruptedError(f"site {name}: the ledger does not hold a Gaussian mechanism")
        return acc

    def _ledger_record(self, *, epsilon: float, steps: int) -> dict[str, MechanismRecord]:
        params = (
            {"noise_sharing": ledger_params(params=self._params, survivors=None)}
            if noise_sharing_enabled(params=self._params)
            else {}
        )
        return {
            str(self.site_id): MechanismRecord(
                epsilon=epsilon,
                mechanism=self.mechanism,
                noise_multiplier=self.accounted_noise_multiplier,
                sample_rate=self.sample_rate,
                steps=int(steps),
                privacy_unit=self.unit,
                adjacency=self.adjacency,
                params=params,
            )
        }

    @property
    def epsilon(self) -> float:
        """The site's ε so far at ``privacy.delta`` (its own view; the server's ledger is authoritative)."""
        return float(self._accountant.get_epsilon(delta=self._params.delta))

    def _budget_exhausted(self, *, planned: int) -> bool:
        budget = self._params.epsilon_budget
        if budget is None:
            return False
        projected = self._accountant.projected_epsilon(
            delta=self._params.delta,
            noise_multiplier=self.accounted_noise_multiplier,
            sample_rate=self.sample_rate,
            num_steps=planned,
        )
        return not math.isfinite(projected) or projected > budget

    def local_update(
        self, *, learner: Learner, model: nn.Module, site: Site, rng: np.random.Generator, round_idx: int
    ) -> LocalUpdate:
        """Record-level DP local training; see :meth:`SitePrivacy.local_update`.

        The round's public plan (the class plans of its DP steps) is fixed first; the steps it adds
        to the site's worst class (class-aware accounting, :mod:`secfed.dp.engines`) are checked
        against the budget, written ahead to the ledger, composed into the accountant and reported.

        Raises:
            ConfigError: If the learner is not the configured one or the model does not fit.
            SitePrivacyStateError: If ``site`` is not this hook's site.
            privacy.dpsgd.RecordCouplingModelError: If the model has BatchNorm/running statistics.
        """
        self._check_call(learner=learner, model=model, site=site, round_idx=round_idx)
        if site.num_records != self._num_records:
            raise SitePrivacyStateError(
                f"site {self.site_id}: the hook was built for {self._num_records} records, "
                f"got a site with {site.num_records}"
            )
        check_record_independent_model(model=model)
        self._check_learner(learner=learner, model=model)
        # Until this round succeeds, round_report refuses to report it (no stale step counts).
        self._round = None
        plan = self._plan_round(rng=rng)
        planned = self._class_counts.increment(plan)
        if self._budget_exhausted(planned=planned):
            self._round, self._round_steps, self._exhausted = int(round_idx), 0, True
            return _zero_update(model)
        p = self._cfg.privacy
        if self._ledger is not None:
            # Write-ahead: the round counts at its planned cost before the first DP step.
            planned_eps = self._accountant.projected_epsilon(
                delta=float(p.delta),
                noise_multiplier=self.accounted_noise_multiplier,
                sample_rate=self.sample_rate,
                num_steps=planned,
            )
            self._ledger.begin(
                round=int(round_idx), sites=self._ledger_record(epsilon=planned_eps, steps=planned)
            )
        counter = StepCounter(noise_multiplier=self.engine_noise_multiplier, sample_rate=self.sample_rate)
        try:
            result, taken = self._train(learner=learner, model=model, rng=rng, counter=counter)
            if counter.steps != self.steps_per_round:
                raise DPEngineError(
                    f"site {self.site_id}: {counter.steps} DP steps taken, {self.steps_per_round} planned"
                )
            if plan != taken:
                raise DPEngineError(f"site {self.site_id}: the steps taken differ from the public plan")
        except BaseException:
            # The begun round stays counted at its planned cost (with a ledger: replayed from it).
            if self._ledger is not None:
                self._accountant = self._replay(self._ledger)
            else:
                self._accountant.step(
                    noise_multiplier=self.accounted_noise_multiplier,
                    sample_rate=self.sample_rate,
                    num_steps=planned,
                )
            self._class_counts = self._fresh_class_counts()
            raise
        steps = self._class_counts.record(plan)
        self._accountant.step(
            noise_multiplier=self.accounted_noise_multiplier, sample_rate=self.sample_rate, num_steps=steps
        )
        if self._ledger is not None:
            # Durable before the update (or the report) can leave the site.
            eps = float(self._accountant.get_epsilon(delta=float(p.delta)))
            self._ledger.commit(sites=self._ledger_record(epsilon=eps, steps=steps))
        self._round, self._round_steps, self._exhausted = int(round_idx), steps, False
        return LocalUpdate(
            delta=result.delta,
            train_loss=result.train_loss,  # private: for the site's own use, never released
            num_tasks=self._public_num_tasks,
            num_examples=0,
        )

    @property
    @abstractmethod
    def _public_num_tasks(self) -> int:
        """The round's planned units (a function of the configuration)."""

    def _check_learner(self, *, learner: Learner, model: nn.Module) -> None:
        """Refuse a learner or model the mechanism does not support (before any plan or step)."""

    @abstractmethod
    def _plan_round(self, *, rng: np.random.Generator) -> list[frozenset[int]]:
        """The class plan of every DP step of the next round (public, data-independent)."""

    @abstractmethod
    def _train(
        self, *, learner: Learner, model: nn.Module, rng: np.random.Generator, counter: StepCounter
    ) -> tuple[LocalUpdate, list[frozenset[int]]]:
        """One round of DP local training through the learner's own ``local_update``.

        Returns:
            The learner's update and the class plans of the steps actually taken.
        """


class EpisodicSitePrivacy(RecordSitePrivacy):
    """Record-level DP for ProtoNet, MAML and FOMAML: per-episode clipping (notes §1).

    Each round runs the learner's own ``local_update`` with a per-episode DP engine
    (:class:`~secfed.dp.engines.EpisodeDPEngineFactory`: :class:`~privacy.episodic.EpisodicDPSGD`,
    noisy sum divided by the public ``privacy.episodes_per_step``) and the episodes of a
    :class:`~privacy.sampling.RecordEpisodeSampler` whose step counter persists across rounds (no
    ``(secret seed, step)`` reuse): ``learner.local_steps`` DP steps. The episode loss is the
    learner's own, on a :class:`~secfed.tasks.base.Task` built per episode (:func:`episode_task`);
    gradients are computed episode by episode (``torch.func.grad``). Accounting is class-aware
    over each step's public slot plan.
    """

    def _prepare(self) -> None:
        config, site_id = self._cfg, self.site_id
        p = config.privacy
        n_way = int(config.task.n_way)
        self._require_n_way(n_way=n_way, why="record-level DP slots need n_way of the site's classes")
        self._public_seed = derive_seed(config.experiment.seed, "dp-episode-slots", site_id)
        self._sampler = RecordEpisodeSampler(
            labels=self._y.numpy(),
            classes=self._classes,
            num_slots=int(p.episodes_per_step),
            n_way=n_way,
            sample_rate=float(p.sample_rate),
            support_prob=_SUPPORT_PROB,
            secret_seed=os.urandom(32),
            public_seed=self._public_seed,
            record_ids=self._record_ids,
        )

    @property
    def mechanism(self) -> str:
        """``"episodic-gaussian"``."""
        return MECHANISM_EPISODIC

    @property
    def steps_per_round(self) -> int:
        """``learner.local_steps`` (an upper bound on the class-aware steps a round adds)."""
        return int(self._cfg.learner.local_steps)

    @property
    def _public_num_tasks(self) -> int:
        return self.steps_per_round * int(self._cfg.privacy.episodes_per_step)

    @property
    def sampler(self) -> RecordEpisodeSampler:
        """The site's episode sampler (its step counter persists across rounds)."""
        return self._sampler

    def describe(self) -> dict[str, Any]:
        """See :meth:`SitePrivacy.describe`; adds ``episodes_per_step`` and ``n_way``."""
        out = super().describe()
        out["episodes_per_step"] = int(self._cfg.privacy.episodes_per_step)
        out["n_way"] = int(self._cfg.task.n_way)
        return out

    def _check_learner(self, *, learner: Learner, model: nn.Module) -> None:
        if not isinstance(learner, EpisodicLearner):
            raise ConfigError(f"learner {learner.name!r} has no per-episode meta-loss")

    def _plan_round(self, *, rng: np.random.Generator) -> list[frozenset[int]]:
        """The public slot plans of the next ``local_steps`` sampler steps (what the sampler will draw)."""
        p = self._cfg.privacy
        start = self._sampler.step
        return [
            frozenset(
                int(c)
                for c in np.asarray(
                    sampling.draw_slots(
                        classes=self._classes,
                        num_slots=int(p.episodes_per_step),
                        n_way=int(self._cfg.task.n_way),
                        public_seed=self._public_seed,
                        step=start + i,
                    )
                ).ravel()
            )
            for i in range(self.steps_per_round)
        ]

    def _train(
        self, *, learner: Learner, model: nn.Module, rng: np.random.Generator, counter: StepCounter
    ) -> tuple[LocalUpdate, list[frozenset[int]]]:
        assert isinstance(learner, EpisodicLearner)
        p = self._cfg.privacy
        units = PrivateEpisodes(sampler=self._sampler, x=self._x)
        engine = EpisodeDPEngineFactory(
            noise_multiplier=self.engine_noise_multiplier,
            max_grad_norm=float(p.max_grad_norm),
            sample_rate=float(p.sample_rate),
            normaliser=step_normaliser(config=self._cfg),
            accountant=counter,
        )
        if p.augmult > 1:  # augmentation multiplicity: K augmented copies per episode, clipped once
            engine = AugmultEpisodeDPEngineFactory(base=engine, multiplicity=int(p.augmult))  # type: ignore[assignment]
        # The learner's task source is not used: the private sampler supplies every step's units.
        update = learner.local_update(model=model, tasks=_NoTasks(), rng=rng, engine=engine, units=units)
        return update, units.plans


class _NoTasks:
    """A task source that refuses to be sampled (the DP unit source replaces it)."""

    def sample(self, *, rng: np.random.Generator) -> Any:
        raise DPEngineError("record-level DP draws its units from the private sampler, not the task source")


class PerSampleSitePrivacy(RecordSitePrivacy):
    """Record-level DP for Reptile and FedAvg: per-sample DP-SGD through the learner's own loop.

    * FedAvg: the learner's ``local_update`` with a per-record DP-SGD engine
      (:class:`~secfed.dp.engines.RecordDPEngineFactory`: :class:`~privacy.dpsgd.PerSampleDPSGD`,
      ``local_optimizer``, ``local_lr``, noisy sum divided by ``privacy.expected_batch``) and a
      Poisson batch source over the site's records: ``local_steps`` DP steps, every class in each.
    * Reptile: the learner's ``local_update`` with a source of tasks that are ``task.n_way``
      classes drawn from the site's public class list with the runtime's public generator (drawn
      before the round, so the class-aware cost is known in advance) and a DP inner trainer
      (:class:`~secfed.dp.engines.PoissonClassTrainer`): ``inner_steps`` DP-SGD steps per task
      (``inner_optimizer``, ``inner_lr``, fresh state) on Poisson-sampled records of the task's
      classes. The head zeroing, the differences and the outer step are the learner's
      (post-processing). Accounting is class-aware over the task class sets.
    """

    @property
    def _plans_tasks(self) -> bool:
        """Whether the learner's public plan is class tasks drawn every round (its ``dp_plan``:
        Reptile), else every class in every step (FedAvg)."""
        return learner_class(self._cfg.learner.name).dp_plan == "tasks"

    def _prepare(self) -> None:
        if self._plans_tasks:
            self._require_n_way(n_way=self._cfg.task.n_way)
        self._round_tasks: list[ClassTask] = []

    @property
    def mechanism(self) -> str:
        """``"per-sample-gaussian"``."""
        return MECHANISM_PER_SAMPLE

    @property
    def steps_per_round(self) -> int:
        """``local_steps`` (FedAvg) or ``local_steps * meta_batch * inner_steps`` (Reptile).

        For Reptile an upper bound on the class-aware steps a round adds. The planned count of
        :class:`~secfed.dp.params.DPParams` (the learner's ``dp_steps_per_local_step``).
        """
        return int(self._params.steps_per_round)

    @property
    def _public_num_tasks(self) -> int:
        lr = self._cfg.learner
        return int(lr.local_steps * lr.meta_batch) if self._plans_tasks else int(lr.local_steps)

    def _engine(self, *, counter: StepCounter) -> RecordDPEngineFactory:
        p = self._cfg.privacy
        return RecordDPEngineFactory(
            x=self._x,
            y=self._y,
            noise_multiplier=self.engine_noise_multiplier,
            max_grad_norm=float(p.max_grad_norm),
            sample_rate=float(p.sample_rate),
            normaliser=step_normaliser(config=self._cfg),
            accountant=counter,
            record_ids=self._record_ids,
        )

    def _check_head(self, *, model: nn.Module, needed: int) -> None:
        with torch.no_grad():
            outputs = model(self._x[:1])
        if outputs.ndim != 2 or outputs.shape[-1] < needed:
            raise ConfigError(
                f"{self._cfg.learner.name} under record-level DP needs a classification head with >= "
                f"{needed} outputs, got model outputs of shape {tuple(outputs.shape)}"
            )

    def _check_learner(self, *, learner: Learner, model: nn.Module) -> None:
        if isinstance(learner, FedAvgLearner):
            self._check_head(model=model, needed=max(self._classes) + 1)
        elif isinstance(learner, Reptile):
            self._check_head(model=model, needed=int(self._cfg.task.n_way))
        else:
            raise ConfigError(f"per-sample DP-SGD supports reptile and fedavg, got {learner.name!r}")

    def _plan_round(self, *, rng: np.random.Generator) -> list[frozenset[int]]:
        """Reptile: draw the round's class tasks (public generator); FedAvg: every class, every step."""
        lr = self._cfg.learner
        if not self._plans_tasks:
            self._round_tasks = []
            return [frozenset(self._classes)] * self.steps_per_round
        self._round_tasks = draw_class_tasks(
            classes=self._classes,
            n_way=int(self._cfg.task.n_way),
            count=int(lr.local_steps * lr.meta_batch),
            rng=rng,
        )
        return [frozenset(t.classes) for t in self._round_tasks for _ in range(int(lr.inner_steps))]

    def _train(
        self, *, learner: Learner, model: nn.Module, rng: np.random.Generator, counter: StepCounter
    ) -> tuple[LocalUpdate, list[frozenset[int]]]:
        engine = self._engine(counter=counter)
        if isinstance(learner, FedAvgLearner):
            source = PoissonRecordBatches(
                x=self._x,
                y=self._y,
                sample_rate=float(self._cfg.privacy.sample_rate),
                record_ids=self._record_ids,
            )
            update = learner.local_update(model=model, tasks=source, rng=rng, engine=engine)
            return update, [frozenset(self._classes)] * counter.steps
        assert isinstance(learner, Reptile)
        inner = PoissonClassTrainer(
            x=self._x,
            y=self._y,
            sample_rate=float(self._cfg.privacy.sample_rate),
            record_ids=self._record_ids,
            engine=engine,
        )
        tasks = PlannedClassTasks(plan=self._round_tasks)
        update = learner.local_update(model=model, tasks=tasks, rng=rng, inner=inner)  # type: ignore[arg-type]
        taken = [frozenset(t.classes) for t in tasks.drawn for _ in range(int(learner.config.inner_steps))]
        return update, taken


def _check_config(config: ExperimentConfig) -> None:
    p = config.privacy
    if p.mode == "none":
        raise ConfigError("privacy.mode = 'none' has no site privacy hook")
    if p.mode != "record":
        return
    name = config.learner.name
    if name not in _EPISODIC_LEARNERS + _PER_SAMPLE_LEARNERS:
        raise ConfigError(f"record-level DP does not support learner.name = {name!r}")
    cls = learner_class(name)
    if (cls.episodic or cls.dp_plan == "tasks") and config.task.source != "episodic":
        raise ConfigError(
            f"task.source = {config.task.source!r} is not supported under record-level DP for {name}; "
            "use 'episodic' (records are drawn into public class slots)"
        )
    if config.model.norm == "batch":
        raise ConfigError("model.norm = 'batch' couples records; record-level DP needs 'group' or 'none'")


def build_site_privacy(
    *,
    config: ExperimentConfig,
    site_id: int,
    site: Site,
    state_dir: str | Path | None = None,
    key_dir: str | Path | None = None,
) -> SitePrivacy:
    """Build the site's privacy hook for the configured mode and learner.

    Args:
        config: The experiment configuration (``privacy.mode`` in ``record``, ``client``,
            ``distributed``).
        site_id: The site's id.
        site: The site's own data.
        state_dir: Record mode: the site's state directory (its durable ledger, replayed into the
            accountant, so the ε budget survives restarts); ``None`` keeps the accountant in memory.
            Ignored in client/distributed mode.
        key_dir: Directory of the site ledger's HMAC key (default ``$SECFED_KEY_DIR`` or
            ``~/.config/secfed/keys``).

    Returns:
        :class:`EpisodicSitePrivacy` (record mode, ProtoNet/MAML/FOMAML),
        :class:`PerSampleSitePrivacy` (record mode, Reptile/FedAvg) or
        :class:`ClientLevelSitePrivacy` (client / distributed mode).

    Raises:
        ConfigError: If the mode is ``none``, the learner/task source is unsupported under
            record-level DP, or ``task.n_way`` exceeds the site's classes.
        SitePrivacyStateError: If ``site`` is not site ``site_id``.
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if not isinstance(site, Site) or site.site_id != site_id:
        raise SitePrivacyStateError(f"site {getattr(site, 'site_id', None)} is not site {site_id}")
    _check_config(config)
    if config.privacy.mode in ("client", "distributed"):
        return ClientLevelSitePrivacy(config=config, site_id=site_id)
    if config.learner.name in _EPISODIC_LEARNERS:
        return EpisodicSitePrivacy(
            config=config, site_id=site_id, site=site, state_dir=state_dir, key_dir=key_dir
        )
    return PerSampleSitePrivacy(
        config=config, site_id=site_id, site=site, state_dir=state_dir, key_dir=key_dir
    )
