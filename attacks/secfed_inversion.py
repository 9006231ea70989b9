"""Gradient inversion against a secfed run: what an honest-but-curious server reconstructs.

The server holds the run's final global model (``RUN_DIR/checkpoint``) and its public
configuration (``config.toml``). The simulation reconstructs a site with
:func:`secfed.components.build_site`, draws a private batch from that site's own records (kept
in a :class:`~attacks.inversion.GroundTruth`, used only for scoring), computes the message the
site would send under the run's settings (:mod:`attacks.secfed_observe`, with DP when the run uses
it) and hands the server only :class:`~attacks.inversion.InversionInputs`: the model, the message,
the public observation model (:mod:`attacks.secfed_replay`), record count, input shape, class
count and, for the metric learners (ProtoNet, Matching Networks, Siamese networks) and zeroed-head
MAML / FOMAML, the public canonical label layout. Every replay runs the learner's own loss
(:mod:`attacks.secfed_replay`), never a copy of its loop.

Scenarios (:data:`attacks.options.INVERSION_SCENARIOS`), chosen by learner:

* ``gradient_b1`` / ``gradient_b4``: one gradient of the per-record loss on 1 / 4 records (FedSGD;
  FedAvg, Reptile, MAML, FOMAML heads). For the metric learners ``gradient_b4`` is the gradient
  of the smallest episode (2-way, 1 support and 1 query per class): they have no 1-record loss.
* ``update_b1`` / ``update_b4``: a multi-step FedAvg update (``local_steps`` steps of ``local_lr``)
  or a Reptile update (``inner_steps`` steps of ``inner_lr``, scaled by the outer ``local_lr``) on
  1 / 4 records, replayed as plain SGD (Geiping et al. 2020, Sec. 5).
* ``episode``: the episode gradient of ProtoNet, Matching Networks (with or without full context
  embeddings) or Siamese networks, or the MAML / FOMAML meta-gradient, of one episode of the
  run's shape (``task.n_way``, ``task.k_shot``, ``task.q_query``).
* ``secure_aggregate``: the sum over ``aggregate_clients`` sites of their messages (each its
  ``update_b1``, or its smallest episode for episodic learners): what secure aggregation reveals
  (Bonawitz et al. 2017). The attack reconstructs the union of the sites' records.

Each scenario says whether the server receives that kind of message in this run
(``sent_in_run``) and what differs (e.g. the run's optimiser is Adam, whose normalised steps the
replay does not model).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.errors import AttackConfigError
from attacks.functional import protonet_episode_labels
from attacks.image_metrics import as_images, match_reconstructions
from attacks.inversion import (
    GroundTruth,
    InversionConfig,
    InversionInputs,
    InversionResult,
    run_inversion,
    score_inversion,
)
from attacks.observation import AggregateObservation, ClientBatch, ObservationModel
from attacks.options import INVERSION_SCENARIOS, AttackOptions
from attacks.plots import save_image_grid
from attacks.secfed_adapter import LoadedRun
from attacks.secfed_observe import aggregate_noise, client_privacy, private_observe
from attacks.secfed_replay import (
    episode_observation,
    gradient_observation,
    head_size,
    is_metric_learner,
    message_kind,
    task_local_head,
    update_observation,
)
from secfed import components
from secfed.learners import learner_class

__all__ = ["InversionCase", "applicable_scenarios", "prepare_cases", "run_inversion_attack"]

THREAT_MODEL = (
    "honest-but-curious server: the global model from the checkpoint, the public configuration "
    "(config.toml) and the message of one round; no record of any site"
)


@dataclass
class InversionCase:
    """One scenario: the attacker's inputs and, separately, the ground truth for scoring.

    Attributes:
        name: Scenario name.
        threat: What the server knows (never ground truth).
        truth: The private batch (scoring only).
        sent_in_run: Whether the server receives this kind of message in the run.
        notes: How the scenario relates to the run's protocol.
        clients: Sites whose records make up the batch.
    """

    name: str
    threat: InversionInputs
    truth: GroundTruth
    sent_in_run: bool
    notes: list[str] = field(default_factory=list)
    clients: list[int] = field(default_factory=list)


def applicable_scenarios(*, learner: str) -> dict[str, str | None]:
    """Scenario name to ``None`` (applies) or the reason it does not apply to ``learner``.

    The answer does not depend on ``learner.head_init``: the replays model a head zeroed before
    every task (Kao, Chiu & Chen 2022), for Reptile also left out of the update.

    Args:
        learner: The run's learner name.

    Returns:
        Every scenario of :data:`INVERSION_SCENARIOS` with ``None`` or its reason.

    Raises:
        ConfigError: If ``learner`` is not a registered learner.
    """
    out: dict[str, str | None] = dict.fromkeys(INVERSION_SCENARIOS)
    if is_metric_learner(learner):
        out["gradient_b1"] = (
            f"{learner} has no one-record loss (an episode needs a support and a query per class)"
        )
    if learner_class(learner).episodic:
        reason = f"{learner} sends episode (meta-)gradient steps, not plain SGD updates: see 'episode'"
        out["update_b1"] = reason
        out["update_b4"] = reason
    if not learner_class(learner).episodic:
        out["episode"] = f"{learner} has no episodic meta-gradient"
    return out


class _Sampler:
    """Draws private batches from sites' own records (the simulated clients)."""

    def __init__(self, *, run: LoadedRun, seed: int) -> None:
        self._cfg = run.config
        self._rng = np.random.default_rng(seed)
        self._sites: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def site(self, sid: int) -> tuple[np.ndarray, np.ndarray]:
        if sid not in self._sites:
            ds = components.build_site(config=self._cfg, site_id=sid).dataset
            self._sites[sid] = (
                np.asarray(ds.images, dtype=np.float32),
                np.asarray(ds.labels, dtype=np.int64),
            )
        return self._sites[sid]

    def supervised(self, *, sid: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` records with their labels: global (FedAvg) or task-local (n_way heads)."""
        x, y = self.site(sid)
        if not task_local_head(self._cfg.learner.name):
            idx = self._rng.choice(y.size, size=n, replace=False)
            return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
        n_way = self._cfg.task.n_way
        classes = self._rng.choice(np.unique(y), size=n_way, replace=False)
        rows: list[int] = []
        labels: list[int] = []
        for i in range(n):
            pos = int(self._rng.integers(n_way)) if n == 1 else i % n_way
            pool = np.setdiff1d(np.flatnonzero(y == classes[pos]), np.asarray(rows, dtype=np.int64))
            rows.append(int(self._rng.choice(pool)))
            labels.append(pos)
        return torch.from_numpy(x[np.asarray(rows)]), torch.tensor(labels, dtype=torch.int64)

    def episode(
        self, *, sid: int, n_way: int, k_shot: int, n_query: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An episode, support first then queries, class-sorted, with task-local labels."""
        x, y = self.site(sid)
        classes = self._rng.choice(np.unique(y), size=n_way, replace=False)
        support, query = [], []
        for c in classes:
            pick = self._rng.choice(np.flatnonzero(y == c), size=k_shot + n_query, replace=False)
            support.append(pick[:k_shot])
            query.append(pick[k_shot:])
        rows = np.concatenate(support + query)
        return torch.from_numpy(x[rows]), protonet_episode_labels(n_way=n_way, k_shot=k_shot, n_query=n_query)


def _params(run: LoadedRun) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in run.model.named_buffers()}
    return params, buffers


def _unit(
    *, run: LoadedRun, sampler: _Sampler, sid: int, kind: str, n: int
) -> tuple[ObservationModel, torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
    """Observation model, private batch, class count and public labels (or None) of one client."""
    cfg, learner, model = run.config, run.learner, run.model
    name, t = cfg.learner.name, cfg.task
    metric = is_metric_learner(name)
    if kind in ("episode", "episode_min") or (kind == "gradient" and metric):
        if kind == "episode":
            shape = (t.n_way, t.k_shot, t.q_query)
        else:  # the smallest episode: 2-way for the metric learners, the head's n_way for MAML / FOMAML
            shape = (2 if metric else t.n_way, 1, 1)
        obs = episode_observation(
            config=cfg, learner=learner, model=model, n_way=shape[0], k_shot=shape[1], n_query=shape[2]
        )
        x, y = sampler.episode(sid=sid, n_way=shape[0], k_shot=shape[1], n_query=shape[2])
        # The metric learners' losses are invariant to relabelling (ProtoNet's prototypes, the
        # Matching Networks attention over support labels, the Siamese same/different pairs), and
        # so is MAML's with a head zeroed before every task (every class starts from the same zero
        # row): the canonical class-sorted layout is public (attacks.functional.protonet_episode_labels;
        # with full context embeddings the support order is the episode source's class-sorted one).
        symmetric = metric or cfg.learner.head_init == "zero"
        return obs, x, y, shape[0], (y if symmetric else None)
    heads = head_size(config=cfg, model=model)
    assert heads is not None
    x, y = sampler.supervised(sid=sid, n=n)
    obs = (
        gradient_observation(config=cfg, model=model)
        if kind == "gradient"
        else update_observation(config=cfg, model=model, num_records=n)
    )
    return obs, x, y, (t.n_way if task_local_head(name) else heads), None


def _notes(*, run: LoadedRun, scenario: str) -> tuple[bool, list[str]]:
    cfg = run.config
    lr = cfg.learner
    kind = message_kind(lr.name)
    plain = cfg.federation.aggregation == "plain"
    notes: list[str] = []
    if scenario == "secure_aggregate":
        sent = not plain
        if plain:
            notes.append(
                "the run aggregates in the clear: the server sees each site's message, a stronger position"
            )
    elif not plain:
        sent = False
        notes.append(
            f"the run uses {cfg.federation.aggregation}: the server sees only the sum of the sites' messages"
        )
    elif scenario.startswith("gradient"):
        one_step = (kind == "batch_update" and lr.local_steps == 1) or (
            kind == "task_update" and lr.inner_steps == 1
        )
        sent = one_step or learner_class(lr.name).episodic
        if not sent:
            notes.append(
                "the run's sites take several local steps: a single gradient is a FedSGD site's message"
            )
        if kind == "meta_gradient":
            sent = False
            notes.append(f"{lr.name} sites send meta-gradients; this is the inner loss's gradient")
    else:
        sent = True
    if (
        scenario.startswith("update")
        and kind == "batch_update"
        and lr.batch_size < 4
        and scenario == "update_b4"
    ):
        notes.append(f"local batches of {lr.batch_size} records")
    opt = lr.local_optimizer
    if opt == "adam" or (kind == "task_update" and lr.inner_optimizer == "adam"):
        notes.append(
            "the run's local optimiser is Adam; the observation is simulated and replayed with plain SGD "
            "(attacks.observation replays SGD), so it models, not reproduces, the run's message"
        )
    if learner_class(lr.name).episodic and lr.local_steps > 1 and scenario in ("episode", "gradient_b4"):
        notes.append(
            f"the run takes {lr.local_steps} local steps per round; this is one step's episode gradient"
        )
    return sent, notes


def prepare_cases(*, run: LoadedRun, options: AttackOptions) -> tuple[list[InversionCase], dict[str, str]]:
    """Build every applicable scenario's attacker inputs and ground truth.

    Args:
        run: The loaded run.
        options: Attack options (site, seed, scenarios, aggregate_clients).

    Returns:
        ``(cases, skipped)``: the cases, and the reason for every scenario not run.

    Raises:
        AttackConfigError: If the site does not exist.
    """
    cfg = run.config
    n_sites = cfg.partition.num_sites
    if not 0 <= options.site < n_sites:
        raise AttackConfigError(f"site must be in [0, {n_sites}), got {options.site}")
    wanted = options.scenarios or INVERSION_SCENARIOS
    reasons = applicable_scenarios(learner=cfg.learner.name)
    skipped = {s: str(reasons[s]) for s in wanted if reasons[s] is not None}
    priv = client_privacy(config=cfg)
    params, buffers = _params(run)
    sampler = _Sampler(run=run, seed=options.seed)
    cases: list[InversionCase] = []
    episodic = learner_class(cfg.learner.name).episodic
    for scenario in wanted:
        if scenario in skipped:
            continue
        sent, notes = _notes(run=run, scenario=scenario)
        if scenario == "secure_aggregate":
            clients = [options.site] + [s for s in range(n_sites) if s != options.site]
            clients = clients[: min(options.aggregate_clients, cfg.federation.clients_per_round or n_sites)]
            kind = "episode_min" if episodic else "update"
            parts, xs, ys, total, known_parts = [], [], [], None, []
            n_cls = 0
            for sid in clients:
                obs, x, y, n_cls, known = _unit(run=run, sampler=sampler, sid=sid, kind=kind, n=1)
                batch = ClientBatch(params=params, buffers=buffers, inputs=x, labels=y)
                msg = private_observe(observation=obs, batch=batch, privacy=priv)
                total = msg if total is None else {k: total[k] + msg[k] for k in total}
                parts.append((obs, int(x.shape[0])))
                xs.append(x)
                ys.append(y)
                known_parts.append(known)
            assert total is not None
            observed = aggregate_noise(total=total, privacy=priv)
            observation: ObservationModel = AggregateObservation(parts=tuple(parts))
            x_all, y_all = torch.cat(xs), torch.cat(ys)
            known_all = (
                torch.cat([k for k in known_parts if k is not None]) if known_parts[0] is not None else None
            )
            notes.append(
                f"sum over sites {clients}, each sending its "
                f"{'smallest episode' if episodic else 'update_b1'} message"
            )
        else:
            n = 4 if scenario.endswith("b4") else 1
            kind = scenario.split("_")[0] if scenario != "episode" else "episode"
            observation, x_all, y_all, n_cls, known_all = _unit(
                run=run, sampler=sampler, sid=options.site, kind=kind, n=n
            )
            batch = ClientBatch(params=params, buffers=buffers, inputs=x_all, labels=y_all)
            observed = private_observe(observation=observation, batch=batch, privacy=priv)
            clients = [options.site]
        threat = InversionInputs(
            model=run.model,
            observed=observed,
            observation=observation,
            num_records=int(x_all.shape[0]),
            input_shape=tuple(run.input_shape),
            num_classes=int(n_cls),
            params=params,
            buffers=buffers,
            known_labels=known_all,
            box=(0.0, 1.0),
        )
        cases.append(
            InversionCase(
                name=scenario,
                threat=threat,
                truth=GroundTruth(inputs=x_all.clone(), labels=y_all.clone()),
                sent_in_run=sent,
                notes=notes,
                clients=clients,
            )
        )
    return cases, skipped


def _grid_rows(
    cases: list[InversionCase], results: dict[str, InversionResult], columns: int, shape: tuple[int, ...]
) -> list[tuple[str, np.ndarray]]:
    rows: list[tuple[str, np.ndarray]] = []
    width = min(columns, max(int(c.truth.inputs.shape[0]) for c in cases))
    for case in cases:
        res = results[case.name]
        r, c = match_reconstructions(reconstructions=res.reconstruction, originals=case.truth.inputs)
        org = as_images(batch=case.truth.inputs, image_shape=shape)[c].numpy()[:width]
        rec = as_images(batch=res.reconstruction, image_shape=shape)[r].numpy()[:width]
        pad = width - org.shape[0]
        if pad:
            blank = np.full((pad, *org.shape[1:]), np.nan)
            org, rec = np.concatenate([org, blank]), np.concatenate([rec, blank])
        rows.append((f"{case.name}\noriginal", org))
        rows.append((f"{case.name}\nreconstr.", rec))
    return rows


def run_inversion_attack(
    *,
    run: LoadedRun,
    options: AttackOptions,
    out_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every applicable scenario, score it, and write ``inversion.json`` and ``inversion_grid.png``.

    Args:
        run: The loaded run.
        options: Attack options.
        out_dir: ``RUN_DIR/attacks``.
        progress: Called with one line of text before and after each scenario (with its time and
            scores); ``None``: silent.

    Returns:
        The JSON document written to ``inversion.json``.

    Raises:
        AttackConfigError: On invalid options.
    """
    cases, skipped = prepare_cases(run=run, options=options)
    if not cases:
        raise AttackConfigError(f"no inversion scenario applies; skipped: {skipped}")
    config = InversionConfig(
        method=options.method, iterations=options.iterations, restarts=options.restarts, seed=options.seed
    )
    shape = tuple(run.input_shape)
    results: dict[str, InversionResult] = {}
    scenarios: dict[str, Any] = {}
    for i, case in enumerate(cases):
        if progress is not None:
            records = int(case.truth.inputs.shape[0])
            progress(
                f"scenario {i + 1}/{len(cases)} {case.name}: reconstructing {records} records "
                f"({options.method}, {options.iterations} iterations x {options.restarts} restarts) ..."
            )
        t0 = time.perf_counter()
        result = run_inversion(threat=case.threat, config=config)
        score = score_inversion(
            result=result, truth=case.truth, image_shape=shape if len(shape) >= 2 else None
        )
        if progress is not None:
            progress(f"scenario {i + 1}/{len(cases)} {case.name}: done in {time.perf_counter() - t0:.0f} s")
        results[case.name] = result
        scenarios[case.name] = {
            "sent_in_run": case.sent_in_run,
            "notes": case.notes,
            "clients": case.clients,
            "records": int(case.truth.inputs.shape[0]),
            "observation": case.threat.observation.describe(),
            "result": result.to_dict(),
            "score": score.to_dict(),
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = save_image_grid(
        path=out_dir / "inversion_grid.png",
        rows=_grid_rows(cases, results, options.grid_columns, shape),
        value_range=(0.0, 1.0),
    )
    cfg = run.config
    doc: dict[str, Any] = {
        "attack": "inversion",
        "run_dir": str(run.run_dir),
        "checkpoint_round": run.round,
        "site": options.site,
        "learner": cfg.learner.name,
        "aggregation": cfg.federation.aggregation,
        "threat_model": THREAT_MODEL,
        "privacy": client_privacy(config=cfg).describe(),
        "inversion_config": config.resolved().to_dict(),
        "scenarios": scenarios,
        "skipped": skipped,
        "files": {"json": str(out_dir / "inversion.json"), "grid": str(grid)},
    }
    (out_dir / "inversion.json").write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
    return doc
