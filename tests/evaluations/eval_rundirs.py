"""Build synthetic run and sweep directories for report tests (no training).

The pieces are written in the formats the runtime, the privacy ledger and the attacks library
produce: ``config.toml`` from :func:`secfed.config.config_to_toml`, the ledger through
:class:`privacy.ledger.PrivacyLedger`, attack metrics through the attacks library's own
``to_dict`` methods.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from privacy.ledger import MechanismRecord, PrivacyBudget, PrivacyLedger
from secfed.config import config_from_dict, config_hash, config_to_toml

EPS_ROUNDS = (1.2, 2.5)  # cumulative ε of every site after rounds 1 and 2
ACCURACY, CI95 = 0.6125, 0.015


def png_bytes(*, color: str = "C0", size: tuple[float, float] = (2.0, 1.5)) -> bytes:
    """A small, real PNG image."""
    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [0, 1, 0], color=color)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    return buf.getvalue()


def make_run(
    root: Path,
    *,
    name: str = "run",
    dp: bool = True,
    aggregation: str = "secagg+",
    attacks: Iterable[str] = ("mia", "inversion", "audit"),
    finished: bool = True,
    audit_lower_bound: float = 0.8,
    audit_accountant_eps: float | None = 2.5,
    mia_png: bool = True,
    accuracy: float = ACCURACY,
    eps_rounds: tuple[float, ...] = EPS_ROUNDS,
    client_level: tuple[float, ...] | None = None,
) -> Path:
    """A run directory with the requested pieces.

    Args:
        root: Parent folder.
        name: Folder name.
        dp: Record-level DP with a ledger (ε = ``eps_rounds`` per round) or none.
        aggregation: ``plain``, ``secagg`` or ``secagg+``.
        attacks: Which attack result files to write.
        finished: Write ``summary.json``.
        audit_lower_bound: The audit's empirical ε lower bound.
        audit_accountant_eps: The accountant's ε recorded in ``audit.json`` (``None``: not recorded).
        mia_png: Write ``mia_roc.png`` beside ``mia.json`` (else the report redraws it).
        accuracy: Final test accuracy.
        eps_rounds: Cumulative ε after each round (also sets the number of rounds).
        client_level: Client-level DP-FedAvg: the global ε after each round (sites then hold
            record-level bounds ``eps_rounds``).

    Returns:
        The run directory.
    """
    run = root / name
    run.mkdir(parents=True)
    rounds = len(eps_rounds)
    cfg = config_from_dict(
        {
            "experiment": {"name": f"synthetic-{name}", "rounds": rounds, "seed": 7},
            "data": {"dataset": "digits"},
            "partition": {"num_sites": 3},
            "task": {"test_n_way": 5, "test_k_shot": 1, "test_q_query": 15},
            "model": {"arch": "mlp", "norm": "none", "hidden": 16},
            "federation": {"aggregation": aggregation},
            "secagg": {"active": False, "corrupt_fraction": 0.1},
            "privacy": {
                "mode": ("client" if client_level else "record") if dp else "none",
                "delta": 1e-5,
                "noise_multiplier": 0.9,
            },
        }
    )
    (run / "config.toml").write_text(config_to_toml(cfg), encoding="utf-8")
    (run / "sites.json").write_text(
        json.dumps({str(s): {"site": s, "records": 300 + 10 * s, "classes": 5} for s in range(3)}),
        encoding="utf-8",
    )
    metrics = []
    for r in range(1, rounds + 1):
        row: dict[str, Any] = {
            "round": r,
            "train_loss": 1.0 / r,
            "clients": [0, 1] if r == 1 else [0, 1, 2],
            "dropped": [2] if r == 1 else [],
            "stragglers": [],
            "skipped": False,
            "agg_protocol": aggregation,
            "agg_n": 3,
            "agg_bytes_sent_per_client": 12345.0,
            "test_accuracy": accuracy - 0.05 * (rounds - r),
            "test_accuracy_ci95": 0.03,
            "wall_s": 2.0 * r,
        }
        if aggregation != "plain":
            row.update({"agg_k": 2, "agg_t": 2, "agg_survivors": len(row["clients"]), "agg_aborted": 0})
        if dp:
            row.update(
                {
                    "epsilon": eps_rounds[r - 1],
                    "epsilon_sites": {str(s): eps_rounds[r - 1] for s in range(3)},
                    "delta": 1e-5,
                }
            )
        metrics.append(row)
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics), encoding="utf-8")
    if dp:
        ledger = PrivacyLedger.open(path=run / "privacy_ledger.jsonl", budget=PrivacyBudget(delta=1e-5))
        for r, eps in enumerate(eps_rounds, start=1):
            rec = {
                str(s): MechanismRecord(
                    epsilon=eps,
                    mechanism="episodic-gaussian",
                    noise_multiplier=0.9,
                    sample_rate=0.05,
                    steps=2,
                    privacy_unit="record",
                    adjacency="add/remove one record",
                )
                for s in range(3)
            }
            glob = None
            if client_level:
                glob = MechanismRecord(
                    epsilon=client_level[r - 1],
                    mechanism="dp-fedavg",
                    noise_multiplier=0.9,
                    sample_rate=1.0,
                    steps=1,
                    privacy_unit="client",
                    adjacency="add/remove one client's entire dataset",
                )
            ledger.append(round=r, sites=rec, global_record=glob)
    if finished:
        summary: dict[str, Any] = {
            "rounds": rounds,
            "test_accuracy": accuracy,
            "test_accuracy_ci95": CI95,
            "test_episodes": 600,
            "train_loss": 0.5,
            "wall_s": 4.0,
            "learner": "protonet",
            "dataset": "digits",
            "aggregation": aggregation,
            "backend": "sequential",
            "config_hash": config_hash(cfg),
            "code_version": "abc1234",
            "stopped_early": None,
        }
        if dp:
            summary.update(
                {
                    "epsilon": eps_rounds[-1],
                    "epsilon_unit": "record (maximum over sites)",
                    "epsilon_sites": {str(s): eps_rounds[-1] for s in range(3)},
                    "delta": 1e-5,
                    "privacy_unit": "record",
                    "adjacency": "add/remove one record",
                    "accountant": "rdp",
                    "mode": "record",
                    "mechanism": "episodic-gaussian",
                    "noise_multiplier": 0.9,
                    "max_grad_norm": 1.0,
                    "epsilon_budget": None,
                    "privacy_ledger": "privacy_ledger.jsonl",
                }
            )
        if dp and client_level:
            summary.update(
                {
                    "epsilon": client_level[-1],
                    "epsilon_unit": "client",
                    "privacy_unit": "client",
                    "adjacency": "add/remove one client's entire dataset",
                    "mode": "client",
                    "mechanism": "dp-fedavg",
                    "client_sampling": "every site every round (q = 1): exact",
                }
            )
        (run / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    write_attacks(
        run,
        attacks=attacks,
        audit_lower_bound=audit_lower_bound,
        audit_accountant_eps=audit_accountant_eps,
        mia_png=mia_png,
    )
    return run


def write_attacks(
    run: Path,
    *,
    attacks: Iterable[str],
    audit_lower_bound: float = 0.8,
    audit_accountant_eps: float | None = 2.5,
    mia_png: bool = True,
    mia_auc_shift: float = 1.0,
) -> None:
    """Write attack result files in the attacks library's formats."""
    from attacks.audit import EpsilonLowerBound
    from attacks.inversion import InversionScore
    from attacks.mia_metrics import mia_metrics

    attacks = set(attacks)
    folder = run / "attacks"
    if attacks:
        folder.mkdir(exist_ok=True)
    if "mia" in attacks:  # the layout of attacks.secfed_mia.run_mia_attack
        rng = np.random.default_rng(0)
        members = rng.normal(mia_auc_shift, 1.0, 400)
        others = rng.normal(0.0, 1.0, 400)
        scores = np.concatenate([members, others])
        is_member = np.concatenate([np.ones(400, bool), np.zeros(400, bool)])
        loss = mia_metrics(scores=scores, is_member=is_member).to_dict(include_curve=True)
        lira = mia_metrics(scores=scores + rng.normal(0, 2.0, 800), is_member=is_member).to_dict(
            include_curve=True
        )
        client = mia_metrics(scores=[0.9, 0.8, 0.2, 0.1], is_member=[1, 0, 1, 0]).to_dict(include_curve=True)
        doc = {
            "attack": "mia",
            "record_level": {
                "design": {"note": "synthetic"},
                "attacks": {"loss": {"name": "record/loss", **loss}, "lira": {"name": "record/lira", **lira}},
            },
            "client_level": {"attacks": {"loss": {"name": "client/loss", **client}}},
        }
        (folder / "mia.json").write_text(json.dumps(doc), encoding="utf-8")
        if mia_png:
            (folder / "mia_roc.png").write_bytes(png_bytes(color="C1"))
            (folder / "mia_client_roc.png").write_bytes(png_bytes(color="C3"))
    if "inversion" in attacks:  # the layout of attacks.secfed_inversion.run_inversion_attack
        strong = InversionScore(mse=0.02, psnr=17.0, ssim=0.41, label_accuracy=1.0, flat_baseline_psnr=11.5)
        weak = InversionScore(mse=0.2, psnr=9.0, ssim=0.05, label_accuracy=None, flat_baseline_psnr=11.5)
        scenarios = {
            "gradient_b4": {
                "sent_in_run": False,
                "notes": ["stronger than the run"],
                "score": strong.to_dict(),
            },
            "secure_aggregate": {"sent_in_run": True, "notes": [], "score": weak.to_dict()},
        }
        (folder / "inversion.json").write_text(
            json.dumps({"attack": "inversion", "scenarios": scenarios}), encoding="utf-8"
        )
        (folder / "inversion_grid.png").write_bytes(png_bytes(color="C2", size=(3.0, 1.0)))
    if "audit" in attacks:
        bound = EpsilonLowerBound(
            epsilon=audit_lower_bound, method="one_run", delta=1e-5, confidence=0.95, selection="fixed"
        )
        doc: dict[str, Any] = {"lower_bound": bound.to_dict()}
        if audit_accountant_eps is not None:
            doc["accountant_epsilon"] = audit_accountant_eps
        (folder / "audit.json").write_text(json.dumps(doc), encoding="utf-8")


