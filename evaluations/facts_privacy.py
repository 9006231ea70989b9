"""The privacy-guarantee facts of a run: ε per site and round, δ, unit, accountant, the ledger's check."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from evaluations.jsonio import as_float
from evaluations.rundata import RunData
from evaluations.wording import (
    adjacency_words,
    epsilon_explanation,
    fmt_eps,
    fmt_num,
    strength_words,
    unit_words,
)

__all__ = ["epsilon_series", "privacy_facts"]

_REL_TOL = 1e-6


def _eps_map(raw: Any) -> dict[str, float]:
    if isinstance(raw, Mapping):
        return {str(k): f for k, v in raw.items() if (f := as_float(value=v)) is not None}
    if isinstance(raw, list):
        return {str(i): f for i, v in enumerate(raw) if (f := as_float(value=v)) is not None}
    return {}


def _close(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= _REL_TOL * max(1.0, abs(a), abs(b))


def _site_key(name: str) -> str:
    """Site names may be ``"0"`` or ``"site0"``; compare on the trailing number when there is one."""
    digits = "".join(ch for ch in name if ch.isdigit())
    return digits if digits and name.rstrip("0123456789") in ("", "site", "site_", "site-") else name


def epsilon_series(*, run: RunData) -> dict[str, list[tuple[int, float]]]:
    """Cumulative ε per round, per site and globally: from the ledger, else from ``metrics.jsonl``.

    Args:
        run: The run.

    Returns:
        Label (``"site 0"``, ..., ``"global"``) -> ``(round, ε)`` points.
    """
    series: dict[str, list[tuple[int, float]]] = {}
    if run.ledger.rounds:
        for r in run.ledger.rounds:
            for site, eps in r.sites.items():
                series.setdefault(f"site {site}", []).append((r.round, eps))
            if r.global_epsilon is not None:
                series.setdefault("global (client-level)", []).append((r.round, r.global_epsilon))
        return series
    for row in run.metrics:
        rnd = row.get("round")
        if not isinstance(rnd, int):
            continue
        for site, eps in _eps_map(row.get("epsilon_sites")).items():
            series.setdefault(f"site {site}", []).append((rnd, eps))
        if (run_eps := as_float(value=row.get("epsilon"))) is not None:
            series.setdefault("run ε", []).append((rnd, run_eps))
    return series


def _dp_applied(mode: str) -> bool:
    return mode not in ("none", "unknown")


def _parameters(run: RunData, mode: str) -> dict[str, Any]:
    """ε (per site, final, global), δ, unit, adjacency, accountant, mechanism and σ of the run.

    Each comes from ``summary.json`` first, then the last row of ``metrics.jsonl``, then the ledger,
    and, where DP was configured, from the configuration as a last resort.
    """
    s = run.summary or {}
    last_row = run.metrics[-1] if run.metrics else {}
    ledger = run.ledger
    last = ledger.rounds[-1] if ledger.rounds else None
    eps_sites = _eps_map(s.get("epsilon_sites")) or _eps_map(last_row.get("epsilon_sites"))
    if not eps_sites and last is not None:
        eps_sites = dict(last.sites)
    epsilon = as_float(value=s.get("epsilon"))
    if epsilon is None:
        epsilon = as_float(value=last_row.get("epsilon"))
    global_eps = last.global_epsilon if last is not None else None
    if epsilon is None and eps_sites:
        epsilon = max(eps_sites.values())
    delta = as_float(value=s.get("delta"))
    if delta is None:
        delta = as_float(value=last_row.get("delta"))
    if delta is None:
        delta = ledger.delta
    if delta is None and _dp_applied(mode):
        delta = as_float(value=run.setting(key="privacy.delta"))

    rec: Mapping[str, Any] = {}
    if last is not None:
        rec = next(iter(last.records.values()), {}) or last.global_record or {}
    accountant = (
        s.get("accountant")
        or ledger.accountant
        or (run.setting(key="privacy.accountant") if _dp_applied(mode) else None)
    )
    mechanism = (
        s.get("mechanism")
        or rec.get("mechanism")
        or (run.setting(key="privacy.mechanism") if _dp_applied(mode) else None)
    )
    sigma = as_float(value=s.get("noise_multiplier"))
    if sigma is None and rec:
        sigma = as_float(value=rec.get("noise_multiplier"))
    if sigma is None and _dp_applied(mode) and not as_float(value=run.setting(key="privacy.target_epsilon")):
        sigma = as_float(
            value=run.setting(key="privacy.noise_multiplier")
        )  # not calibrated at run time: as configured
    return {
        "epsilon_sites": eps_sites,
        "epsilon": epsilon,
        "global_epsilon": global_eps,
        "delta": delta,
        "unit": s.get("privacy_unit") or rec.get("privacy_unit"),
        "adjacency": s.get("adjacency") or rec.get("adjacency"),
        "accountant": accountant,
        "mechanism": mechanism,
        "noise_multiplier": sigma,
    }


def _ledger_check(run: RunData, eps_sites: Mapping[str, float]) -> tuple[dict[str, Any], list[str]]:
    """The ledger's facts and warnings: its integrity, agreement with ``summary.json``, its last round."""
    ledger = run.ledger
    last = ledger.rounds[-1] if ledger.rounds else None
    warnings: list[str] = []
    facts: dict[str, Any] = {
        "present": ledger.present,
        "file": ledger.path.name if ledger.path else None,
        "verified": ledger.verified,
        "integrity": ledger.integrity,
        "problem": ledger.problem,
        "rounds": len(ledger.rounds),
        "consistent_with_summary": None,
    }
    if ledger.present and ledger.integrity == "unverifiable":
        warnings.append(
            f"The privacy ledger's integrity cannot be verified ({ledger.problem}): the ε it records is "
            "unconfirmed."
        )
    elif ledger.present and not ledger.verified:
        warnings.append(f"The privacy ledger failed its integrity check: {ledger.problem}")
    if last is not None and eps_sites:
        ours = {_site_key(k): v for k, v in eps_sites.items()}
        theirs = {_site_key(k): v for k, v in last.sites.items()}
        common = set(ours) & set(theirs)
        if common:
            bad = sorted(k for k in common if not _close(ours[k], theirs[k]))
            facts["consistent_with_summary"] = not bad
            if bad:
                warnings.append(
                    "The ε reported in summary.json differs from the ledger's last entry for site(s) "
                    + ", ".join(bad)
                )
    if last is not None and run.metrics:
        last_round = max(
            (m.get("round", 0) for m in run.metrics if isinstance(m.get("round"), int)), default=0
        )
        if last.round < last_round:
            warnings.append(
                f"The ledger ends at round {last.round} but metrics.jsonl reports round {last_round}: "
                "rounds without a ledger entry have no recorded privacy cost."
            )
    return facts, warnings


