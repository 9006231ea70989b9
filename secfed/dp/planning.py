"""Record- and client-level DP planning: pure functions of the configuration.

What the server plans before a run and checks every round against: how many DP steps a site takes
per round (:func:`record_steps_per_round`), in how many rounds the public schedule samples the most
exposed site (:func:`record_rounds`, :func:`client_rounds`), the steps of the most exposed record
(:func:`record_class_aware_steps`), the noise multiplier a step is accounted with
(:func:`record_planned_noise_multiplier`) and the ε of the planned run (:func:`planned_epsilon`).
Nothing here reads private data or writes anything; calibration builds on these
(:mod:`secfed.dp.calibration`).

Client sampling is public (drawn from ``experiment.seed``, logged, seen by the server), so the
client-level ε composes the participations of the site sampled most often, without amplification
(:data:`CLIENT_ACCOUNTING`; the reasoning is in :mod:`secfed.dp.server`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privacy.calibration import distributed_epsilon_for, epsilon_for
from privacy.errors import PrivacyError
from secfed.builders import RunShape, run_shape
from secfed.config import ExperimentConfig
from secfed.dp.distributed import distributed_dp_config, model_dim
from secfed.dp.params import (
    DPParams,
    client_sample_rate,
    given_or_built,
    record_mechanism,
    record_steps_per_round,
)
from secfed.dp.sharing import (
    effective_noise_multiplier,
    ledger_params,
    noise_sharing_enabled,
    planning_survivors,
    site_noise_multiplier,
)
from secfed.errors import ConfigError
from secfed.federation.server import planned_participation, sampled_sites
from secfed.learners import learner_class

__all__ = [
    "CLIENT_ACCOUNTING",
    "client_rounds",
    "planned_epsilon",
    "record_class_aware_steps",
    "record_mechanism",
    "record_planned_noise_multiplier",
    "record_rounds",
    "record_steps_per_round",
]

#: How the client-level ε is accounted (ledger lines, summary, :func:`planned_epsilon`).
CLIENT_ACCOUNTING = (
    "per participation: the sample is public (drawn from experiment.seed, logged in metrics.jsonl, "
    "seen by the server), so no client-sampling amplification is claimed; epsilon is the maximum "
    "over sites of the composition over the releases that contained each site's update"
)


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


_CLASS_STEPS_CACHE: dict[tuple[str, str], int] = {}


def record_class_aware_steps(*, config: ExperimentConfig, shape: RunShape | None = None) -> int:
    """Planned DP steps of the most exposed record: class-aware where the public plans allow.

    A site composes only the steps of its worst public class (:mod:`secfed.dp.engines`). The plans
    are public functions of the configuration, so the planner replays them for every site over the
    rounds the public schedule samples it in (:func:`secfed.federation.server.planned_participation`),
    as the learner's :attr:`~secfed.learners.base.Learner.dp_plan` says: ``"slots"`` (ProtoNet,
    MAML, FOMAML): the slot plans of the site's steps ``0 .. R_i·L − 1``
    (:func:`privacy.sampling.draw_slots` with the site's public seed); ``"tasks"`` (Reptile): the
    class tasks drawn from each sampled round's public generator, ``inner_steps`` steps each;
    ``"every_step"`` (e.g. FedAvg, which reads every record in every step): every step counts. A
    site that trains in fewer rounds takes a prefix of its planned steps (slots) or a subset of its
    planned rounds (tasks), so the count bounds its ledger. Returns the maximum over sites of
    ``max_c N_c`` (at least 1).

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
    plan = learner_class(lr.name).dp_plan
    if plan == "every_step" or config.task.source != "episodic":
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
        if plan == "tasks":
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


def record_planned_noise_multiplier(*, params: DPParams) -> float:
    """The noise multiplier record-level planning accounts each step with.

    ``noise_multiplier``; with noise sharing ``z_eff`` at
    :func:`secfed.dp.sharing.planning_survivors` (``m`` when every round surely has ``m``
    survivors, else the worst case ``t_floor``).

    Args:
        params: The run's privacy parameters.

    Returns:
        The multiplier.
    """
    if noise_sharing_enabled(params=params):
        return effective_noise_multiplier(params=params, survivors=planning_survivors(params=params))
    return float(params.noise_multiplier)


def planned_epsilon(
    *,
    config: ExperimentConfig,
    accountant: str | None = None,
    shape: RunShape | None = None,
    params: DPParams | None = None,
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
        params: :func:`secfed.dp.params.dp_params` of ``config`` when the caller holds it
            (``Experiment.run`` builds it once); ``None`` builds it here.

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
    params = given_or_built(config=config, params=params) if p.mode != "none" else None
    acc = accountant or p.accountant
    site_rounds = record_rounds(config=config)
    steps_all = site_rounds * record_steps_per_round(config=config)
    steps = record_class_aware_steps(config=config, shape=shape) if p.mode == "record" else steps_all
    z_record = (
        record_planned_noise_multiplier(params=params)
        if params is not None and p.mode == "record"
        else p.noise_multiplier
    )
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
        if params is not None and noise_sharing_enabled(params=params):
            z_site = site_noise_multiplier(params=params)
            out["noise_sharing"] = ledger_params(params=params, survivors=planning_survivors(params=params))
            out["record_planning_survivors"] = planning_survivors(params=params)
            out["record_epsilon_site_ledger"] = epsilon_for(
                noise_multiplier=z_site, sample_rate=p.sample_rate, steps=steps, delta=p.delta, accountant=acc
            )
        if params is not None and params.distributed is not None:
            n_exp = params.distributed.expected_participants
            event = distributed_dp_config(params=params, dim=model_dim(config=config, shape=shape)).event(
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
