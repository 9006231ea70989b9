"""Canary audit of a secfed run: an empirical lower bound on ε beside the accountant's ε.

The run's configuration is replayed with its own pipeline (:mod:`attacks.replicas`: same learner,
model, federation and DP mechanism, seed; every other site unchanged) after inserting ``m``
canaries into site X's data, each included independently with probability 1/2 (the auditor's own
coin flips, which enter only the scoring). The canaries are crafted records: uniform-noise images,
each labelled with one of site X's classes (far from the data, so a model that memorises them
shows it). After training, the auditor holds the released global model and scores every canary
as membership inference does (:mod:`attacks.secfed_scores`: logit-scaled confidence of the
canary's label; FedAvg's global head, or few-shot episodes supported by site X's real records).

Bounds (:mod:`attacks.audit`):

* one run (Steinke, Nasr, Jagielski, NeurIPS 2023): guess "included" for the top-scored canaries
  and "excluded" for the bottom ones; Bonferroni over the guess counts. Valid for the single
  training run with many canaries.
* Clopper–Pearson (Jagielski et al. 2020; Nasr et al. 2021) on included versus excluded canary
  scores, Bonferroni over the thresholds. It treats every canary as an independent trial, as in a
  multi-run audit; inside one run that is an approximation (the one-run bound is the proven one).

The accountant's ε is the audit run's own ledger value for site X (``summary.json``:
``epsilon_sites``), i.e. the ε of exactly the training that was audited, next to the original run's
ε. A lower bound above the accountant's ε would refute the implementation or its accounting.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.audit import epsilon_lower_bound_from_scores, one_run_audit
from attacks.errors import AttackConfigError
from attacks.options import AttackOptions
from attacks.replicas import load_run_data, quantize, record_replica, train_replica
from attacks.secfed_adapter import LoadedRun, load_run
from attacks.secfed_replay import global_head
from attacks.secfed_scores import episode_statistics, head_statistics, plan_query_episodes

__all__ = ["run_audit_attack", "site_epsilon"]

CP_NOTE = (
    "every canary is treated as an independent trial (as in multi-run audits); within one training "
    "run only the one-run bound is proven valid"
)


def site_epsilon(summary: dict[str, Any], site: int) -> float | None:
    """The accountant's record-level ε of one site in a run's ``summary.json`` (None without DP).

    Args:
        summary: The parsed ``summary.json``.
        site: The site.

    Returns:
        ``epsilon_sites[site]`` when present, else ``epsilon``, else ``None``.
    """
    sites = summary.get("epsilon_sites")
    if isinstance(sites, dict) and str(site) in sites:
        return float(sites[str(site)])
    eps = summary.get("epsilon")
    return float(eps) if isinstance(eps, (int, float)) else None


def _canaries(
    *, m: int, shape: tuple[int, ...], classes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = quantize(rng.random((m, *shape), dtype=np.float64).astype(np.float32))
    labels = rng.choice(classes, size=m).astype(np.int64)
    included = rng.random(m) < 0.5
    return images, labels, included


def run_audit_attack(*, run: LoadedRun, options: AttackOptions, out_dir: Path) -> dict[str, Any]:
    """Insert canaries, retrain with the run's configuration, score them, bound ε; writes ``audit.json``.

    Args:
        run: The loaded run.
        options: Attack options (site, canaries, rounds, significance, seed).
        out_dir: ``RUN_DIR/attacks``.

    Returns:
        The JSON document written to ``audit.json``.

    Raises:
        AttackConfigError: If the run cannot be replicated or the site does not exist.
        attacks.replicas.ReplicaError: If the audit run fails.
    """
    cfg = run.config
    site = options.site
    if not 0 <= site < cfg.partition.num_sites:
        raise AttackConfigError(f"site must be in [0, {cfg.partition.num_sites}), got {site}")
    data = load_run_data(config=cfg)
    rng = np.random.default_rng(options.seed)
    y_site = data.site_labels(site)
    classes = np.unique(y_site)
    shape = tuple(int(s) for s in data.train.images.shape[1:])
    images, labels, included = _canaries(m=options.canaries, shape=shape, classes=classes, rng=rng)
    spec = record_replica(
        data=data,
        site=site,
        keep=np.arange(y_site.size),
        extra_images=images[included],
        extra_labels=labels[included],
    )
    rounds = options.rounds or cfg.experiment.rounds
    work = out_dir / "work" / "audit"
    if work.exists():
        shutil.rmtree(work)
    audit_dir = train_replica(
        config=cfg, data=data, spec=spec, out_dir=work, rounds=rounds, name="audit", quiet=options.quiet
    )
    audited = load_run(run_dir=audit_dir)
    x_c = torch.from_numpy(images)
    if global_head(cfg.learner.name):
        stats = head_statistics(model=audited.model, x=x_c, labels=labels)
        statistic = "logit-scaled confidence of the canary's label under the global head"
    else:
        x_site = quantize(data.site_images(site))
        shots = int(min(options.shots, np.bincount(y_site)[classes].min() - 1))
        episodes = plan_query_episodes(
            query_labels=labels,
            support_labels=y_site,
            query_in_support=None,
            n_way=cfg.task.n_way,
            shots=max(1, shots),
            passes=options.passes,
            seed=options.seed,
        )
        stats = episode_statistics(
            learner=audited.learner,
            model=audited.model,
            support_x=torch.from_numpy(x_site),
            support_labels=y_site,
            query_x=x_c,
            query_labels=labels,
            episodes=episodes,
            passes=options.passes,
        )
        statistic = (
            f"logit-scaled confidence of the canary as a query of {cfg.task.n_way}-way episodes "
            "supported by the site's real records (learner.predict)"
        )
    scores = np.nan_to_num(stats.phi.mean(axis=1), nan=0.0, posinf=1e300, neginf=-1e300)
    delta = float(cfg.privacy.delta)
    one_run = one_run_audit(scores=scores, included=included, delta=delta, significance=options.significance)
    doc_cp: dict[str, Any] = {}
    if included.any() and (~included).any():
        cp = epsilon_lower_bound_from_scores(
            scores_in=scores[included],
            scores_out=scores[~included],
            delta=delta,
            alpha=options.significance,
            selection="bonferroni",
        )
        doc_cp = {**cp.to_dict(), "note": CP_NOTE}
    accountant = site_epsilon(audited.summary, site) if cfg.privacy.mode != "none" else None
    original = site_epsilon(run.summary, site) if cfg.privacy.mode != "none" else None
    best = max([one_run.epsilon] + ([doc_cp["epsilon"]] if doc_cp else []))
    doc: dict[str, Any] = {
        "attack": "audit",
        "run_dir": str(run.run_dir),
        "site": site,
        "privacy_mode": cfg.privacy.mode,
        "delta": delta,
        "accountant_epsilon": accountant,
        "accountant_source": (
            "summary.json of the audit run (epsilon_sites of the site: record level, this run's ledger)"
            if accountant is not None
            else "no differential privacy: the accountant's epsilon is infinite"
        ),
        "run_epsilon": original,
        "noise_multiplier": float(cfg.privacy.noise_multiplier) if cfg.privacy.mode != "none" else None,
        "rounds": rounds,
        "canaries": {
            "count": int(options.canaries),
            "included": int(included.sum()),
            "inclusion_probability": 0.5,
            "kind": "uniform-noise images, each labelled with one of the site's classes",
        },
        "statistic": statistic,
        "one_run": one_run.to_dict(),
        "clopper_pearson": doc_cp or None,
        "exceeds_accountant": (best > accountant) if accountant is not None else None,
        "files": {"json": str(out_dir / "audit.json")},
    }
    if options.keep_work:
        doc["files"]["work"] = str(work)
    else:
        shutil.rmtree(out_dir / "work" / "audit", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
    return doc