_WHO = {
    "record": "Each site's individual records are protected by record-level differential privacy "
    "(noisy, clipped training steps inside each site: DP-SGD, Abadi et al. 2016).",
    "client": "Each site as a whole is protected by client-level differential privacy "
    "(clipped site updates with noise added by the aggregator: DP-FedAvg, McMahan et al. 2018).",
    "distributed": "Each site as a whole is protected by distributed differential privacy: "
    "every site adds a share of the noise itself and the shares are summed under secure aggregation "
    "(Kairouz et al. 2021; Agarwal et al. 2021).",
}


def _statement(mode: str, params: Mapping[str, Any], trust_assumption: Any) -> tuple[str, str, list[str]]:
    """The guarantee in words: ``(statement, explanation, warnings)``."""
    epsilon, delta, unit = params["epsilon"], params["delta"], params["unit"]
    if mode == "none":
        statement = (
            "No differential privacy was applied. The trained model and the updates sent by the sites "
            "carry no formal guarantee about any individual record or site."
        )
        explanation = (
            "Without differential privacy, protection rests only on the sites never sharing raw data "
            "(and on secure aggregation, if used). The attack results below show what could still be learned."
        )
        return statement, explanation, []
    if mode == "unknown":
        statement = (
            "Whether differential privacy was applied cannot be told: the run's configuration is missing."
        )
        return statement, "", []
    if epsilon is None and not params["epsilon_sites"]:
        statement = (
            f"Differential privacy was configured (mode '{mode}') but no ε was recorded in this run "
            "directory, so the guarantee cannot be confirmed from it."
        )
        explanation = epsilon_explanation(eps=None, delta=delta, unit=unit)
        return statement, explanation, ["Differential privacy was configured but no ε was recorded."]
    who = _WHO.get(mode, f"Differential privacy mode '{mode}' was applied.")
    statement = (
        f"{who} The protected unit is {unit_words(unit=unit)}; neighbouring datasets differ by "
        f"{adjacency_words(adjacency=params['adjacency'])}. The final guarantee is ε = "
        f"{fmt_eps(eps=epsilon)} at δ = {fmt_num(value=delta)}, computed by the "
        f"{params['accountant'] or 'unrecorded'} accountant: {strength_words(eps=epsilon)}."
    )
    if trust_assumption:  # record-level noise shared across sites under SecAgg
        statement += f" Trust assumption: {trust_assumption}."
    return statement, epsilon_explanation(eps=epsilon, delta=delta, unit=unit), []


