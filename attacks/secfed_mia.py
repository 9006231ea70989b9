"""Membership inference against a secfed run, at the record and at the client level.

Record level: "was record x in site X's training data?"
    The run's own checkpoint cannot be the target of a *fair* game: with the runtime's partitions
    every record of site X's classes was a member, and the only non-members (the test split) come
    from other classes, so any score would mostly measure the class shift. Instead the run is
    replicated with its own pipeline (:mod:`attacks.replicas`: same configuration, seed, learner,
    federation and DP mechanism, all other sites unchanged): a random ``population_fraction`` of
    site X's records is held out of every replica (the population of RMIA and the support pool of
    the scoring episodes), and each of ``references + 1`` replicas trains with site X holding a
    random half of the remaining records (each record independently with probability 1/2; see
    :func:`independent_masks` for why not per-record balanced masks). Every replica is
    the target once, the others are its reference models; scores of all targets are pooled. The
    target is therefore "the run's final global model" up to which half of site X's records it
    saw; members and non-members are exchangeable records of the same site.

Client level: "did site X take part?"
    Replicas of the federation with a random half of the sites (each with its own shard);
    candidates are the sites; each replica is the target once with the others as references.

Per-record statistics (:mod:`attacks.secfed_scores`): FedAvg records are scored by the global
head; few-shot models score a record as a query of few-shot episodes whose support comes from
the held-out population (ProtoNet: distance to the mean of ``shots`` other records of its class;
MAML / Reptile: after the learner's test-time fine-tuning). At the client level a site's statistic
is the mean logit-scaled confidence of ``client_queries`` of its records in episodes supported by
its own records.

Attacks (:mod:`attacks.mia`): loss and confidence thresholds (Yeom et al. 2018); LiRA online and
offline with global and per-example variance (Carlini et al. 2022; the offline score is the
one-sided Gaussian test ``-log P[Z > phi]``, plus the two-sided ``logpdf`` variant for
comparison); RMIA offline (Zarifzadeh et al. 2024, ``a = 0.3``, not tuned). A record without the
reference models a variant needs (e.g. no IN reference for online LiRA) is left out of that
variant for that target; the selection depends only on the random masks, so the metrics stay fair.
That evaluation, and the masks, are :mod:`attacks.mia_evaluation` (re-exported here).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.errors import AttackConfigError, AttackInputError
from attacks.mia_evaluation import RMIA_OFFLINE_A, LevelStats, evaluate_level, independent_masks
from attacks.mia_metrics import MIAMetrics, save_mia_roc
from attacks.options import AttackOptions
from attacks.replicas import (
    RunData,
    load_run_data,
    quantize,
    record_replica,
    site_subset_replica,
    train_replica,
)
from attacks.secfed_adapter import LoadedRun, load_run
from attacks.secfed_replay import global_head
from attacks.secfed_scores import RecordStats, episode_statistics, head_statistics, plan_query_episodes

__all__ = [
    "LevelStats",
    "RMIA_OFFLINE_A",
    "THREAT_MODEL",
    "evaluate_level",
    "independent_masks",
    "run_mia_attack",
]

THREAT_MODEL = (
    "the server (or anyone holding the released global model) with the public configuration, "
    "candidate records / sites, and reference models it trains itself with the same pipeline"
)


def _entries(metrics: dict[str, MIAMetrics], prefix: str) -> dict[str, Any]:
    return {
        name: {"name": f"{prefix}/{name}", **m.to_dict(include_curve=True)} for name, m in metrics.items()
    }


#: A progress callback: receives one line of text (``secfed attack`` prints it on stderr).
Progress = Callable[[str], None]


class _Trainer:
    """Trains and scores replicas, deleting their folders unless asked to keep them.

    With a ``progress`` callback it reports, before each replica, which replica of how many starts
    and, after it, how long it took and about how long the rest of the level will take.
    """

    def __init__(
        self,
        *,
        run: LoadedRun,
        data: RunData,
        options: AttackOptions,
        work: Path,
        progress: Progress | None = None,
    ) -> None:
        self.run, self.data, self.options, self.work = run, data, options, work
        self.rounds = options.rounds or run.config.experiment.rounds
        self.trained = 0
        self.arrays: dict[str, np.ndarray] = {}
        self.progress = progress
        self._level_start = 0.0

    def say(self, line: str) -> None:
        """Report one line of progress (nothing without a callback)."""
        if self.progress is not None:
            self.progress(line)

    def start_level(self, *, level: str, replicas: int) -> None:
        """Announce a level's replicas (each a federation of ``rounds`` rounds)."""
        self._level_start = time.perf_counter()
        self.say(
            f"{level} level: training {replicas} replica federations of the run "
            f"({self.rounds} round{'s' if self.rounds != 1 else ''} each) and scoring the candidates on each"
        )

    def train_counted(
        self, spec: Any, name: str, score: Callable[[LoadedRun], Any], *, level: str, index: int, total: int
    ) -> Any:
        """:meth:`train` with a progress line before and after."""
        self.say(f"{level} level: replica {index + 1}/{total} training ...")
        t0 = time.perf_counter()
        out = self.train(spec, name, score)
        now = time.perf_counter()
        per = (now - self._level_start) / (index + 1)
        left = per * (total - index - 1)
        self.say(
            f"{level} level: replica {index + 1}/{total} done in {now - t0:.0f} s"
            + (f"; about {left:.0f} s left for this level" if index + 1 < total else "")
        )
        return out

    def train(self, spec: Any, name: str, score: Callable[[LoadedRun], Any]) -> Any:
        folder = self.work / name
        if folder.exists():
            shutil.rmtree(folder)
        run_dir = train_replica(
            config=self.run.config,
            data=self.data,
            spec=spec,
            out_dir=folder,
            rounds=self.rounds,
            name=name,
            quiet=self.options.quiet,
        )
        replica = load_run(run_dir=run_dir)
        self.trained += 1
        out = score(replica)
        if not self.options.keep_work:
            shutil.rmtree(folder, ignore_errors=True)
        return out


