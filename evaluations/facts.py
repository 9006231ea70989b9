"""The facts of an audit report, as plain JSON-able dicts (pure functions of what was read).

:func:`run_facts` turns a :class:`~evaluations.rundata.RunData` and its attack outcomes into the
sections of a run report; :func:`sweep_facts` does the same for a sweep directory. The HTML and
Markdown renderers only lay these facts out, so the three report files always agree. Every piece
that the run does not have (no differential privacy, no secure aggregation, an attack that was not
run, an unfinished run) is stated as such instead of failing.

Each section is built by its own module, and its names are importable from here as well:
:mod:`~evaluations.facts_overview` (what was run), :mod:`~evaluations.facts_privacy`,
:mod:`~evaluations.facts_secagg`, :mod:`~evaluations.facts_utility`,
:mod:`~evaluations.facts_attacks`, :mod:`~evaluations.facts_audit` (empirical ε) and
:mod:`~evaluations.facts_verdict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evaluations.attack_results import AttackOutcome, headline_metrics
from evaluations.facts_attacks import attack_facts
from evaluations.facts_audit import (
    WHITEBOX_AUDIT_FILE,
    audit_reading,
    empirical_epsilon_facts,
    whitebox_audit_facts,
    whitebox_statement,
)
from evaluations.facts_overview import model_description, what_was_run
from evaluations.facts_privacy import epsilon_series, privacy_facts
from evaluations.facts_secagg import secagg_facts
from evaluations.facts_utility import SUPERVISED_NOTE, SUPERVISED_POINT_KEYS, supervised_facts, utility_facts
from evaluations.facts_verdict import verdict_facts
from evaluations.jsonio import as_float
from evaluations.rundata import RunData

__all__ = [
    "run_facts",
    "privacy_facts",
    "secagg_facts",
    "utility_facts",
    "supervised_facts",
    "SUPERVISED_POINT_KEYS",
    "SUPERVISED_NOTE",
    "attack_facts",
    "empirical_epsilon_facts",
    "whitebox_audit_facts",
    "WHITEBOX_AUDIT_FILE",
    "verdict_facts",
    "epsilon_series",
    "sweep_facts",
    "model_description",
    "audit_reading",
]


def run_facts(*, run: RunData, outcomes: Mapping[str, AttackOutcome]) -> dict[str, Any]:
    """All sections of a run report.

    Args:
        run: The run.
        outcomes: Its attack outcomes.

    Returns:
        ``{"kind": "run", "what_was_run", "privacy", "secure_aggregation", "utility", "attacks",
        "empirical_epsilon"}``.
    """
    privacy = privacy_facts(run=run)
    facts: dict[str, Any] = {
        "kind": "run",
        "what_was_run": what_was_run(run=run),
        "privacy": privacy,
        "secure_aggregation": secagg_facts(run=run),
        "utility": utility_facts(run=run),
        "attacks": attack_facts(outcomes=outcomes),
        "empirical_epsilon": empirical_epsilon_facts(outcomes=outcomes, privacy=privacy),
    }
    whitebox = whitebox_audit_facts(run_dir=run.path)
    facts["whitebox_audit"] = whitebox
    if (
        whitebox is not None
        and whitebox.get("status") == "ok"
        and facts["empirical_epsilon"]["status"] == "not run"
    ):
        # the canary audit was not run but the white-box one was: the empirical check is that one
        facts["empirical_epsilon"] = {
            "status": "whitebox",
            "rows": [],
            "statement": whitebox_statement(whitebox=whitebox, privacy=privacy),
        }
    facts["verdict"] = verdict_facts(facts=facts, whitebox=whitebox)
    return facts


def _point_row(
    *,
    point: Mapping[str, Any],
    loaded: tuple[RunData, Mapping[str, AttackOutcome]] | None,
    facts: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One row of the sweep table: what ``sweep.json`` records of the point, replaced by what its run
    directory shows when it has one (``loaded`` and its :func:`run_facts`)."""
    row: dict[str, Any] = {
        "name": str(point.get("name")),
        "target_epsilon": as_float(value=point.get("target_epsilon")),
        "learner": point.get("learner"),
        "aggregation": point.get("aggregation"),
        "status": point.get("status", "unknown"),
        "problem": point.get("problem"),
        "run_dir": point.get("run_dir"),
        "test_accuracy": as_float(value=point.get("test_accuracy")),
        "ci95": as_float(value=point.get("ci95")),
        "epsilon": as_float(value=point.get("epsilon")),
        "delta": as_float(value=point.get("delta")),
        "noise_multiplier": as_float(value=point.get("noise_multiplier")),
        "attacks": dict(point.get("attacks") or {}),
        **{k: point.get(k) for k in SUPERVISED_POINT_KEYS},
    }
    if loaded is None or facts is None:
        row["attack_metrics"] = dict(point.get("attack_metrics") or {})
        return row
    run, outcomes = loaded
    util, priv = facts["utility"], facts["privacy"]
    if util["test_accuracy"] is not None:
        row["test_accuracy"], row["ci95"] = util["test_accuracy"], util["ci95"]
    if util["supervised"]["applied"]:
        row.update({k: (run.summary or {}).get(k) for k in SUPERVISED_POINT_KEYS})
    row["epsilon"] = priv["epsilon"] if priv["applied"] else math.inf
    row["delta"] = priv["delta"]
    row["noise_multiplier"] = priv["noise_multiplier"]
    row["privacy_mode"] = priv["mode"]
    row["privacy_unit"] = priv["unit"]
    row["protocol"] = facts["secure_aggregation"]["protocol"]
    row["attack_metrics"] = headline_metrics(outcomes=outcomes)
    row["audit_ceiling"] = facts["empirical_epsilon"].get("ceiling")
    row["chance"] = util["chance"]
    summary = run.summary or {}
    if (base := as_float(value=summary.get("untrained_test_accuracy"))) is not None:
        row["untrained_accuracy"] = base
        row["untrained_ci95"] = as_float(value=summary.get("untrained_test_accuracy_ci95"))
    row["warnings"] = priv["warnings"]
    row["config_hash"] = facts["what_was_run"]["config_hash"]
    return row


