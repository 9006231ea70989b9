"""Server-side privacy: budgets, DP-FedAvg's central noise, and the run's append-only ε ledger.

:class:`ServerPrivacy` is what :class:`secfed.experiment.Experiment` calls around every round:

* ``resume_to`` opens ``RUN_DIR/privacy_ledger.jsonl`` (:class:`privacy.ledger.PrivacyLedger`; its
  HMAC key lives outside the run directory, see :mod:`privacy.ledger`), verifies every MAC, and
  replays every counted entry into fresh accountants. Nothing is ever removed: when the checkpoint
  is older than the ledger (or missing), a ``resume`` entry is written and the rounds after the
  checkpoint, which did release, stay counted; re-running them counts them again. A ledger that
  fails verification, cannot be verified (no key), or ends before the checkpoint raises
  :class:`secfed.errors.IntegrityError`;
* ``before_round`` enforces ``privacy.epsilon_budget``: sites whose ε would exceed it are excluded,
  and the run stops when the global ε would exceed it or no site may take part any more. When the
  round may run, it writes the round's ``begin`` entry (write-ahead, fsync'ed) *before* any site is
  asked to train, with the largest cost the round can have (every site that may train takes its
  planned steps; in client/distributed mode every such site is in the aggregate, and a distributed
  round has the fewest survivors that can decode, :meth:`ServerPrivacy.worst_case_survivors`). A
  crash after that point leaves the round counted at that cost;
* ``central_noise`` adds ``N(0, (zC)^2 I)`` to the aggregate in ``client`` mode (DP-FedAvg with a
  trusted aggregator; McMahan, Ramage, Talwar & Zhang, ICLR 2018, arXiv 1710.06963);
* ``after_round`` updates the accountants and writes the round's ``commit`` entry (write, flush,
  fsync) with the actual cost *before* the experiment writes the checkpoint or the metrics, i.e.
  before the round's model is released.

What is accounted, per mode
---------------------------
``record`` (privacy unit: one record of a site; adjacency: add/remove one record)
    One column per site, fed by the site's own report (``meta["privacy"]`` of its train reply:
    noise multiplier z, sample rate q, number of DP steps). Sites that did not train add nothing.
    There is no global (client-level) ε; the reported ``epsilon`` is the maximum over sites.
    The budget caps every site's ε: a site whose next round would exceed it is excluded.
    A target ε is met by calibrating z for the site sampled in the most rounds (the sample is
    drawn from the seed before the run, so the count is known exactly: :func:`record_rounds`),
    class-aware where the learner's public plans allow (:func:`record_class_aware_steps`).
    With ``privacy.noise_sharing`` (:mod:`secfed.dp.sharing`) every survivor's step of a round is
    accounted with ``z_eff = z·√((s − c)/(m − c))`` for the round's ``s`` survivors (dropouts raise
    ε; a round whose sum was not decoded is charged at the worst case ``t_floor``; a decoded sum of
    ``s <= c`` survivors is refused: :class:`PrivacyStateError`), and every line carries the
    collusion assumption in ``params["noise_sharing"]``.
``client`` (unit: one site's entire dataset; adjacency: add/remove one site's data)
    Global column: DP-FedAvg's noisy sum, accounted *per participation* (below). A round's
    release is a Gaussian mechanism with noise multiplier z for every site whose update is in the
    sum (each site clips its whole update to C; uniform weights), and costs nothing to a site whose
    update is not. The noise is added every round, also when no update survived, and the sum is
    divided by a public constant (:func:`secfed.federation.server.public_normaliser`).
``distributed`` (unit: one site; adjacency: zero-out, Kairouz et al. 2021)
    Global column: one distributed DDG / Skellam round (:class:`privacy.accountants.DistributedEvent`)
    with the noise of the *survivors only* (``outcome.clients``), per participation (below), for
    every round whose SecAgg sum was decoded. Dropouts therefore raise ε. For the budget, the next
    round is projected with the fewest survivors that can still produce a sum
    (:meth:`ServerPrivacy.worst_case_survivors`), so no ledger ε exceeds the budget.
    The budget caps the global ε.

In ``client`` and ``distributed`` mode each site's column holds a *record-level* bound derived from
the aggregate's noise: adding or removing one record moves the site's clipped update inside the
C-ball, so by at most 2C (2Δ₂, 2Δ₁ in integer units), and only in rounds whose released aggregate
contains the site's update.

Client sampling is public, so it is never claimed to amplify privacy
-----------------------------------------------------------------------
The sampled sites are drawn from ``experiment.seed`` (in ``config.toml``), the sites in each
aggregate are logged in ``metrics.jsonl``, and under secure aggregation the server runs the protocol
with exactly the sampled sites and sees who sends a masked input. Amplification by subsampling
(Mironov, Talwar & Zhang 2019; Zhu & Wang 2019) assumes the adversary does not learn the sample, so
it does not apply. Worse, under zero-out adjacency with distributed noise a site that is not sampled
contributes no noise share either (the output then carries K shares, the zero update K + 1), so
the Zhu–Wang premise fails as well. The client-level ε is therefore accounted per participation,
with no amplification: a site's ε composes only the releases that contained its update, and the
reported (global) ε is the maximum over sites — exactly, from the rounds each site actually took
part in (:func:`privacy.analysis.participation.participation_rdp`). The ledger keeps it as one
chain of ``q = 1`` rounds that steps exactly when the most exposed site's RDP curve would rise
above the chain, so the chain dominates every site's curve and, with identical rounds (client mode),
equals the composition over ``max_i |P_i|`` rounds. Planning and calibration use the same count
from the public schedule (:func:`client_rounds`, the rounds that sample the site sampled most
often). Fixed-size and Poisson sampling are accounted alike (only the schedule matters).

Secret client sampling (sites flipping private coins) is *not* offered: in ``distributed`` mode the
server sees who sends masked inputs, so the sample is never secret there; in ``client`` mode the
trusted aggregator still receives the updates (it learns the sample), and a claim against readers of
the outputs would require every other output (``metrics.jsonl``'s client lists and survivor
counts, per-site reports, timing, bytes) to hide participation, which the runtime does not do.

Aggregation weights must be uniform under DP (``federation.weighting = "uniform"``): record-count
weights depend on the private data and would scale a site's contribution beyond the sensitivity
the noise was calibrated for.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from privacy.accountants import (
    Accountant,
    DistributedDPAccountant,
    DistributedEvent,
    GaussianAccountant,
    create_accountant,
)
from privacy.adjacency import Adjacency
from privacy.calibration import calibrate_noise, distributed_epsilon_for, epsilon_for
from privacy.distributed import DistributedDPConfig, calibrate_distributed_dp
from privacy.errors import InvalidInputError, LedgerCorruptedError, LedgerError, PrivacyError
from privacy.ledger import (
    LedgerKeyError,
    LedgerUnverifiableError,
    MechanismRecord,
    PlannedSteps,
    PrivacyBudget,
    PrivacyLedger,
)
from privacy.noise import add_gaussian_noise, noise_source
from secfed.builders import RunShape, run_shape
from secfed.config import ExperimentConfig
from secfed.dp.distributed import (
    client_sample_rate,
    distributed_dp_config,
    expected_participants,
    max_participants,
    model_dim,
)
from secfed.dp.sharing import (
    effective_noise_multiplier,
    ledger_params,
    noise_sharing_enabled,
    planning_survivors,
    site_noise_multiplier,
    threshold_floor,
    trust_assumption,
)
from secfed.errors import CheckpointError, ConfigError, IntegrityError, MessageError, SecfedError
from secfed.federation.server import RoundOutcome, planned_participation, sampled_sites
from secfed.learners import episodic_learner_names

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

#: The ledger's file name inside the run directory.
LEDGER_FILE = "privacy_ledger.jsonl"
#: Aliases of :class:`privacy.adjacency.Adjacency`'s members (record-level DP, client-level
#: DP-FedAvg, the distributed mechanisms), kept for importers.
ADJACENCY_RECORD = Adjacency.RECORD
ADJACENCY_CLIENT = Adjacency.CLIENT
ADJACENCY_DISTRIBUTED = Adjacency.DISTRIBUTED
#: Ledger name of the global mechanism in ``client`` mode.
MECHANISM_DP_FEDAVG = "dp-fedavg"
#: Ledger name of a site's record-level bound derived from the client-level aggregate's noise.
MECHANISM_RECORD_BOUND = "dp-fedavg-record-bound"
#: Site mechanisms of ``secfed.dp.site`` (record mode) and the client-level clip.
_RECORD_MECHANISMS = ("episodic-gaussian", "per-sample-gaussian")
_CLIENT_CLIP = "client-clip"
_EPISODIC_LEARNERS = episodic_learner_names()  # learners whose class declares ``episodic``
_REPORT_KEYS = ("mode", "unit", "adjacency", "mechanism", "noise_multiplier", "sample_rate", "steps")
_SITE_BOUND_NOTE = "record bound from the aggregate's noise: sensitivity 2C, no sampling amplification"
#: How the client-level ε is accounted (ledger lines, summary, ``planned_epsilon``).
CLIENT_ACCOUNTING = (
    "per participation: the sample is public (drawn from experiment.seed, logged in metrics.jsonl, "
    "seen by the server), so no client-sampling amplification is claimed; epsilon is the maximum "
    "over sites of the composition over the releases that contained each site's update"
)


class PrivacyStateError(SecfedError, RuntimeError):
    """:class:`ServerPrivacy` was called out of order (e.g. a round before ``resume_to``)."""


# --------------------------------------------------------------------------------------------------
# Planning helpers (pure functions of the configuration)
# --------------------------------------------------------------------------------------------------
def record_steps_per_round(*, config: ExperimentConfig) -> int:
    """DP-SGD steps one site takes per round under record-level DP (as :mod:`secfed.dp.site` does).

    Args:
        config: The experiment configuration.

    Returns:
        ``local_steps * meta_batch * inner_steps`` for Reptile (per-sample DP-SGD in every inner
        step), ``local_steps`` otherwise (one episodic or per-sample DP-SGD step per local step).
    """
    lr = config.learner
    if lr.name == "reptile":
        return int(lr.local_steps * lr.meta_batch * lr.inner_steps)
    return int(lr.local_steps)


def record_rounds(*, config: ExperimentConfig) -> int:
    """Rounds that record-level DP is calibrated and planned for: the most any site is sampled in.

    The runtime samples sites from ``experiment.seed`` (public randomness, independent of the
    data), and a site takes DP-SGD steps only in rounds that sample it, so the site sampled most
    often bounds every site's step count (:func:`secfed.federation.server.planned_participation`).
    With every site in every round (the default) this is ``experiment.rounds``. At least 1.

    Args:
        config: The experiment configuration.

    Returns:
        The round count.
    """
    return max(1, *planned_participation(config=config))


def client_rounds(*, config: ExperimentConfig) -> int:
    """Rounds the client-level ε is planned and calibrated for: the most any site is sampled in.

    Client sampling is public (see the module docstring), so a site's client-level ε composes only
    the rounds that include its update, without amplification, and the run's ε is the maximum over
    sites: the composition over the rounds of the site sampled most often in the seed's public
    schedule. Dropouts and budget exclusions only remove participations, so this bounds the ledger.
    The same count as :func:`record_rounds` (one public schedule); ``experiment.rounds`` when every
    site takes part in every round.

    Args:
        config: The experiment configuration.

    Returns:
        The round count (>= 1).
    """
    return record_rounds(config=config)


def record_mechanism(*, config: ExperimentConfig) -> str:
    """The record-level mechanism of the configured learner: episodic or per-sample Gaussian."""
    return _RECORD_MECHANISMS[0] if config.learner.name in _EPISODIC_LEARNERS else _RECORD_MECHANISMS[1]


_CLASS_STEPS_CACHE: dict[tuple[str, str], int] = {}


def record_class_aware_steps(*, config: ExperimentConfig, shape: RunShape | None = None) -> int:
    """Planned DP steps of the most exposed record: class-aware where the public plans allow.

    A site composes only the steps of its worst public class (:mod:`secfed.dp.engines`). The plans
    are public functions of the configuration, so the planner replays them for every site over the
    rounds the public schedule samples it in (:func:`secfed.federation.server.planned_participation`):
    ProtoNet/MAML/FOMAML: the slot plans of the site's steps ``0 .. R_i·L − 1``
    (:func:`privacy.sampling.draw_slots` with the site's public seed); Reptile: the class tasks drawn
    from each sampled round's public generator, ``inner_steps`` steps each. FedAvg reads every
    record in every step: every step counts. A site that trains in fewer rounds takes a prefix of
    its planned steps (episodic) or a subset of its planned rounds (Reptile), so the count bounds
    its ledger. Returns the maximum over sites of ``max_c N_c`` (at least 1).

    Args:
        config: The configuration (record mode).
        shape: The run's shape when the caller holds it; ``None`` finds it from the configuration
            (:func:`secfed.builders.run_shape`), only when the class lists are needed.

    Returns:
        The step count.
    """
    from secfed.config import config_hash

    key = (config_hash(config), str(config.base_dir))
    cached = _CLASS_STEPS_CACHE.get(key)
    if cached is not None:
        return cached
    every = record_rounds(config=config) * record_steps_per_round(config=config)
    lr = config.learner
    if lr.name not in ("protonet", "maml", "fomaml", "reptile") or config.task.source != "episodic":
        _CLASS_STEPS_CACHE[key] = every
        return every
    from privacy.sampling import draw_slots
    from secfed.data.partition import site_class_lists
    from secfed.dp.engines import ClassStepCounts, draw_class_tasks
    from secfed.seeding import derive_seed

    part = config.partition
    seed = config.experiment.seed
    lists = site_class_lists(
        scheme=part.scheme,
        num_classes=(shape or run_shape(config=config)).train_classes,
        num_sites=part.num_sites,
        seed=seed,
    )
    worst = 0
    for sid, rounds in enumerate(planned_participation(config=config)):
        classes = [int(c) for c in lists[sid]]
        if len(classes) < config.task.n_way:
            continue  # such a site is refused by its privacy hook: it never trains
        counts = ClassStepCounts(classes=tuple(classes))
        if lr.name == "reptile":
            for rnd in range(1, config.experiment.rounds + 1):
                if sid not in sampled_sites(config=config, round_idx=rnd):
                    continue
                rng = np.random.default_rng(derive_seed(seed, "tasks", rnd, sid))
                tasks = draw_class_tasks(
                    classes=classes, n_way=config.task.n_way, count=lr.local_steps * lr.meta_batch, rng=rng
                )
                counts.record([t.classes for t in tasks for _ in range(lr.inner_steps)])
        else:
            public_seed = derive_seed(seed, "dp-episode-slots", sid)
            counts.record(
                np.asarray(
                    draw_slots(
                        classes=classes,
                        num_slots=config.privacy.episodes_per_step,
                        n_way=config.task.n_way,
                        public_seed=public_seed,
                        step=k,
                    )
                ).ravel()
                for k in range(rounds * lr.local_steps)
            )
        worst = max(worst, counts.worst)
    result = max(1, min(worst, every))
    _CLASS_STEPS_CACHE[key] = result
    return result


def record_planned_noise_multiplier(*, config: ExperimentConfig) -> float:
    """The noise multiplier record-level planning accounts each step with.

    ``privacy.noise_multiplier``; with noise sharing ``z_eff`` at
    :func:`secfed.dp.sharing.planning_survivors` (``m`` when every round surely has ``m``
    survivors, else the worst case ``t_floor``).

    Args:
        config: The configuration.

    Returns:
        The multiplier.
    """
    if noise_sharing_enabled(config=config):
        return effective_noise_multiplier(config=config, survivors=planning_survivors(config=config))
    return float(config.privacy.noise_multiplier)


def _replace_noise(config: ExperimentConfig, noise_multiplier: float) -> ExperimentConfig:
    return config.replace(
        privacy=dataclasses.replace(config.privacy, noise_multiplier=float(noise_multiplier))
    )


def calibrated_noise_multiplier(*, config: ExperimentConfig, shape: RunShape | None = None) -> float:
    """The smallest noise multiplier meeting ``privacy.target_epsilon`` over the planned run.

    * ``record``: Poisson-subsampled Gaussian, ``q = privacy.sample_rate``, over the class-aware
      steps of the most exposed record (:func:`record_class_aware_steps`; at most
      ``record_rounds * record_steps_per_round``, the rounds of the site sampled most often). With
      noise sharing the counted noise is ``z·√((s − c)/(m − c))`` at the planning survivors
      (:func:`secfed.dp.sharing.planning_survivors`), so the returned ``z`` is the calibrated
      counted multiplier divided by that factor.
    * ``client``: Gaussian rounds without client-sampling amplification (``q = 1``; the sample is
      public), one per round of the site sampled most often (:func:`client_rounds`).
    * ``distributed``: :func:`privacy.distributed.calibrate_distributed_dp` with the expected number
      of participants all surviving, over :func:`client_rounds` rounds without amplification;
      returns ``z`` with the sum's noise std ``z·C``.

    Args:
        config: The configuration (``privacy.target_epsilon > 0``, mode not ``none``).
        shape: The run's shape (:class:`secfed.builders.RunShape`) when the caller holds it;
            ``None`` finds it from the configuration (:func:`secfed.builders.run_shape`) when needed.

    Returns:
        z, with ε(z) <= target at ``privacy.delta`` for the planned run.

    Raises:
        ConfigError: If no target is set, the mode is ``none`` or the target cannot be reached.
    """
    p = config.privacy
    if p.mode == "none" or not p.target_epsilon > 0:
        raise ConfigError("calibration needs privacy.mode != 'none' and privacy.target_epsilon > 0")
    rounds = client_rounds(config=config)
    try:
        if p.mode == "record":
            z_counted = calibrate_noise(
                target_epsilon=p.target_epsilon,
                delta=p.delta,
                sample_rate=p.sample_rate,
                steps=record_class_aware_steps(config=config, shape=shape),
                accountant=p.accountant,
            )
            if noise_sharing_enabled(config=config):
                factor = record_planned_noise_multiplier(config=_replace_noise(config, 1.0))
                return z_counted / factor
            return z_counted
        if p.mode == "client":
            return calibrate_noise(
                target_epsilon=p.target_epsilon,
                delta=p.delta,
                sample_rate=1.0,
                steps=rounds,
                accountant=p.accountant,
            )
        n_exp = expected_participants(config=config)
        planned = calibrate_distributed_dp(
            mechanism=p.mechanism,
            target_epsilon=p.target_epsilon,
            delta=p.delta,
            rounds=rounds,
            sample_rate=1.0,
            dim=model_dim(config=config, shape=shape),
            clip_norm=p.max_grad_norm,
            expected_clients=n_exp,
            bits=p.bits,
            max_clients=max_participants(config=config),
        )
        return planned.local_stddev * math.sqrt(n_exp) / p.max_grad_norm
    except PrivacyError as exc:
        raise ConfigError(f"privacy.target_epsilon = {p.target_epsilon!r} cannot be met: {exc}") from exc


def calibrated_config(*, config: ExperimentConfig, shape: RunShape | None = None) -> ExperimentConfig:
    """The configuration with ``privacy.noise_multiplier`` calibrated for ``privacy.target_epsilon``.

    Returns ``config`` unchanged when privacy is off or no target is set. Deterministic and
    idempotent (the target, not the current multiplier, decides), so a resumed run recomputes the
    same value. Call it before the configuration is written to the run directory.

    Args:
        config: The configuration.

    Returns:
        The (re-validated) configuration to run.

    Raises:
        ConfigError: If the target cannot be reached.
    """
    if not isinstance(config, ExperimentConfig):
        raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
    if config.privacy.mode == "none" or not config.privacy.target_epsilon > 0:
        return config
    return _replace_noise(config, calibrated_noise_multiplier(config=config, shape=shape))


def planned_epsilon(
    *, config: ExperimentConfig, accountant: str | None = None, shape: RunShape | None = None
) -> dict[str, Any]:
    """ε of the planned run, at the record level and at the client level.

    Record level: the most exposed record (class-aware steps, :func:`record_class_aware_steps`, of
    the site sampled in the most rounds, at ``privacy.sample_rate``; ``record_steps_all`` is every
    step of that site), accounted with :func:`record_planned_noise_multiplier` (with noise sharing:
    the counted ``z_eff`` at the planning survivors, and ``record_epsilon_site_ledger`` is what a
    site's own worst-case ledger reaches, at ``t_floor`` survivors). Client level: DP-FedAvg rounds
    per participation, without client-sampling amplification (the sample is public): the
    :func:`client_rounds` rounds of the site sampled most often, at ``q = 1``. In ``distributed``
    mode also the distributed mechanism's ε over the same rounds with the expected participants
    surviving. The noise multiplier is the configured one (calibrate first with
    :func:`calibrated_config`).

    Args:
        config: The configuration.
        accountant: ``"rdp"``, ``"prv"`` or ``"pld"``; default ``privacy.accountant``.
        shape: The run's shape (:class:`secfed.builders.RunShape`) when the caller holds it;
            ``None`` finds it from the configuration (:func:`secfed.builders.run_shape`) when needed.

    Returns:
        A JSON-able dict: ``rounds`` (``experiment.rounds``), ``record_epsilon``, ``record_rounds``,
        ``record_steps``, ``record_sample_rate``, ``client_epsilon``, ``client_rounds`` (the
        participations composed), ``client_sample_rate`` (the public sampling rate, a fact, not
        used for amplification), ``client_sampling`` (how it is accounted), ``noise_multiplier``,
        ``delta``, ``accountant``, ``mode`` and, in distributed mode, ``distributed_epsilon``.

    Raises:
        ConfigError: On invalid parameters.
    """
    p = config.privacy
    acc = accountant or p.accountant
    site_rounds = record_rounds(config=config)
    steps_all = site_rounds * record_steps_per_round(config=config)
    steps = record_class_aware_steps(config=config, shape=shape) if p.mode == "record" else steps_all
    z_record = record_planned_noise_multiplier(config=config) if p.mode == "record" else p.noise_multiplier
    q_client = client_sample_rate(config=config)
    participations = client_rounds(config=config)
    try:
        out: dict[str, Any] = {
            "mode": p.mode,
            "rounds": config.experiment.rounds,
            "noise_multiplier": float(p.noise_multiplier),
            "delta": float(p.delta),
            "accountant": acc,
            "record_rounds": site_rounds,
            "record_steps": steps,
            "record_steps_all": steps_all,
            "record_sample_rate": float(p.sample_rate),
            "record_noise_multiplier": float(z_record),
            "record_epsilon": epsilon_for(
                noise_multiplier=z_record,
                sample_rate=p.sample_rate,
                steps=steps,
                delta=p.delta,
                accountant=acc,
            ),
            "client_rounds": participations,
            "client_sample_rate": q_client,
            "client_sampling": CLIENT_ACCOUNTING,
            "client_epsilon": epsilon_for(
                noise_multiplier=p.noise_multiplier,
                sample_rate=1.0,
                steps=participations,
                delta=p.delta,
                accountant=acc,
            ),
        }
        if noise_sharing_enabled(config=config):
            z_site = site_noise_multiplier(config=config)
            out["noise_sharing"] = ledger_params(config=config, survivors=planning_survivors(config=config))
            out["record_planning_survivors"] = planning_survivors(config=config)
            out["record_epsilon_site_ledger"] = epsilon_for(
                noise_multiplier=z_site, sample_rate=p.sample_rate, steps=steps, delta=p.delta, accountant=acc
            )
        if p.mode == "distributed":
            n_exp = expected_participants(config=config)
            event = distributed_dp_config(config=config, dim=model_dim(config=config, shape=shape)).event(
                num_survivors=n_exp, sample_rate=1.0
            )
            out["distributed_epsilon"] = distributed_epsilon_for(
                mechanism=event.mechanism,
                local_stddev=event.local_stddev,
                num_clients=n_exp,
                l2_sensitivity=event.l2_sensitivity,
                l1_sensitivity=event.l1_sensitivity,
                dim=event.dim,
                sample_rate=1.0,
                rounds=participations,
                delta=p.delta,
            )
    except PrivacyError as exc:
        raise ConfigError(f"cannot compute the planned epsilon: {exc}") from exc
    return out


# --------------------------------------------------------------------------------------------------
# Site reports
# --------------------------------------------------------------------------------------------------
def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MessageError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _check_report(*, sid: int, report: Any, mode: str) -> dict[str, Any]:
    """Validate a site's public round report (``meta["privacy"]``)."""
    where = f"site {sid}: privacy report"
    if not isinstance(report, Mapping):
        raise MessageError(f"{where} is missing or not an object (got {type(report).__name__})")
    missing = [k for k in _REPORT_KEYS if k not in report]
    if missing:
        raise MessageError(f"{where} lacks {missing}")
    if report["mode"] != mode:
        raise MessageError(f"{where} is for privacy.mode {report['mode']!r}, the server runs {mode!r}")
    expected_unit, mechanisms = (
        ("record", _RECORD_MECHANISMS) if mode == "record" else ("client", (_CLIENT_CLIP,))
    )
    if report["unit"] != expected_unit or report["mechanism"] not in mechanisms:
        raise MessageError(
            f"{where}: unit {report['unit']!r} / mechanism {report['mechanism']!r} do not fit mode {mode!r} "
            f"(expected unit {expected_unit!r}, mechanism in {list(mechanisms)})"
        )
    z = _number(report["noise_multiplier"], f"{where}: noise_multiplier")
    q = _number(report["sample_rate"], f"{where}: sample_rate")
    steps = report["steps"]
    if z < 0 or not 0 <= q <= 1:
        raise MessageError(f"{where}: noise_multiplier {z} must be >= 0 and sample_rate {q} in [0, 1]")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise MessageError(f"{where}: steps must be an integer >= 0, got {steps!r}")
    try:
        adjacency = Adjacency.parse(report["adjacency"])
    except PrivacyError as exc:
        raise MessageError(f"{where}: {exc}") from exc
    if adjacency is not (Adjacency.RECORD if mode == "record" else Adjacency.CLIENT):
        raise MessageError(f"{where}: adjacency {adjacency.value!r} does not fit mode {mode!r}")
    exhausted = report.get("budget_exhausted", False)
    if not isinstance(exhausted, bool):
        raise MessageError(f"{where}: budget_exhausted must be a boolean, got {exhausted!r}")
    return {
        "mechanism": str(report["mechanism"]),
        "adjacency": adjacency.value,
        "noise_multiplier": z,
        "sample_rate": q,
        "steps": int(steps),
        "budget_exhausted": exhausted,
    }


# --------------------------------------------------------------------------------------------------
# The server's privacy object
# --------------------------------------------------------------------------------------------------
class _Participation:
    """Client-level participations so far: a count per site and, in distributed mode, its RDP curve."""

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

    Raises:
        ConfigError: Privacy off, or non-uniform aggregation weights.
    """

    def __init__(
        self,
        *,
        config: ExperimentConfig,
        run_dir: str | Path,
        key_dir: str | Path | None = None,
        shape: RunShape | None = None,
    ) -> None:
        if not isinstance(config, ExperimentConfig):
            raise ConfigError(f"config must be an ExperimentConfig, got {type(config).__name__}")
        p = config.privacy
        if p.mode not in ("record", "client", "distributed"):
            raise ConfigError(f"privacy.mode = {p.mode!r}: ServerPrivacy needs record, client or distributed")
        if config.federation.weighting != "uniform":
            raise ConfigError(
                f"federation.weighting = {config.federation.weighting!r} is invalid under DP: weights "
                "must be 'uniform' (record-count weights depend on private data and scale a site's "
                "contribution beyond the sensitivity the noise is calibrated for)"
            )
        self._cfg = config
        self._shape = shape
        self._mode = p.mode
        self._run_dir = Path(run_dir)
        self._key_dir = None if key_dir is None else Path(key_dir)
        self._delta = float(p.delta)
        self._z = float(p.noise_multiplier)
        self._clip = float(p.max_grad_norm)
        self._budget_value = float(p.epsilon_budget) if p.epsilon_budget > 0 else None
        self._budget = PrivacyBudget(
            delta=self._delta,
            site_epsilon=self._budget_value if self._mode == "record" else None,
            global_epsilon=self._budget_value if self._mode != "record" else None,
        )
        self._q_client = client_sample_rate(config=config)
        self._sampling_note = CLIENT_ACCOUNTING
        self._participation_cache: _Participation | None = None
        self._candidate_events: list[DistributedEvent] | None = None
        self._noise_source = noise_source() if self._mode == "client" else None
        self._ledger: PrivacyLedger | None = None
        self._site_ids: list[int] = []
        self._site_info: dict[int, Mapping[str, Any]] = {}
        self._site_acc: dict[str, Accountant] = {}
        self._site_last: dict[str, MechanismRecord] = {}
        self._site_plan: dict[str, PlannedSteps] = {}
        self._exhausted: set[str] = set()
        self._global: Accountant | None = None
        self._global_last: MechanismRecord | None = None
        self._excluded: frozenset[int] = frozenset()
        self._noised_rounds: set[int] = set()
        self._dist: DistributedDPConfig | None = None
        self._projections: dict[str, tuple[Accountant, PlannedSteps, float, str | None]] = {}
        self._sharing = noise_sharing_enabled(config=config)
        if p.target_epsilon > 0 and self._mode != "distributed":
            plan = planned_epsilon(config=config, shape=shape)
            planned = plan["record_epsilon"] if self._mode == "record" else plan["client_epsilon"]
            if planned > p.target_epsilon * (1 + 1e-6):
                log.warning(
                    "privacy.target_epsilon = %g but noise_multiplier %.6g plans epsilon %.4g; call "
                    "secfed.dp.calibrated_config() before running (the ledger reports the true epsilon)",
                    p.target_epsilon,
                    self._z,
                    planned,
                )

    # ---------------------------------------------------------------- properties
    @property
    def ledger_path(self) -> Path:
        """The ledger file."""
        return self._run_dir / LEDGER_FILE

    @property
    def mode(self) -> str:
        """``record``, ``client`` or ``distributed``."""
        return self._mode

    @property
    def privacy_unit(self) -> str:
        """``record`` or ``client``."""
        return "record" if self._mode == "record" else "client"

    @property
    def adjacency(self) -> str:
        """The adjacency relation of the claimed guarantee."""
        return {"record": Adjacency.RECORD, "client": Adjacency.CLIENT}.get(
            self._mode, Adjacency.DISTRIBUTED
        ).value

    @property
    def mechanism(self) -> str:
        """The mechanism of the claimed guarantee."""
        if self._mode == "record":
            return record_mechanism(config=self._cfg)
        return MECHANISM_DP_FEDAVG if self._mode == "client" else self._cfg.privacy.mechanism

    @property
    def accountant_name(self) -> str:
        """``rdp``/``prv`` (Gaussian mechanisms) or ``distributed-rdp``."""
        return DistributedDPAccountant.kind if self._mode == "distributed" else self._cfg.privacy.accountant

    def distributed_config(self) -> DistributedDPConfig:
        """The distributed-DP encoding of the run (``distributed`` mode; built once, needs the model size).

        Raises:
            ConfigError: In another mode, or when the encoding cannot be planned.
        """
        if self._dist is None:
            self._dist = distributed_dp_config(
                config=self._cfg, dim=model_dim(config=self._cfg, shape=self._shape)
            )
        return self._dist

    def worst_case_survivors(self) -> int:
        """Fewest clients whose noise can reach a decoded SecAgg sum in one round.

        With fixed-size sampling and no simulated dropouts or stragglers every sampled site survives
        (``m``). Otherwise 2: SecAgg needs at least ``t >= 2`` survivors to unmask
        (:func:`protocols.params.resolve_params`), and a round with fewer releases nothing.
        """
        f = self._cfg.federation
        m = max_participants(config=self._cfg)
        if f.sampling == "fixed" and f.dropout_rate == 0 and f.straggler_rate == 0:
            return m
        return min(2, m)

    # ---------------------------------------------------------------- accountants
    def _new_site_accountant(self) -> Accountant:
        if self._mode == "distributed":
            return DistributedDPAccountant()
        return create_accountant(kind=self._cfg.privacy.accountant)

    def _new_global_accountant(self) -> Accountant | None:
        if self._mode == "record":
            return None
        if self._mode == "distributed":
            return DistributedDPAccountant()
        return create_accountant(kind=self._cfg.privacy.accountant)

    def _eps(self, acc: Accountant | None) -> float:
        return 0.0 if acc is None else float(acc.get_epsilon(delta=self._delta))

    def _require_ledger(self) -> PrivacyLedger:
        if self._ledger is None:
            raise PrivacyStateError(
                "call ServerPrivacy.resume_to(completed_round=...) before the first round"
            )
        return self._ledger

    def _add_site(self, sid: int) -> None:
        n = self._cfg.partition.num_sites
        if isinstance(sid, bool) or not isinstance(sid, (int, np.integer)) or not 0 <= int(sid) < n:
            raise MessageError(f"site id {sid!r} is outside [0, {n})")
        if int(sid) not in self._site_ids:
            self._site_ids = sorted([*self._site_ids, int(sid)])
        self._site_acc.setdefault(str(int(sid)), self._new_site_accountant())

    # ---------------------------------------------------------------- lifecycle
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
        self._run_dir.mkdir(parents=True, exist_ok=True)
        path = self.ledger_path
        try:
            ledger = PrivacyLedger.open(
                path=path,
                budget=self._budget,
                accountant=self._cfg.privacy.accountant,
                recover_torn_tail=True,  # a torn line was never durable: its release never happened
                key_dir=self._key_dir,
                round_order="consecutive",
            )
        except (LedgerCorruptedError, LedgerUnverifiableError, LedgerKeyError) as exc:
            raise IntegrityError(f"{path}: privacy ledger integrity check failed: {exc}") from exc
        except LedgerError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        except PrivacyError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if ledger.last_round < completed_round:
            raise IntegrityError(
                f"{path} ends at round {ledger.last_round} but the checkpoint is at round "
                f"{completed_round}: the privacy cost of the released rounds cannot be reconstructed"
            )
        try:
            if ledger.last_round > completed_round or ledger.pending is not None:
                log.warning(
                    "privacy: resuming from round %d; the ledger's rounds up to %d stay counted (%s)",
                    completed_round,
                    ledger.last_round,
                    "a begun round never committed" if ledger.pending is not None else "no checkpoint",
                )
                ledger.mark_resume(round=completed_round)
            sites, glob = ledger.rebuild_accountants(verify=True)
        except LedgerCorruptedError as exc:
            raise IntegrityError(f"{path}: privacy ledger integrity check failed: {exc}") from exc
        except (LedgerError, OSError) as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        self._ledger = ledger
        self._site_acc = dict(sites)
        self._global = glob if glob is not None else self._new_global_accountant()
        self._site_last, self._site_plan, self._exhausted = {}, {}, set()
        self._global_last = None
        self._projections = {}
        for entry in ledger.releases():
            for name, rec in entry.sites.items():
                self._site_last[name] = rec
                if rec.steps > 0:
                    self._site_plan[name] = PlannedSteps(
                        noise_multiplier=rec.noise_multiplier, sample_rate=rec.sample_rate, steps=rec.steps
                    )
                if rec.params.get("budget_exhausted") is True:
                    self._exhausted.add(name)
            if entry.global_record is not None:
                self._global_last = entry.global_record
        for name in list(self._site_acc):
            if name.isdigit():
                self._add_site(int(name))
        self._noised_rounds = set()

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
            if mode != self._mode:
                raise MessageError(f"site {sid} runs privacy mode {mode!r}, the server {self._mode!r}")
            self._site_info[int(sid)] = dict(desc)

    # ---------------------------------------------------------------- budgets
    def _site_planned_steps(self, name: str) -> PlannedSteps:
        plan = self._site_plan.get(name)
        if plan is not None:
            return plan
        p = self._cfg.privacy
        desc = self._site_info.get(int(name), {})
        steps = desc.get("steps_per_round", record_steps_per_round(config=self._cfg))
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            steps = record_steps_per_round(config=self._cfg)
        z = site_noise_multiplier(config=self._cfg) if self._sharing else p.noise_multiplier
        return PlannedSteps(noise_multiplier=z, sample_rate=p.sample_rate, steps=steps)

    def _global_plan(self, *, round_idx: int) -> PlannedSteps | DistributedEvent | None:
        """The next round's worst-case step of the client-level chain, or ``None`` if it cannot rise.

        The round's sample is public (:func:`secfed.federation.server.sampled_sites`, before budget
        exclusions; dropouts only remove sites), so the chain can rise only if a sampled site's
        curve after one more participation would exceed it (client mode: its count would exceed
        the largest count). In distributed mode the step is the candidate event (any survivor count
        from :meth:`worst_case_survivors` to :func:`~secfed.dp.distributed.max_participants`) that
        projects the largest ε.
        """
        sample = self._may_take_part(round_idx=round_idx)
        if not sample:
            return None
        part = self._participation()
        if self._mode == "client":
            top = max(part.counts.values(), default=0)
            if any(part.counts.get(s, 0) + 1 > top for s in sample):
                return PlannedSteps(noise_multiplier=self._z, sample_rate=1.0, steps=1)
            return None
        return self._planned_event(part, sample)

    def _may_take_part(self, *, round_idx: int) -> list[int]:
        """The round's public sample less the sites excluded by the budget (a superset of its clients)."""
        return sorted(
            s for s in sampled_sites(config=self._cfg, round_idx=round_idx) if s not in self._excluded
        )

    def _planned_event(self, part: _Participation, sites: list[int]) -> DistributedEvent | None:
        """Distributed mode: the candidate event projecting the largest ε if the chain can rise, else None."""
        candidates = self._events()
        if not sites or not any(self._rises(part, sites, event) for event in candidates):
            return None
        assert isinstance(self._global, DistributedDPAccountant)
        glob = self._global
        return max(candidates, key=lambda e: glob.projected_epsilon(delta=self._delta, event=e))

    def _events(self) -> list[DistributedEvent]:
        """Client-level events of a round with any feasible number of survivors (``q = 1``)."""
        if self._candidate_events is None:
            dcfg = self.distributed_config()
            lo, hi = self.worst_case_survivors(), max_participants(config=self._cfg)
            self._candidate_events = [dcfg.event(num_survivors=n, sample_rate=1.0) for n in range(lo, hi + 1)]
        return self._candidate_events

    # ---------------------------------------------------------------- client-level participation
    def _participation(self) -> _Participation:
        """Each site's client-level participations, rebuilt from the ledger's counted releases.

        Every counted release's global record lists the sites whose update it contained
        (``params["participants"]``; for lines written before that field, the sites whose record
        bound took a step); a ``begin`` that was never committed lists every site that could take
        part, with the worst-case survivor count. The round in flight (its ``begin`` pending) is not
        counted. Rebuilt whenever the ledger changed (a new line, a resume), so it never drifts from
        what is on disk.

        Raises:
            CheckpointError: The ledger's client-level lines claim client-sampling amplification
                (written by an earlier version): their ε understates the loss of a public sample.
        """
        ledger = self._require_ledger()
        releases_fn = getattr(ledger, "releases", None)
        entries = tuple(releases_fn()) if callable(releases_fn) else tuple(ledger.entries)
        pending = getattr(ledger, "pending", None)
        # The round in flight (begun, not committed) is the one being accounted: not yet counted here.
        entries = tuple(e for e in entries if e is not pending)
        key = (id(ledger), len(entries), entries[-1].hash if entries else "")
        cached = self._participation_cache
        if cached is not None and cached.key == key:
            return cached
        part = _Participation(key=key)
        for entry in entries:
            glob = entry.global_record
            if glob is None:
                continue
            if glob.sample_rate < 1.0:
                raise CheckpointError(
                    f"{self.ledger_path}: round {entry.round} was accounted with client-sampling "
                    f"amplification (q = {glob.sample_rate:g}), which a public sample does not give; its "
                    "epsilon understates the loss. Start a new run directory."
                )
            listed = glob.params.get("participants")
            if isinstance(listed, list):
                included = sorted({int(s) for s in listed})
            else:
                included = sorted(int(n) for n, rec in entry.sites.items() if n.isdigit() and rec.steps > 0)
            survivors = glob.params.get("survivors", len(included))
            part.add(included=included, event=self._round_event(int(survivors)) if included else None)
        self._participation_cache = part
        return part

    def _round_event(self, survivors: int) -> DistributedEvent | None:
        """The client-level event of a decoded round with ``survivors`` (distributed mode only)."""
        if self._mode != "distributed" or survivors < 1:
            return None
        return self.distributed_config().event(num_survivors=survivors, sample_rate=1.0)

    def _rises(self, part: _Participation, sites: list[int], event: DistributedEvent) -> bool:
        """Whether one more ``event`` for any of ``sites`` lifts its RDP curve above the chain's."""
        assert isinstance(self._global, DistributedDPAccountant)
        chain = self._global.get_rdp()
        for s in sites:
            acc = part.curves.get(s)
            after = acc.copy() if acc is not None else DistributedDPAccountant()
            after.step(event=event)
            if np.any(after.get_rdp() > chain + 1e-12 * np.maximum(1.0, np.abs(chain))):
                return True
        return False

    def _site_projections(
        self, ledger: PrivacyLedger, names: list[str]
    ) -> dict[str, tuple[float, str | None]]:
        """Projected ε of every site after one more planned round, with the budget's reason if over.

        A projection is reused while the site's accountant object and plan are unchanged (the
        accountant is replaced, never mutated, when the site trains), which matters for PRV.
        """

        def fresh(name: str, plan: PlannedSteps) -> bool:
            cached = self._projections.get(name)
            return cached is not None and cached[0] is self._site_acc[name] and cached[1] == plan

        plans = {n: self._site_planned_steps(n) for n in names}
        stale = {n: plan for n, plan in plans.items() if not fresh(n, plan)}
        if stale:
            check = ledger.check_budget(site_accountants=self._site_acc, site_plans=stale)
            for n, plan in stale.items():
                reason = next((r for r in check.reasons if r.startswith(f"site {n!r}:")), None)
                self._projections[n] = (self._site_acc[n], plan, check.projected_site_epsilon[n], reason)
        return {n: (self._projections[n][2], self._projections[n][3]) for n in names}

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
        ledger = self._require_ledger()
        pending = ledger.pending
        if pending is not None:
            if pending.round == round_idx:
                return self._excluded, None
            raise PrivacyStateError(
                f"round {pending.round} was begun and never committed; resume the run (resume_to) first"
            )
        if round_idx != ledger.last_round + 1:
            raise PrivacyStateError(
                f"round {round_idx} does not follow the ledger's round {ledger.last_round}"
            )
        names = [str(s) for s in self._site_ids]
        excluded = {int(n) for n in self._exhausted if n.isdigit()}
        reasons: list[str] = []
        b = self._budget_value
        if b is not None and self._mode == "record":
            for n, (eps, reason) in self._site_projections(ledger, names).items():
                if not eps <= b:
                    excluded.add(int(n))
                    reasons.append(reason or f"site {n!r}: epsilon would reach {eps:.4g}")
        self._excluded = frozenset(excluded)
        if self._excluded:
            log.info("privacy: sites %s excluded from round %d (budget)", sorted(self._excluded), round_idx)
        if names and len(self._excluded) >= len(names):
            detail = "; ".join(reasons) if reasons else "every site reported its budget exhausted"
            return self._excluded, (
                f"privacy budget exhausted: no site may take part any more without exceeding "
                f"epsilon_budget = {b} at delta = {self._delta:g} ({detail})"
            )
        plan = self._global_plan(round_idx=round_idx) if b is not None and self._mode != "record" else None
        if plan is not None:
            check = ledger.check_budget(
                site_accountants={},
                site_plans={},
                global_accountant=self._global,
                global_plan=plan,
            )
            if not check.allowed:
                return self._excluded, "privacy budget exhausted: " + "; ".join(check.reasons)
        self._begin(ledger=ledger, round_idx=round_idx)
        return self._excluded, None

    def _begin(self, *, ledger: PrivacyLedger, round_idx: int) -> None:
        """Write-ahead: the round's planned (largest) cost, durable before anything can be released."""
        may_train = [s for s in self._site_ids if s not in self._excluded]
        planned: dict[str, dict[str, Any]] = {}
        if self._mode == "record":
            for sid in may_train:
                plan = self._site_planned_steps(str(sid))
                planned[str(sid)] = {
                    "mechanism": record_mechanism(config=self._cfg),
                    "adjacency": Adjacency.RECORD.value,
                    "noise_multiplier": plan.noise_multiplier,
                    "sample_rate": plan.sample_rate,
                    "steps": plan.steps,
                    "budget_exhausted": False,
                }
        survivors = len(may_train)
        if self._mode == "distributed":
            survivors = min(survivors, self.worst_case_survivors())
        records, _, glob_rec, _ = self._round_records(
            reports=planned,
            included={str(s) for s in may_train},
            survivors=0 if self._sharing else survivors,  # noise sharing: the worst case t_floor
            global_outcome=RoundOutcome(
                round=round_idx,
                train_loss=None,
                clients=may_train[:survivors],
                dropped=[],
                stragglers=[],
                aggregation={},
                site_reports={},
            ),
        )
        try:
            ledger.begin(round=round_idx, sites=records, global_record=glob_rec)
        except (LedgerError, OSError) as exc:
            raise CheckpointError(f"{self.ledger_path}: cannot begin round {round_idx}: {exc}") from exc

    def _round_records(
        self,
        *,
        reports: Mapping[str, dict[str, Any]],
        included: set[str],
        survivors: int,
        global_outcome: RoundOutcome,
    ) -> tuple[dict[str, MechanismRecord], dict[str, Accountant], MechanismRecord | None, Accountant | None]:
        """Every site's and the global record after a round (accountants stepped on copies)."""
        records: dict[str, MechanismRecord] = {}
        new_acc: dict[str, Accountant] = {}
        for name in (str(s) for s in self._site_ids):
            acc = self._site_acc.setdefault(name, self._new_site_accountant())
            if self._mode == "record":
                records[name], new_acc[name] = self._record_site(
                    name=name, report=reports.get(name), acc=acc, survivors=survivors
                )
            else:
                records[name], new_acc[name] = self._bound_site(
                    name=name, included=name in included, survivors=survivors, acc=acc
                )
        glob_rec, glob_acc = self._global_round(global_outcome)
        return records, new_acc, glob_rec, glob_acc

    # ---------------------------------------------------------------- noise
    def central_noise(self, total: np.ndarray, n_survivors: int, round_idx: int) -> np.ndarray:
        """Add DP-FedAvg's Gaussian noise ``N(0, (zC)^2 I)`` to the aggregate SUM (``client`` mode).

        Sensitivity of the sum is C: every site clips its whole update to C and weights are
        uniform (McMahan et al. 2018). The noise comes from :func:`privacy.noise.add_gaussian_noise`
        (AES-256-CTR keystream under a fresh 256-bit key, the sum snapped to a lattice far below
        the noise scale, exact discrete Gaussian noise). In the other modes
        the aggregate is returned unchanged (record mode: the sites' updates are already DP;
        distributed mode: the sites' noise shares are in the SecAgg sum).

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
        if self._mode != "client":
            return total
        arr = np.asarray(total)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
            raise InvalidInputError(f"total must be a finite 1-D float array, got {arr.dtype} {arr.shape}")
        if isinstance(n_survivors, bool) or not isinstance(n_survivors, (int, np.integer)) or n_survivors < 0:
            raise InvalidInputError(f"n_survivors must be an integer >= 0, got {n_survivors!r}")
        assert self._noise_source is not None
        std = self._z * self._clip
        noisy = (
            add_gaussian_noise(values=arr, sigma=std, source=self._noise_source)
            if std > 0
            else arr.astype(np.float64)
        )
        self._noised_rounds.add(int(round_idx))
        return noisy

    # ---------------------------------------------------------------- accounting
    def _shared_noise_multiplier(self, survivors: int) -> tuple[float, dict[str, Any]]:
        """Noise sharing: ``z_eff`` of a round with ``survivors`` in the decoded sum, and the line's
        ``params["noise_sharing"]``; ``survivors = 0`` (not decoded, or a write-ahead ``begin``) is
        charged at the worst case ``t_floor``.

        Raises:
            PrivacyStateError: A decoded sum of ``1 <= s <= c`` survivors (no counted noise).
        """
        c = int(self._cfg.privacy.colluding_sites)
        if 1 <= survivors <= c:
            raise PrivacyStateError(
                f"the decoded sum holds {survivors} site(s) and colluding_sites = {c}: no counted noise, "
                "refusing to release the round (honest sites refuse to unmask below the threshold "
                f"t_floor = {threshold_floor(config=self._cfg)} > c)"
            )
        if survivors < 1:
            return site_noise_multiplier(config=self._cfg), ledger_params(config=self._cfg, survivors=None)
        z = effective_noise_multiplier(config=self._cfg, survivors=survivors)
        return z, ledger_params(config=self._cfg, survivors=survivors)

    def _record_site(
        self, *, name: str, report: dict[str, Any] | None, acc: Accountant, survivors: int = 0
    ) -> tuple[MechanismRecord, Accountant]:
        """Record mode: the site's column after this round (accountant stepped on a copy).

        With noise sharing every trained site's steps are accounted with ``z_eff`` of the round's
        ``survivors`` (:meth:`_shared_noise_multiplier`), whatever the site reported (its own ledger
        uses the worst case); a trained site whose update is not in the sum is charged too.
        """
        p = self._cfg.privacy
        if report is not None and self._sharing:
            z, shared = self._shared_noise_multiplier(survivors)
            report = {**report, "noise_multiplier": z, "noise_sharing": shared}
        if report is None:  # did not train: unchanged epsilon, no steps
            prev = self._site_last.get(name)
            rec = MechanismRecord(
                epsilon=self._eps(acc) if prev is None else prev.epsilon,
                mechanism=record_mechanism(config=self._cfg) if prev is None else prev.mechanism,
                noise_multiplier=p.noise_multiplier if prev is None else prev.noise_multiplier,
                sample_rate=p.sample_rate if prev is None else prev.sample_rate,
                steps=0,
                privacy_unit="record",
                adjacency=Adjacency.RECORD.value if prev is None else prev.adjacency,
                params=(
                    {"noise_sharing": ledger_params(config=self._cfg, survivors=None)}
                    if self._sharing
                    else {}
                ),
            )
            return rec, acc
        new = acc.copy()
        if report["steps"] > 0:
            assert isinstance(new, GaussianAccountant)
            new.step(
                noise_multiplier=report["noise_multiplier"],
                sample_rate=report["sample_rate"],
                num_steps=report["steps"],
            )
        rec = MechanismRecord(
            epsilon=self._eps(new),
            mechanism=report["mechanism"],
            noise_multiplier=report["noise_multiplier"],
            sample_rate=report["sample_rate"],
            steps=report["steps"],
            privacy_unit="record",
            adjacency=report["adjacency"],
            params={
                **({"budget_exhausted": True} if report["budget_exhausted"] else {}),
                **({"noise_sharing": report["noise_sharing"]} if "noise_sharing" in report else {}),
            },
        )
        return rec, new

    def _bound_site(
        self, *, name: str, included: bool, survivors: int, acc: Accountant
    ) -> tuple[MechanismRecord, Accountant]:
        """Client/distributed mode: the site's record-level bound from the aggregate's noise.

        One record moves the site's clipped update by at most 2C (both versions lie in the C-ball),
        so a round whose released aggregate holds the site's update is a Gaussian mechanism with
        noise multiplier z/2 (client mode) or a distributed round with sensitivities 2Δ₂, 2Δ₁
        (distributed mode), without sampling amplification.
        """
        params: dict[str, Any] = {"note": _SITE_BOUND_NOTE}
        if self._mode == "client":
            sigma = self._z / 2.0  # noise zC over record sensitivity 2C
            params.update(client_noise_multiplier=self._z, clip_norm=self._clip)
            new = acc
            if included:
                new = acc.copy()
                assert isinstance(new, GaussianAccountant)
                new.step(noise_multiplier=sigma, sample_rate=1.0, num_steps=1)
            mechanism, noise = MECHANISM_RECORD_BOUND, sigma
        else:
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
            mechanism, noise = dcfg.mechanism, self._z
        prev = self._site_last.get(name)
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

    def _global_round(self, outcome: RoundOutcome) -> tuple[MechanismRecord | None, Accountant | None]:
        """The client-level chain after this round, per participation (see the module docstring).

        Client mode: the chain is Gaussian rounds at ``q = 1``; it steps exactly when the largest
        number of releases containing one site's update grows, so it equals the composition over
        ``max_i |P_i|`` rounds. Distributed mode: the round's event (its actual survivors, ``q = 1``)
        is added when some included site's RDP curve would otherwise rise above the chain's, so the
        chain dominates every site's curve. Nothing is charged for a round without survivors (the
        release then holds no site's update). The participants are written to the record.
        """
        if self._mode == "record":
            return None, None
        assert self._global is not None
        part = self._participation()
        ledger = self._require_ledger()
        # Write-ahead ``begin`` (no round pending yet): charge the largest cost the round can have,
        # i.e. every site of the public sample that may take part, with the worst survivor count.
        planning = hasattr(ledger, "begin") and getattr(ledger, "pending", None) is None
        if planning:
            included = self._may_take_part(round_idx=outcome.round)
        else:
            included = sorted({int(s) for s in outcome.clients})
        new = self._global.copy()
        n = len(included)
        params: dict[str, Any] = {"participants": included, "client_sampling": self._sampling_note}
        if self._mode == "client":
            top = max(part.counts.values(), default=0)
            after = max([top, *(part.counts.get(s, 0) + 1 for s in included)])
            steps = after - top
            if steps:
                assert isinstance(new, GaussianAccountant)
                new.step(noise_multiplier=self._z, sample_rate=1.0, num_steps=steps)
            params.update(survivors=n, clip_norm=self._clip, max_participations=after)
            rec = MechanismRecord(
                epsilon=self._eps(new),
                mechanism=MECHANISM_DP_FEDAVG,
                noise_multiplier=self._z,
                sample_rate=1.0,
                steps=steps,
                privacy_unit="client",
                adjacency=Adjacency.CLIENT.value,
                params=params,
            )
            return rec, new
        dcfg = self.distributed_config()
        if planning:
            worst = self._planned_event(part, included)
            steps = 0 if worst is None else 1
            event = worst if worst is not None else self._events()[0]
        else:
            event = dcfg.event(num_survivors=max(1, n), sample_rate=1.0)
            steps = 1 if n > 0 and self._rises(part, included, event) else 0
        if steps:
            assert isinstance(new, DistributedDPAccountant)
            new.step(event=event)
        params.update(
            survivors=event.num_survivors if planning and n else n,
            event=event.to_dict(),
            expected_participants=expected_participants(config=self._cfg),
            gamma=dcfg.gamma,
            bits=dcfg.bits,
            max_participations=max(
                [0, *(part.counts.get(s, 0) + 1 for s in included), *part.counts.values()]
            ),
        )
        rec = MechanismRecord(
            epsilon=self._eps(new),
            mechanism=dcfg.mechanism,
            noise_multiplier=self._z,
            sample_rate=1.0,
            steps=steps,
            privacy_unit="client",
            adjacency=Adjacency.DISTRIBUTED.value,
            params=params,
        )
        return rec, new

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
        ledger = self._require_ledger()
        if not isinstance(outcome, RoundOutcome):
            raise PrivacyStateError(f"outcome must be a RoundOutcome, got {type(outcome).__name__}")
        pending = ledger.pending
        if pending is None or outcome.round != pending.round:
            raise PrivacyStateError(
                f"round {outcome.round} was not begun (call before_round first: the ledger's begin entry "
                f"must be durable before the round can release anything; pending: "
                f"{None if pending is None else pending.round})"
            )
        if self._mode == "client" and outcome.round not in self._noised_rounds:
            raise PrivacyStateError(
                f"round {outcome.round}: the aggregate of {len(outcome.clients)} sites was released without "
                "central noise (pass ServerPrivacy.central_noise to the server; it adds noise every round)"
            )
        reports: dict[str, dict[str, Any]] = {}
        for sid, meta in outcome.site_reports.items():
            self._add_site(sid)
            report = meta.get("privacy") if isinstance(meta, Mapping) else None
            reports[str(int(sid))] = _check_report(sid=int(sid), report=report, mode=self._mode)
        for sid in outcome.clients:
            self._add_site(sid)
        records, new_acc, glob_rec, glob_acc = self._round_records(
            reports=reports,
            included={str(int(s)) for s in outcome.clients},
            survivors=len(outcome.clients),
            global_outcome=outcome,
        )
        try:
            ledger.commit(sites=records, global_record=glob_rec)
        except (LedgerError, OSError) as exc:
            raise CheckpointError(f"{self.ledger_path}: cannot commit round {outcome.round}: {exc}") from exc
        # The line is durable: commit the new state.
        self._site_acc.update(new_acc)
        self._site_last.update(records)
        for name, rep in reports.items():
            if rep["steps"] > 0:
                self._site_plan[name] = PlannedSteps(
                    noise_multiplier=rep["noise_multiplier"],
                    sample_rate=rep["sample_rate"],
                    steps=rep["steps"],
                )
            if rep["budget_exhausted"]:
                self._exhausted.add(name)
        if glob_acc is not None:
            self._global, self._global_last = glob_acc, glob_rec
        metrics = self._epsilon_metrics()
        if self._excluded:
            metrics["privacy_excluded"] = sorted(self._excluded)
        return metrics

    # ---------------------------------------------------------------- reporting
    def _epsilon_metrics(self) -> dict[str, Any]:
        sites = {
            str(s): float(self._site_last[str(s)].epsilon)
            for s in self._site_ids
            if str(s) in self._site_last
        }
        if self._mode == "record":
            eps = max(sites.values(), default=0.0)
            unit = "record (maximum over sites)"
        else:
            eps = float(self._global_last.epsilon) if self._global_last is not None else 0.0
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
            ``max_grad_norm``, ``epsilon_budget``, ``privacy_rounds``, ``privacy_ledger`` and, in
            client/distributed mode, ``client_sampling`` and ``client_sample_rate``.
        """
        out = self._epsilon_metrics()
        out.update(
            {
                "privacy_unit": self.privacy_unit,
                "adjacency": self.adjacency,
                "accountant": self.accountant_name,
                "mode": self._mode,
                "mechanism": self.mechanism,
                "noise_multiplier": self._z,
                "max_grad_norm": self._clip,
                "epsilon_budget": self._budget_value,
                "privacy_rounds": self._ledger.last_round if self._ledger is not None else 0,
                "privacy_ledger": LEDGER_FILE,
                "privacy_ledger_integrity": self._ledger.integrity if self._ledger is not None else None,
            }
        )
        if self._sharing:
            shared = ledger_params(config=self._cfg, survivors=None)
            shared.pop("survivors")  # per round in the ledger; the site ledgers assume threshold_floor
            out["noise_sharing"] = shared
            out["trust_assumption"] = trust_assumption(config=self._cfg)
        if self._mode != "record":
            out["client_sampling"] = self._sampling_note
            out["client_sample_rate"] = self._q_client
            if self._ledger is not None:
                counts = self._participation().counts
                out["client_participations_max"] = max(counts.values(), default=0)
        return out