def _stratified_holdout(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    held = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = max(1, int(round(fraction * rows.size)))
        held.append(rng.choice(rows, size=min(take, rows.size - 1), replace=False))
    return np.sort(np.concatenate(held))


def support_shots(*, wanted: int, smallest_class: int) -> int:
    """Support shots per class of the record-level scoring episodes.

    A support set that must avoid a query's own record redraws without up to ``shots`` clashing
    records of the class (:func:`attacks.secfed_scores.plan_query_episodes`), so it needs
    ``2 * shots`` records of every class of the held-out population.

    Args:
        wanted: ``AttackOptions.shots``.
        smallest_class: Records of the smallest class of the held-out population.

    Returns:
        ``min(wanted, smallest_class // 2)`` (0: too few records to score episodically).
    """
    return int(min(wanted, smallest_class // 2))


def _record_level(trainer: _Trainer, options: AttackOptions) -> tuple[dict[str, Any], dict[str, MIAMetrics]]:
    run, data = trainer.run, trainer.data
    cfg = run.config
    site = options.site
    rng = np.random.default_rng(options.seed)
    y_site = data.site_labels(site)
    x_site = quantize(data.site_images(site))
    pop = _stratified_holdout(y_site, options.population_fraction, rng)
    cand = np.setdiff1d(np.arange(y_site.size), pop)
    k = options.references + 1
    masks = independent_masks(num_models=k, labels=y_site[cand], seed=options.seed)
    x_q = torch.from_numpy(np.concatenate([x_site[cand], x_site[pop]]))
    y_q = np.concatenate([y_site[cand], y_site[pop]])
    by_head = global_head(cfg.learner.name)  # FedAvg: scored by its global head, not by episodes
    shots = support_shots(
        wanted=options.shots, smallest_class=int(min(np.bincount(y_site[pop])[np.unique(y_site[pop])]))
    )
    if not by_head and shots < 1:
        raise AttackConfigError("the held-out population has fewer than 2 records of some class")
    episodes = []
    if not by_head:
        self_idx = np.concatenate([np.full(cand.size, -1), np.arange(pop.size)])
        episodes = plan_query_episodes(
            query_labels=y_q,
            support_labels=y_site[pop],
            query_in_support=self_idx,
            n_way=cfg.task.n_way,
            shots=shots,
            passes=options.passes,
            seed=options.seed,
        )
    x_pop = torch.from_numpy(x_site[pop])

    def score(replica: LoadedRun) -> RecordStats:
        if by_head:
            return head_statistics(model=replica.model, x=x_q, labels=y_q)
        return episode_statistics(
            learner=replica.learner,
            model=replica.model,
            support_x=x_pop,
            support_labels=y_site[pop],
            query_x=x_q,
            query_labels=y_q,
            episodes=episodes,
            passes=options.passes,
        )

    stats: list[RecordStats] = []
    trainer.start_level(level="record", replicas=k)
    for i in range(k):
        spec = record_replica(data=data, site=site, keep=cand[masks[i]])
        stats.append(trainer.train_counted(spec, f"mia-record-{i}", score, level="record", index=i, total=k))
    n = cand.size
    level = LevelStats(
        masks=masks,
        phi=np.stack([s.phi[:n] for s in stats]),
        prob=np.stack([s.prob[:n] for s in stats]),
        pop_prob=np.stack([s.prob[n:].mean(axis=1) for s in stats]),
    )
    metrics, info = evaluate_level(level, rmia_ok=True)
    trainer.arrays.update(
        {
            "record_masks": level.masks,
            "record_phi": level.phi,
            "record_prob": level.prob,
            "record_population_prob": level.pop_prob if level.pop_prob is not None else np.zeros(0),
            "record_candidates": cand,
            "record_population": pop,
        }
    )
    design = {
        "target": (
            "each of the replicas of the run (same configuration, seed and pipeline; other sites "
            "unchanged) in turn, with site X holding a random half of its candidate records"
        ),
        "why_not_the_checkpoint": (
            "every record of site X's classes was a member of the run's checkpoint; its only "
            "non-members are other classes, which would make any split unfair"
        ),
        "site": site,
        "site_records": int(y_site.size),
        "candidates": int(n),
        "population_heldout": int(pop.size),
        "replicas": k,
        "references_per_target": k - 1,
        "rounds": trainer.rounds,
        "statistic": (
            "logit-scaled confidence of the global head"
            if by_head
            else f"logit-scaled confidence as a query of {cfg.task.n_way}-way {shots}-shot episodes "
            "supported by held-out population records (learner.predict)"
        ),
        "shots": None if by_head else shots,
        "passes": 1 if by_head else options.passes,
        "lira_offline_score": "one_sided: -log P[Z > phi], Z ~ N(mu_out, s_out^2) (plus a logpdf variant)",
        "rmia_offline_a": RMIA_OFFLINE_A,
        "pooling": "scores of all targets are pooled into one ROC",
        **info,
    }
    return {"design": design, "attacks": _entries(metrics, "record")}, metrics


def _client_level(trainer: _Trainer, options: AttackOptions) -> tuple[dict[str, Any], dict[str, MIAMetrics]]:
    run, data = trainer.run, trainer.data
    cfg = run.config
    n_sites = cfg.partition.num_sites
    if n_sites < 2:
        return {"skipped": "client-level inference needs at least 2 sites"}, {}
    if cfg.privacy.mode == "distributed" and n_sites < 6:
        return {"skipped": "distributed DP replicas of half the sites would have fewer than 3 sites"}, {}
    k = options.references + 1
    try:
        masks = independent_masks(num_models=k, labels=np.zeros(n_sites, dtype=np.int64), seed=options.seed)
    except AttackConfigError:
        return {"skipped": "could not draw replicas that each keep at least one site"}, {}
    rng = np.random.default_rng(options.seed)
    per_site = []
    for s in range(n_sites):
        y = data.site_labels(s)
        q = np.sort(rng.choice(y.size, size=min(options.client_queries, y.size), replace=False))
        counts = np.bincount(y)[np.unique(y)]
        shots = int(min(options.shots, counts.min() - 1))
        if shots < 1:
            raise AttackInputError(f"site {s} has a class with fewer than 2 records")
        episodes = plan_query_episodes(
            query_labels=y[q],
            support_labels=y,
            query_in_support=q,
            n_way=cfg.task.n_way,
            shots=shots,
            passes=options.passes,
            seed=options.seed + 1000 + s,
        )
        per_site.append((torch.from_numpy(quantize(data.site_images(s))), y, q, episodes))

    def score(replica: LoadedRun) -> tuple[np.ndarray, np.ndarray]:
        phi, prob = [], []
        for x, y, q, episodes in per_site:
            st = episode_statistics(
                learner=replica.learner,
                model=replica.model,
                support_x=x,
                support_labels=y,
                query_x=x[torch.from_numpy(q)],
                query_labels=y[q],
                episodes=episodes,
                passes=options.passes,
            )
            phi.append(st.phi.mean())
            prob.append(st.prob.mean())
        return np.asarray(phi), np.asarray(prob)

    out = []
    trainer.start_level(level="client", replicas=k)
    for i in range(k):
        spec = site_subset_replica(
            data=data, sites=np.flatnonzero(masks[i]).tolist(), seed=cfg.experiment.seed
        )
        out.append(trainer.train_counted(spec, f"mia-client-{i}", score, level="client", index=i, total=k))
    level = LevelStats(
        masks=masks,
        phi=np.stack([o[0] for o in out])[:, :, None],
        prob=np.stack([o[1] for o in out])[:, :, None],
        pop_prob=None,
    )
    metrics, info = evaluate_level(level, rmia_ok=False)
    trainer.arrays.update({"client_masks": level.masks, "client_phi": level.phi, "client_prob": level.prob})
    design = {
        "target": "each replica federation of a random half of the sites in turn; candidates are the sites",
        "sites": n_sites,
        "replicas": k,
        "references_per_target": k - 1,
        "rounds": trainer.rounds,
        "statistic": (
            f"mean logit-scaled confidence of up to {options.client_queries} of the site's records as "
            f"queries of {cfg.task.n_way}-way episodes supported by the site's other records"
        ),
        "note": "few candidates: the ROC has a coarse grid (see num_members / num_nonmembers)",
        **info,
    }
    return {"design": design, "attacks": _entries(metrics, "client")}, metrics


def run_mia_attack(
    *, run: LoadedRun, options: AttackOptions, out_dir: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """Record- and client-level membership inference; writes ``mia.json`` and ``mia_roc.png``.

    Args:
        run: The loaded run.
        options: Attack options (site, references, rounds, levels, ...).
        out_dir: ``RUN_DIR/attacks``.
        progress: Called with one line of text at the start, before and after every replica (with
            the time it took and an estimate of the rest) and at the end; ``None``: silent.

    Returns:
        The JSON document written to ``mia.json``.

    Raises:
        AttackConfigError: If the run cannot be replicated (partition scheme) or options do not fit.
        attacks.replicas.ReplicaError: If a replica fails to train.
    """
    cfg = run.config
    if not 0 <= options.site < cfg.partition.num_sites:
        raise AttackConfigError(f"site must be in [0, {cfg.partition.num_sites}), got {options.site}")
    levels = [lv for lv in ("record", "client") if lv in options.levels]
    if progress is not None:
        progress(
            f"membership inference against site {options.site}: {options.references + 1} replicas per "
            f"level ({', '.join(levels)}); loading the run's data"
        )
    data = load_run_data(config=cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(run=run, data=data, options=options, work=out_dir / "work" / "mia", progress=progress)
    doc: dict[str, Any] = {
        "attack": "mia",
        "run_dir": str(run.run_dir),
        "site": options.site,
        "learner": cfg.learner.name,
        "privacy_mode": cfg.privacy.mode,
        "threat_model": THREAT_MODEL,
    }
    files = {"json": str(out_dir / "mia.json")}
    if "record" in options.levels:
        doc["record_level"], rec = _record_level(trainer, options)
        if rec:
            files["roc"] = str(
                save_mia_roc(path=out_dir / "mia_roc.png", results=rec, title="Record-level MIA")
            )
    if "client" in options.levels:
        doc["client_level"], cli = _client_level(trainer, options)
        if cli:
            path = out_dir / ("mia_client_roc.png" if "roc" in files else "mia_roc.png")
            key = "client_roc" if "roc" in files else "roc"
            files[key] = str(save_mia_roc(path=path, results=cli, title="Client-level MIA"))
    doc["replicas_trained"] = trainer.trained
    trainer.say(f"done: {trainer.trained} replicas trained; writing the results")
    if options.save_scores and trainer.arrays:
        np.savez(out_dir / "mia_scores.npz", allow_pickle=False, **trainer.arrays)
        files["scores"] = str(out_dir / "mia_scores.npz")
    if options.keep_work:
        files["work"] = str(out_dir / "work" / "mia")
    doc["files"] = files
    if not options.keep_work:
        shutil.rmtree(out_dir / "work", ignore_errors=True)
    (out_dir / "mia.json").write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
    return doc