def privacy_facts(*, run: RunData) -> dict[str, Any]:
    """The privacy-guarantee section of a run.

    Args:
        run: The run.

    Returns:
        Mode, unit, adjacency, δ, final ε per site and global, accountant, the ledger's status, a
        plain-language statement and warnings about anything inconsistent or missing.
    """
    s = run.summary or {}
    mode = s.get("mode") or run.setting(key="privacy.mode") or ("unknown" if not run.config else "none")
    applied = _dp_applied(mode)
    params = _parameters(run, mode)
    ledger_facts, warnings = _ledger_check(run, params["epsilon_sites"])
    statement, explanation, statement_warnings = _statement(mode, params, s.get("trust_assumption"))
    warnings += statement_warnings
    if s.get("stopped_early"):
        warnings.append(f"Training stopped early: {s['stopped_early']}")
    if applied and not run.ledger.present:
        warnings.append("No privacy ledger was found in the run directory.")

    budget = as_float(value=s.get("epsilon_budget"))
    if budget is None and applied:
        budget = as_float(value=run.setting(key="privacy.epsilon_budget"))
    clip = as_float(value=s.get("max_grad_norm"))
    if clip is None and applied:
        clip = as_float(value=run.setting(key="privacy.max_grad_norm"))
    if mode == "record":
        eps_label, site_label = "Final ε (largest over the sites)", "Final record-level ε per site"
        global_note = "not applicable: record-level DP protects records, not whole sites"
    else:
        eps_label = "Final ε (client level: one whole site)"
        site_label = "Record-level ε bound per site (implied by the noise on the aggregate)"
        global_note = "not recorded"
    return {
        "applied": applied,
        "mode": mode,
        "unit": params["unit"],
        "adjacency": params["adjacency"],
        "delta": params["delta"],
        "epsilon": params["epsilon"],
        "epsilon_sites": params["epsilon_sites"],
        "global_epsilon": params["global_epsilon"],
        "accountant": params["accountant"],
        "mechanism": params["mechanism"],
        "noise_multiplier": params["noise_multiplier"],
        "epsilon_unit": s.get("epsilon_unit"),
        "epsilon_label": eps_label,
        "epsilon_sites_label": site_label,
        "global_epsilon_note": global_note,
        "max_grad_norm": clip,
        "target_epsilon": as_float(value=run.setting(key="privacy.target_epsilon")) if applied else None,
        "client_sampling": s.get("client_sampling"),
        "trust_assumption": s.get("trust_assumption"),
        "epsilon_budget": budget if budget else None,
        "ledger": ledger_facts,
        "statement": statement,
        "explanation": explanation,
        "warnings": warnings,
    }
