"""Server-side privacy: the run's append-only ε ledger around every round, whatever the mode.

:class:`ServerPrivacy` is what :class:`secfed.experiment.Experiment` calls around every round. It
holds the ledger and the columns it replays into (:class:`secfed.dp.modes.AccountingState`) and
leaves everything that depends on ``privacy.mode`` to the mode's strategy
(:class:`secfed.dp.modes.PrivacyMode`: record-level DP-SGD, client-level DP-FedAvg, or distributed
DDG/Skellam; each module says what it accounts and why):

* ``resume_to`` opens ``RUN_DIR/privacy_ledger.jsonl`` (:mod:`secfed.dp.run_ledger`; its
  HMAC key lives outside the run directory, see :mod:`privacy.ledger`), verifies every MAC, and
  replays every counted entry into fresh accountants. Nothing is ever removed: when the checkpoint
  is older than the ledger (or missing), a ``resume`` entry is written and the rounds after the
  checkpoint, which did release, stay counted; re-running them counts them again. A ledger that
  fails verification, cannot be verified (no key), or ends before the checkpoint raises
  :class:`secfed.errors.IntegrityError`;
* ``before_round`` enforces ``privacy.epsilon_budget``: sites whose ε would exceed it are excluded
  (record mode), and the run stops when the global ε would exceed it or no site may take part any
  more. When the round may run, it writes the round's ``begin`` entry (write-ahead, fsync'ed)
  *before* any site is asked to train, with the largest cost the round can have (every site that
  may train takes its planned steps; in client/distributed mode every such site is in the
  aggregate, and a distributed round has the fewest survivors that can decode,
  :func:`secfed.dp.modes.worst_case_survivors`). A crash after that point leaves the round counted
  at that cost;
* ``central_noise`` is the mode's release of the aggregate: ``N(0, (zC)^2 I)`` added in ``client``
  mode (DP-FedAvg with a trusted aggregator; McMahan, Ramage, Talwar & Zhang, ICLR 2018, arXiv
  1710.06963), the aggregate unchanged otherwise;
* ``after_round`` checks every site's report (:func:`secfed.dp.reports.parse_site_report`), updates
  the accountants and writes the round's ``commit`` entry (write, flush, fsync) with the actual cost
  *before* the experiment writes the checkpoint or the metrics, i.e. before the round's model is
  released.

Client sampling is public, so it is never claimed to amplify privacy
-----------------------------------------------------------------------
The sampled sites are drawn from ``experiment.seed`` (in ``config.toml``), the sites in each
aggregate are logged in ``metrics.jsonl``, and under secure aggregation the server runs the protocol
with exactly the sampled sites and sees who sends a masked input. Amplification by subsampling
(Mironov, Talwar & Zhang 2019; Zhu & Wang 2019) assumes the adversary does not learn the sample, so
it does not apply. The client-level ε is therefore accounted per participation, with no
amplification (:mod:`secfed.dp.modes.participation`); planning and calibration use the same count
from the public schedule (:func:`secfed.dp.planning.client_rounds`). Fixed-size and Poisson sampling
are accounted alike (only the schedule matters).

Secret client sampling (sites flipping private coins) is *not* offered: in ``distributed`` mode the
server sees who sends masked inputs, so the sample is never secret there; in ``client`` mode the
trusted aggregator still receives the updates (it learns the sample), and a claim against readers of
the outputs would require every other output (``metrics.jsonl``'s client lists and survivor
counts, per-site reports, timing, bytes) to hide participation, which the runtime does not do.

Aggregation weights must be uniform under DP (``federation.weighting = "uniform"``): record-count
weights depend on the private data and would scale a site's contribution beyond the sensitivity
the noise was calibrated for.

The planning and calibration functions (:mod:`secfed.dp.planning`, :mod:`secfed.dp.calibration`)
are importable from here too, where their importers expect them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from privacy.accountants import Accountant
from privacy.adjacency import Adjacency
from privacy.distributed import DistributedDPConfig
from privacy.errors import LedgerError
from privacy.ledger import (
    MechanismRecord,
    PlannedSteps,
    PrivacyBudget,
    PrivacyLedger,
)
from secfed.builders import RunShape
from secfed.config import ExperimentConfig
from secfed.dp.calibration import calibrated_config, calibrated_noise_multiplier
from secfed.dp.distributed import distributed_dp_config, model_dim
from secfed.dp.modes import (
    MECHANISM_DP_FEDAVG,
    MECHANISM_RECORD_BOUND,
    AccountingState,
    DistributedMode,
    PrivacyStateError,
    privacy_mode,
)
from secfed.dp.params import DPParams, given_or_built
from secfed.dp.planning import (
    client_rounds,
    planned_epsilon,
    record_class_aware_steps,
    record_mechanism,
    record_planned_noise_multiplier,
    record_rounds,
    record_steps_per_round,
)
from secfed.dp.reports import SiteReport, parse_site_report
from secfed.dp.run_ledger import LEDGER_FILE, open_run_ledger
from secfed.errors import CheckpointError, ConfigError, MessageError
from secfed.federation.server import RoundOutcome

__all__ = [
    "ADJACENCY_CLIENT",
    "ADJACENCY_RECORD",
    "LEDGER_FILE",
    "MECHANISM_DP_FEDAVG",
    "MECHANISM_RECORD_BOUND",
    "PrivacyStateError",
    "ServerPrivacy",
    "calibrated_config",
    "calibrated_noise_multiplier",
    "client_rounds",
    "planned_epsilon",
    "record_class_aware_steps",
    "record_mechanism",
    "record_planned_noise_multiplier",
    "record_rounds",
    "record_steps_per_round",
]

log = logging.getLogger("secfed")

#: Aliases of :class:`privacy.adjacency.Adjacency`'s members (record-level DP, client-level
#: DP-FedAvg, the distributed mechanisms), kept for importers.
ADJACENCY_RECORD = Adjacency.RECORD
ADJACENCY_CLIENT = Adjacency.CLIENT
ADJACENCY_DISTRIBUTED = Adjacency.DISTRIBUTED


class ServerPrivacy:
    """Budgets, central noise and the privacy ledger of one run (see the module docstring).

    Args:
        config: The configuration (``privacy.mode`` in ``record``, ``client``, ``distributed``).
        run_dir: The run directory (the ledger is ``run_dir/privacy_ledger.jsonl``; nothing is
            written before :meth:`resume_to`).
        key_dir: Directory of the ledger's HMAC key (default :func:`privacy.ledger.default_key_dir`:
            ``$SECFED_KEY_DIR`` or ``~/.config/secfed/keys``); never inside ``run_dir``.
        shape: The run's shape (:class:`secfed.builders.RunShape`) when the caller holds it;
            ``None`` finds it from the configuration (:func:`secfed.builders.run_shape`) when needed.
        params: The run's privacy parameters (:func:`secfed.dp.params.dp_params` of ``config``)
            when the caller holds them (``Experiment.run`` builds them once); ``None`` builds them
            here.

    Raises:
        ConfigError: Privacy off, non-uniform aggregation weights, or ``params`` built from
            another configuration.
    """

    def __init__(
        self,
        *,
        config: ExperimentConfig,
        run_dir: str | Path,
        key_dir: str | Path | None = None,
        shape: RunShape | None = None,
        params: DPParams | None = None,
    ) -> None:
        if not isinstance(config, ExperimentConfig):
            raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
        # The one place the server reads the privacy settings: a typed value, handed down.
        params = given_or_built(config=config, params=params)
        self._params = params
        self._strategy = privacy_mode(params=params, dim=self._model_dim)
        if config.federation.weighting != "uniform":
            raise ConfigError(
                f"federation.weighting = {config.federation.weighting!r} is invalid under DP: weights "
                "must be 'uniform' (record-count weights depend on private data and scale a site's "
                "contribution beyond the sensitivity the noise is calibrated for)"
            )
        self._cfg = config
        self._shape = shape
        self._run_dir = Path(run_dir)
        self._key_dir = None if key_dir is None else Path(key_dir)
        self._delta = params.delta
        self._z = params.noise_multiplier
        self._clip = params.max_grad_norm
        self._budget_value = params.epsilon_budget
        per_site = self._strategy.privacy_unit == "record"
        self._budget = PrivacyBudget(
            delta=self._delta,
            site_epsilon=self._budget_value if per_site else None,
            global_epsilon=None if per_site else self._budget_value,
        )
        self._state = AccountingState()
        key = self._strategy.planned_key
        target = params.target_epsilon
        if target is not None and key is not None:
            planned = planned_epsilon(config=config, shape=shape, params=params)[key]
            if planned > target * (1 + 1e-6):
                log.warning(
                    "privacy.target_epsilon = %g but noise_multiplier %.6g plans epsilon %.4g; call "
                    "secfed.dp.calibrated_config() before running (the ledger reports the true epsilon)",
                    target,
                    self._z,
                    planned,
                )

    def _model_dim(self) -> int:
        """The run's flat update length (from the shape, else found from the configuration once)."""
        return model_dim(config=self._cfg, shape=self._shape)

    # ---------------------------------------------------------------- properties
    @property
    def params(self) -> DPParams:
        """The run's privacy parameters (:class:`secfed.dp.params.DPParams`)."""
        return self._params

    @property
    def ledger_path(self) -> Path:
        """The ledger file."""
        return self._run_dir / LEDGER_FILE

    @property
    def mode(self) -> str:
        """``record``, ``client`` or ``distributed``."""
        return self._strategy.name

    @property
    def privacy_unit(self) -> str:
        """``record`` or ``client``."""
        return self._strategy.privacy_unit

    @property
    def adjacency(self) -> str:
        """The adjacency relation of the claimed guarantee."""
        return self._strategy.adjacency.value

    @property
    def mechanism(self) -> str:
        """The mechanism of the claimed guarantee."""
        return self._strategy.mechanism

    @property
    def accountant_name(self) -> str:
        """``rdp``/``prv`` (Gaussian mechanisms) or ``distributed-rdp``."""
        return self._strategy.accountant_name

    def distributed_config(self) -> DistributedDPConfig:
        """The distributed-DP encoding of the run (``distributed`` mode; built once, needs the model size).

        Raises:
            ConfigError: In another mode, or when the encoding cannot be planned.
        """
        if isinstance(self._strategy, DistributedMode):
            return self._strategy.distributed_config()
        return distributed_dp_config(params=self._params, dim=self._model_dim())

    def worst_case_survivors(self) -> int:
        """Fewest clients whose noise can reach a decoded SecAgg sum in one round
        (:func:`secfed.dp.params.worst_case_survivors`)."""
        return self._params.worst_case_survivors

    # ---------------------------------------------------------------- sites
    def _add_site(self, sid: int) -> None:
        n = self._params.num_sites
        if isinstance(sid, bool) or not isinstance(sid, (int, np.integer)) or not 0 <= int(sid) < n:
            raise MessageError(f"site id {sid!r} is outside [0, {n})")
        st = self._state
        if int(sid) not in st.site_ids:
            st.site_ids = sorted([*st.site_ids, int(sid)])
        st.site_acc.setdefault(str(int(sid)), self._strategy.new_site_accountant())

    def register_sites(self, sites: Mapping[int, Mapping[str, Any]]) -> None:
        """Record the sites of the run (their public summaries from ``site_info``).

        Every registered site gets a ledger column from the next round on (ε 0 until it trains).

        Args:
            sites: ``{site id: info}``; ``info["privacy"]``, when present, is the site hook's
                ``describe()`` and must be for this run's mode.

        Raises:
            MessageError: A site id out of range, or a site describing another privacy mode.
        """
        if not isinstance(sites, Mapping):
            raise MessageError(f"sites must be a mapping of site id to info, got {type(sites).__name__}")
        for sid, info in sites.items():
            self._add_site(sid)
            desc = info.get("privacy") if isinstance(info, Mapping) else None
            if desc is None:
                continue
            mode = desc.get("mode") if isinstance(desc, Mapping) else None
            if mode != self.mode:
                raise MessageError(f"site {sid} runs privacy mode {mode!r}, the server {self.mode!r}")
            self._state.site_info[int(sid)] = dict(desc)

    # ---------------------------------------------------------------- the ledger
    def resume_to(self, *, completed_round: int) -> None:
        """Open (or create) the ledger, verify it, keep every entry, rebuild the accountants.

        Rounds the ledger holds beyond ``completed_round`` (their checkpoint did not survive, or
        ``checkpoint/state.json`` is missing and ``completed_round`` is 0) released something: they
        stay counted, a ``resume`` entry records the restart, and the next round is
        ``completed_round + 1`` again (counted anew when it runs). ε is never under-reported.

        Args:
            completed_round: The last round whose checkpoint exists (0 for a fresh run or none).

        Raises:
            IntegrityError: The ledger fails its MAC or hash check, is shorter than its head says,
                cannot be verified (key missing, unkeyed version-1 ledger), its recorded ε is not
                reproduced by replay, or it ends before ``completed_round`` (a released round without a
                ledger entry).
            CheckpointError: The ledger cannot be written.
            ConfigError: The ledger was written with another δ, budget or accountant.
        """
        if isinstance(completed_round, bool) or not isinstance(completed_round, int) or completed_round < 0:
            raise PrivacyStateError(f"completed_round must be an integer >= 0, got {completed_round!r}")
        ledger, sites, glob = open_run_ledger(
            run_dir=self._run_dir,
            budget=self._budget,
            accountant=self._params.accountant,
            key_dir=self._key_dir,
            completed_round=completed_round,
        )
        if glob is None:
            glob = self._strategy.new_global_accountant()
        self._state.replay(ledger=ledger, site_acc=sites, global_acc=glob)
        for name in list(self._state.site_acc):
            if name.isdigit():
                self._add_site(int(name))

    def before_round(self, *, round_idx: int) -> tuple[frozenset[int], str | None]:
        """Apply the budget to the next round and, if it may run, write its ``begin`` entry (write-ahead).

        The ``begin`` is durable (fsync'ed) before this returns, i.e. before any site is asked to
        train, and holds the largest cost the round can have (see the module docstring); from then
        on the round counts toward ε even if the process dies before :meth:`after_round`. Calling
        it again for the round already begun returns the same exclusions and writes nothing.

        Args:
            round_idx: The round about to run (must follow the ledger's last round).

        Returns:
            ``(excluded sites, stop reason or None)``; with a stop reason nothing is written.

        Raises:
            PrivacyStateError: Before :meth:`resume_to`, for an out-of-order round, or while another
                round is begun and not committed.
            CheckpointError: The ``begin`` entry cannot be written.
        """
        st = self._state
        ledger = st.require_ledger()
        pending = ledger.pending
        if pending is not None:
            if pending.round == round_idx:
                return st.excluded, None
            raise PrivacyStateError(
                f"round {pending.round} was begun and never committed; resume the run (resume_to) first"
            )
        if round_idx != ledger.last_round + 1:
            raise PrivacyStateError(
                f"round {round_idx} does not follow the ledger's round {ledger.last_round}"
            )
        names = [str(s) for s in st.site_ids]
        excluded = {int(n) for n in st.exhausted if n.isdigit()}
        reasons: list[str] = []
        b = self._budget_value
        if b is not None:
            over, reasons = self._strategy.over_budget(state=st, budget=b)
            excluded |= over
        st.excluded = frozenset(excluded)
        if st.excluded:
            log.info("privacy: sites %s excluded from round %d (budget)", sorted(st.excluded), round_idx)
        if names and len(st.excluded) >= len(names):
            detail = "; ".join(reasons) if reasons else "every site reported its budget exhausted"
            return st.excluded, (
                f"privacy budget exhausted: no site may take part any more without exceeding "
                f"epsilon_budget = {b} at delta = {self._delta:g} ({detail})"
            )
        plan = self._strategy.global_plan(state=st, round_idx=round_idx) if b is not None else None
        if plan is not None:
            check = ledger.check_budget(
                site_accountants={}, site_plans={}, global_accountant=st.global_acc, global_plan=plan
            )
            if not check.allowed:
                return st.excluded, "privacy budget exhausted: " + "; ".join(check.reasons)
        self._begin(ledger=ledger, round_idx=round_idx)
        return st.excluded, None

    def _begin(self, *, ledger: PrivacyLedger, round_idx: int) -> None:
        """Write-ahead: the round's planned (largest) cost, durable before anything can be released."""
        may_train = [s for s in self._state.site_ids if s not in self._state.excluded]
        planned, survivors = self._strategy.write_ahead(state=self._state, may_train=may_train)
        records, _, glob_rec, _ = self._round_records(
            reports=planned,
            included={str(s) for s in may_train},
            survivors=survivors,
            round_idx=round_idx,
            clients=may_train,
            planning=True,
        )
        try:
            ledger.begin(round=round_idx, sites=records, global_record=glob_rec)
        except (LedgerError, OSError) as exc:
            raise CheckpointError(f"{self.ledger_path}: cannot begin round {round_idx}: {exc}") from exc

    def _round_records(
        self,
        *,
        reports: Mapping[str, SiteReport],
        included: set[str],
        survivors: int,
        round_idx: int,
        clients: list[int],
        planning: bool,
    ) -> tuple[dict[str, MechanismRecord], dict[str, Accountant], MechanismRecord | None, Accountant | None]:
        """Every site's and the global record after a round (accountants stepped on copies)."""
        st = self._state
        records: dict[str, MechanismRecord] = {}
        new_acc: dict[str, Accountant] = {}
        for name in (str(s) for s in st.site_ids):
            st.site_acc.setdefault(name, self._strategy.new_site_accountant())
            records[name], new_acc[name] = self._strategy.site_record(
                state=st, name=name, report=reports.get(name), included=name in included, survivors=survivors
            )
        glob_rec, glob_acc = self._strategy.global_record(
            state=st, round_idx=round_idx, clients=clients, planning=planning
        )
        return records, new_acc, glob_rec, glob_acc

    # ---------------------------------------------------------------- noise
    def central_noise(self, total: np.ndarray, n_survivors: int, round_idx: int) -> np.ndarray:
        """The aggregate SUM as the mode releases it: with DP-FedAvg's noise ``N(0, (zC)^2 I)`` in
        ``client`` mode (:meth:`secfed.dp.modes.ClientMode.release`), unchanged otherwise (record
        mode: the sites' updates are already DP; distributed mode: the sites' noise shares are in
        the SecAgg sum).

        Args:
            total: The decoded sum of the survivors' updates (1-D float; zeros when none survived:
                the noise is released every round, see
                :func:`secfed.federation.server.public_normaliser`).
            n_survivors: Number of updates in the sum (>= 0). It does not set the noise: the std is
                ``z·C`` whatever the count.
            round_idx: The round.

        Returns:
            The noisy sum (float64) in client mode, ``total`` itself otherwise.

        Raises:
            InvalidInputError: ``total`` is not a finite 1-D float array or ``n_survivors < 0``.
        """
        return self._strategy.release(total=total, n_survivors=n_survivors, round_idx=round_idx)

    # ---------------------------------------------------------------- accounting
    def after_round(self, *, outcome: RoundOutcome) -> dict[str, Any]:
        """Account the round and write its ``commit`` entry (fsync'ed) before the model is released.

        The round must have been begun by :meth:`before_round` (write-ahead).

        Args:
            outcome: The round's outcome (site reports carry ``meta["privacy"]``).

        Returns:
            Metrics to merge into the round's row: ``epsilon`` (global client-level ε in
            client/distributed mode; maximum over sites in record mode), ``epsilon_unit``,
            ``epsilon_sites`` (``{site: record-level ε}``), ``delta``, and ``privacy_excluded``
            when the budget excluded sites.

        Raises:
            PrivacyStateError: Before :meth:`resume_to`, a round that :meth:`before_round` did not
                begin, or (client mode) an aggregate released without central noise.
            MessageError: A trained site without a valid privacy report.
            CheckpointError: The ledger line cannot be written.
        """
        st = self._state
        ledger = st.require_ledger()
        if not isinstance(outcome, RoundOutcome):
            raise PrivacyStateError(f"outcome must be a RoundOutcome, got {type(outcome).__name__}")
        pending = ledger.pending
        if pending is None or outcome.round != pending.round:
            raise PrivacyStateError(
                f"round {outcome.round} was not begun (call before_round first: the ledger's begin entry "
                f"must be durable before the round can release anything; pending: "
                f"{None if pending is None else pending.round})"
            )
        self._strategy.check_released(round_idx=outcome.round, n_clients=len(outcome.clients))
        reports: dict[str, SiteReport] = {}
        for sid, meta in outcome.site_reports.items():
            self._add_site(sid)
            report = meta.get("privacy") if isinstance(meta, Mapping) else None
            reports[str(int(sid))] = parse_site_report(sid=int(sid), report=report, mode=self.mode)
        for sid in outcome.clients:
            self._add_site(sid)
        records, new_acc, glob_rec, glob_acc = self._round_records(
            reports=reports,
            included={str(int(s)) for s in outcome.clients},
            survivors=len(outcome.clients),
            round_idx=outcome.round,
            clients=list(outcome.clients),
            planning=False,
        )
        try:
            ledger.commit(sites=records, global_record=glob_rec)
        except (LedgerError, OSError) as exc:
            raise CheckpointError(f"{self.ledger_path}: cannot commit round {outcome.round}: {exc}") from exc
        # The line is durable: commit the new state.
        st.site_acc.update(new_acc)
        st.site_last.update(records)
        for name, rep in reports.items():
            if rep.steps > 0:
                st.site_plan[name] = PlannedSteps(
                    noise_multiplier=rep.noise_multiplier, sample_rate=rep.sample_rate, steps=rep.steps
                )
            if rep.budget_exhausted:
                st.exhausted.add(name)
        if glob_acc is not None:
            st.global_acc, st.global_last = glob_acc, glob_rec
        metrics = self._epsilon_metrics()
        if st.excluded:
            metrics["privacy_excluded"] = sorted(st.excluded)
        return metrics

    # ---------------------------------------------------------------- reporting
    def _epsilon_metrics(self) -> dict[str, Any]:
        st = self._state
        sites = {str(s): float(st.site_last[str(s)].epsilon) for s in st.site_ids if str(s) in st.site_last}
        if self.privacy_unit == "record":
            eps = max(sites.values(), default=0.0)
            unit = "record (maximum over sites)"
        else:
            eps = float(st.global_last.epsilon) if st.global_last is not None else 0.0
            unit = "client"
        return {
            "epsilon": eps,
            "epsilon_unit": unit,
            "epsilon_sites": sites,
            "epsilon_sites_unit": "record",
            "delta": self._delta,
        }

    def summary(self) -> dict[str, Any]:
        """Final privacy facts for ``summary.json``.

        Returns:
            ``epsilon``, ``epsilon_unit``, ``epsilon_sites``, ``delta``, ``privacy_unit``,
            ``adjacency``, ``accountant``, ``mode``, ``mechanism``, ``noise_multiplier``,
            ``max_grad_norm``, ``epsilon_budget``, ``privacy_rounds``, ``privacy_ledger``; with
            noise sharing ``noise_sharing`` and ``trust_assumption``; in client/distributed mode
            ``client_sampling``, ``client_sample_rate`` and ``client_participations_max``.
        """
        ledger = self._state.ledger
        out = self._epsilon_metrics()
        out.update(
            {
                "privacy_unit": self.privacy_unit,
                "adjacency": self.adjacency,
                "accountant": self.accountant_name,
                "mode": self.mode,
                "mechanism": self.mechanism,
                "noise_multiplier": self._z,
                "max_grad_norm": self._clip,
                "epsilon_budget": self._budget_value,
                "privacy_rounds": ledger.last_round if ledger is not None else 0,
                "privacy_ledger": LEDGER_FILE,
                "privacy_ledger_integrity": ledger.integrity if ledger is not None else None,
            }
        )
        out.update(self._strategy.summary(state=self._state))
        return out