def sweep_facts(
    *,
    sweep_dir: Path,
    sweep: Mapping[str, Any],
    runs: Mapping[str, tuple[RunData, Mapping[str, AttackOutcome]] | None],
) -> dict[str, Any]:
    """All sections of a sweep report.

    Args:
        sweep_dir: The sweep directory.
        sweep: Parsed ``sweep.json``.
        runs: Point name -> its run data and attack outcomes (``None`` when the point has no run).

    Returns:
        ``{"kind": "sweep", "what_was_run", "points", "notes", "first_run"}``; ``points`` has one row per
        grid point with the measured accuracy, ε and attack metrics.
    """
    points = []
    code_versions: set[str] = set()
    first_facts: dict[str, Any] | None = None
    for p in sweep.get("points", []):
        if not isinstance(p, Mapping):
            continue
        loaded = runs.get(str(p.get("name")))
        facts = run_facts(run=loaded[0], outcomes=loaded[1]) if loaded is not None else None
        points.append(_point_row(point=p, loaded=loaded, facts=facts))
        if facts is not None:
            first_facts = first_facts or facts
            if facts["what_was_run"]["code_version"]:
                code_versions.add(str(facts["what_was_run"]["code_version"]))
    # The untrained model on the same test tasks: sweep.json's, else the first point's that has one.
    untrained = as_float(value=sweep.get("untrained_test_accuracy"))
    untrained_ci = as_float(value=sweep.get("untrained_test_accuracy_ci95"))
    if untrained is None:
        with_base = [p for p in points if p.get("untrained_accuracy") is not None]
        if with_base:
            untrained, untrained_ci = with_base[0]["untrained_accuracy"], with_base[0].get("untrained_ci95")
    return {
        "kind": "sweep",
        "what_was_run": {
            "sweep_dir": str(sweep_dir),
            "config_path": sweep.get("config_path"),
            "base_config_hash": sweep.get("base_config_hash"),
            "code_version": ", ".join(sorted(code_versions)) or sweep.get("code_version"),
            "epsilons": sweep.get("epsilons"),
            "learners": sweep.get("learners"),
            "aggregations": sweep.get("aggregations"),
            "attacks": sweep.get("attacks"),
            "overrides": sweep.get("overrides"),
            "points": len(points),
            "sites": first_facts["what_was_run"]["sites"] if first_facts else [],
            "sites_statement": first_facts["what_was_run"]["sites_statement"]
            if first_facts
            else "No point has a run directory yet, so no per-site summary is available.",
            "dataset": first_facts["what_was_run"]["dataset"] if first_facts else None,
            "chance": first_facts["utility"]["chance"] if first_facts else None,
            "untrained_accuracy": untrained,
            "untrained_ci95": untrained_ci,
        },
        "notes": list(sweep.get("notes") or []),
        "points": points,
    }
