"""Record-level DP at the site: the common part of every learner's mechanism.

:class:`RecordSitePrivacy` holds the site's tensors and public class list, its accountant (replayed
from its durable, HMAC-authenticated ledger ``<state_dir>/ledger.jsonl`` when it has a state
directory), the class-aware step counts (:class:`secfed.dp.engines.accounting.ClassStepCounts`) and
the ε budget check, and runs a round: public plan, budget, write-ahead ``begin``, the mechanism's
own training, the plan check, composition, ``commit``. The mechanisms: :mod:`secfed.dp.site.episodic`
(ProtoNet, MAML, FOMAML) and :mod:`secfed.dp.site.per_sample` (Reptile, FedAvg).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from privacy.accountants import GaussianAccountant, PLDAccountant, PRVAccountant, RDPAccountant
from privacy.adjacency import Adjacency
from privacy.dpsgd import check_record_independent_model
from privacy.errors import LedgerCorruptedError, PrivacyError
from privacy.ledger import (
    LedgerKeyError,
    LedgerUnverifiableError,
    MechanismRecord,
    PrivacyBudget,
    PrivacyLedger,
)
from secfed.dp.engines.accounting import ClassStepCounts, StepCounter
from secfed.dp.engines.steps import DPEngineError
from secfed.dp.site.base import SitePrivacy, SitePrivacyStateError
from secfed.dp.site.params import SiteDPParams
from secfed.errors import ConfigError, IntegrityError
from secfed.learners.base import Learner, LocalUpdate
from secfed.learners.common import trainable_params
from secfed.site import Site

__all__ = ["SITE_LEDGER_FILE", "RecordSitePrivacy"]

#: File name of a site's own ledger inside its state directory.
SITE_LEDGER_FILE = "ledger.jsonl"
#: The site's accountant by ``privacy.accountant`` (every choice of the configuration).
_SITE_ACCOUNTANTS: dict[str, type[GaussianAccountant]] = {
    "rdp": RDPAccountant,
    "prv": PRVAccountant,
    "pld": PLDAccountant,
}


def _zero_update(model: nn.Module) -> LocalUpdate:
    return LocalUpdate(
        delta={n: torch.zeros_like(p, dtype=torch.float32) for n, p in trainable_params(model).items()},
        train_loss=float("nan"),
        num_tasks=0,
        num_examples=0,
    )


class RecordSitePrivacy(SitePrivacy):
    """Common part of record-level DP: site tensors, the persistent accountant, the budget check.

    Args:
        params: The site's parameters (``params.dp.mode == "record"``).
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
        params: SiteDPParams,
        site_id: int,
        site: Site,
        state_dir: str | Path | None = None,
        key_dir: str | Path | None = None,
    ) -> None:
        super().__init__(params=params, site_id=site_id)
        self._accountant: GaussianAccountant = _SITE_ACCOUNTANTS[self._dp.accountant]()
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
        dp = self._dp
        budget = PrivacyBudget(delta=dp.delta, site_epsilon=dp.epsilon_budget)
        path = state_dir / SITE_LEDGER_FILE
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            ledger = PrivacyLedger.open(
                path=path,
                budget=budget,
                accountant=dp.accountant,
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
            return _SITE_ACCOUNTANTS[self._dp.accountant]()
        if not isinstance(acc, GaussianAccountant):
            raise LedgerCorruptedError(f"site {name}: the ledger does not hold a Gaussian mechanism")
        return acc

    def _ledger_record(self, *, epsilon: float, steps: int) -> dict[str, MechanismRecord]:
        return {
            str(self.site_id): MechanismRecord(
                epsilon=epsilon,
                mechanism=self.mechanism,
                noise_multiplier=self.accounted_noise_multiplier,
                sample_rate=self.sample_rate,
                steps=int(steps),
                privacy_unit=self.unit,
                adjacency=self.adjacency,
                params=self._sharing_params(),
            )
        }

    @property
    def epsilon(self) -> float:
        """The site's ε so far at ``privacy.delta`` (its own view; the server's ledger is authoritative)."""
        return float(self._accountant.get_epsilon(delta=self._dp.delta))

    def _projected_epsilon(self, *, steps: int) -> float:
        """The site's ε at ``privacy.delta`` if ``steps`` more DP steps were composed."""
        return float(
            self._accountant.projected_epsilon(
                delta=self._dp.delta,
                noise_multiplier=self.accounted_noise_multiplier,
                sample_rate=self.sample_rate,
                num_steps=steps,
            )
        )

    def _compose(self, *, steps: int) -> None:
        """Compose ``steps`` DP steps of the accounted ``(z, q)`` into the site's accountant."""
        self._accountant.step(
            noise_multiplier=self.accounted_noise_multiplier, sample_rate=self.sample_rate, num_steps=steps
        )

    def _budget_exhausted(self, *, planned: int) -> bool:
        budget = self._dp.epsilon_budget
        if budget is None:
            return False
        projected = self._projected_epsilon(steps=planned)
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
        if self._ledger is not None:
            # Write-ahead: the round counts at its planned cost before the first DP step.
            planned_eps = self._projected_epsilon(steps=planned)
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
                self._compose(steps=planned)
            self._class_counts = self._fresh_class_counts()
            raise
        steps = self._class_counts.record(plan)
        self._compose(steps=steps)
        if self._ledger is not None:
            # Durable before the update (or the report) can leave the site.
            eps = self.epsilon
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