def make_sweep_points(
    sweep: Path,
    *,
    specs: Iterable[tuple[str, float, tuple[float, ...] | None, float]],
    attacks: Iterable[str],
    audit_bounds: tuple[float, float],
) -> list[dict[str, Any]]:
    """Finished SecAgg runs under ``sweep/runs/`` (created here) and their ``sweep.json`` points.

    ``specs`` holds ``(name, target ε, ε per round or None for no DP, accuracy)``; ``audit_bounds``
    the audit's lower bound at the DP points and at the points without DP.
    """
    (sweep / "runs").mkdir(parents=True, exist_ok=True)
    points = []
    attacks = tuple(attacks)
    for name, target, eps_rounds, acc in specs:
        make_run(
            sweep / "runs",
            name=name,
            dp=eps_rounds is not None,
            aggregation="secagg",
            attacks=attacks,
            accuracy=acc,
            eps_rounds=eps_rounds or (0.0, 0.0),
            audit_lower_bound=audit_bounds[0] if eps_rounds is not None else audit_bounds[1],
            audit_accountant_eps=None,
        )
        points.append(
            {
                "name": name,
                "target_epsilon": "inf" if target == float("inf") else target,
                "learner": "protonet",
                "aggregation": "secagg",
                "run_dir": f"runs/{name}",
                "status": "ran",
            }
        )
    return points


def make_sweep(root: Path) -> Path:
    """A sweep directory: points at ε = 1 and 3 (DP runs), ∞ (no DP), and one failed point."""
    sweep = root / "sweep"
    specs = [
        ("eps1", 1.0, (0.6, 1.0), 0.41),
        ("eps3", 3.0, (1.7, 3.0), 0.55),
        ("epsinf", float("inf"), None, 0.70),
    ]
    points = make_sweep_points(sweep, specs=specs, attacks=("mia", "audit"), audit_bounds=(0.3, 0.3))
    points.append(
        {
            "name": "eps8",
            "target_epsilon": 8.0,
            "learner": "protonet",
            "aggregation": "secagg",
            "run_dir": "runs/eps8",
            "status": "failed",
            "problem": "ConfigError: synthetic failure",
        }
    )
    doc = {
        "format": "secfed.sweep",
        "version": 1,
        "config_path": "examples/digits_protonet.toml",
        "base_config_hash": "f" * 64,
        "epsilons": [1.0, 3.0, "inf", 8.0],
        "learners": ["protonet"],
        "aggregations": ["secagg"],
        "attacks": ["mia", "audit"],
        "overrides": [],
        "notes": ["synthetic sweep for tests"],
        "points": points,
    }
    return write_sweep_json(sweep, doc)


def write_sweep_json(sweep: Path, doc: dict[str, Any]) -> Path:
    """``doc`` as the sweep's ``sweep.json``; returns the sweep directory."""
    (sweep / "sweep.json").write_text(json.dumps(doc), encoding="utf-8")
    return sweep
