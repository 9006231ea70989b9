"""Empirical ε of a run: canary-audit lower bounds and the white-box audit, beside the accountant's ε."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evaluations.attack_results import AttackOutcome, audit_rows
from evaluations.errors import ReportInputError
from evaluations.jsonio import as_float, read_json
from evaluations.wording import fmt_eps, fmt_num

__all__ = [
    "audit_reading",
    "empirical_epsilon_facts",
    "whitebox_audit_facts",
    "whitebox_statement",
    "WHITEBOX_AUDIT_FILE",
]


def _ceiling(data: Any) -> float | None:
    """The largest finite ``ceiling`` an audit result carries (the most its canaries could show)."""
    found: list[float] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            for k, v in obj.items():
                if "ceiling" in str(k) and (c := as_float(value=v)) is not None and math.isfinite(c):
                    found.append(c)
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(data)
    return max(found) if found else None


def audit_reading(*, lower_bound: float, dp_applied: bool, ceiling: float | None) -> str:
    """What an empirical ε lower bound means, in words, so that 0.00 is not read as "no leakage".

    Args:
        lower_bound: The audit's lower bound on ε.
        dp_applied: Whether the run had differential privacy.
        ceiling: The largest bound the audit could have shown with its canaries, if known.

    Returns:
        One or two sentences.
    """
    power = (
        f" With its canaries this audit cannot show more than ε = {fmt_num(value=ceiling)} (its ceiling)."
        if ceiling is not None
        else ""
    )
    if lower_bound <= 1e-9:
        text = (
            "0 means that this audit detected no leakage with its canaries; it does not show that "
            "nothing leaks"
        )
        text += (
            ": the run had no differential privacy (no guarantee, ε = ∞)."
            if not dp_applied
            else " (the accountant's ε is the guarantee)."
        )
        return text + power
    if not dp_applied:
        return (
            f"The audit proves that the run leaks at least ε = {fmt_num(value=lower_bound)}; "
            "the run had no differential privacy (no guarantee, ε = ∞)." + power
        )
    return (
        f"The audit proves a privacy loss of at least ε = {fmt_num(value=lower_bound)}; the accountant's ε "
        "bounds every attack from above." + power
    )


def empirical_epsilon_facts(
    *, outcomes: Mapping[str, AttackOutcome], privacy: Mapping[str, Any]
) -> dict[str, Any]:
    """Empirical ε lower bounds beside the accountant's ε, with a verdict per bound.

    Args:
        outcomes: Attack outcomes (the audit's is used).
        privacy: The run's :func:`~evaluations.facts_privacy.privacy_facts`.

    Returns:
        Rows of ``name, lower_bound, confidence, method, accountant_epsilon, accountant_source,
        verdict`` and a statement.
    """
    audit = outcomes.get("audit")
    if audit is None or audit.status != "ok":
        missing = audit is None or audit.status == "not run"
        reason = (
            "Not run: no privacy audit result (attacks/audit.json) was found."
            if missing
            else f"The privacy audit result could not be read ({audit.problem if audit else ''})."
        )
        return {
            "status": "not run" if missing else "unreadable",
            "rows": [],
            "statement": f"{reason} The accountant's ε "
            f"({fmt_eps(eps=privacy.get('epsilon')) if privacy.get('applied') else '∞, no DP'}) is therefore "
            "not checked empirically.",
        }
    rows: list[dict[str, Any]] = []
    violations = 0
    ceiling = _ceiling(audit.data)
    dp_applied = bool(privacy.get("applied"))
    for r in audit_rows(data=audit.data):
        acc, source = r.accountant_epsilon, "audit.json"
        if acc is None:
            acc = privacy.get("epsilon") if privacy.get("applied") else math.inf
            source = "summary.json" if privacy.get("applied") else "no DP (ε = ∞)"
        if acc is None:
            verdict = "no accountant ε to compare with"
        elif r.lower_bound > acc * (1 + 1e-9):
            verdict = "VIOLATION: the measured lower bound exceeds the accountant's ε"
            violations += 1
        else:
            verdict = "consistent: the measured lower bound does not exceed the accountant's ε"
        rows.append(
            {
                "audit": r.name,
                "lower_bound": r.lower_bound,
                "confidence": r.confidence,
                "method": r.method,
                "delta": r.delta,
                "accountant_epsilon": acc,
                "accountant_source": source,
                "verdict": verdict,
                "note": r.note,
                "ceiling": ceiling,
                "reading": audit_reading(lower_bound=r.lower_bound, dp_applied=dp_applied, ceiling=ceiling),
            }
        )
    if not rows:
        statement = "The audit file holds no ε lower bound."
    elif violations:
        statement = (
            f"{violations} of {len(rows)} audit(s) measured more privacy loss than the accountant allows: "
            "the stated guarantee is refuted for this run and must not be relied on."
        )
    else:
        statement = (
            f"All {len(rows)} audit(s) stay within the accountant's ε. A lower bound well below ε does "
            "not show that ε is loose: audits measure what one attack achieves, the accountant bounds "
            "every attack."
        )
    if rows and not dp_applied and all(r["lower_bound"] <= 1e-9 for r in rows):
        statement += (
            " The bound is 0 and the run had no differential privacy: this audit detected no leakage "
            "with its canaries, which is not evidence that the run is private (it has no guarantee)."
        )
    if rows and ceiling is not None:
        statement += f" This audit cannot show more than ε = {fmt_num(value=ceiling)} with its canaries."
    return {
        "status": "ok",
        "rows": rows,
        "violations": violations,
        "ceiling": ceiling,
        "statement": statement,
    }


#: The white-box audit's result file inside ``RUN_DIR/attacks`` (:mod:`attacks.secfed_whitebox`).
WHITEBOX_AUDIT_FILE = "whitebox_audit.json"


def whitebox_audit_facts(*, run_dir: Path) -> dict[str, Any] | None:
    """The white-box audit's bound and its power, from ``RUN_DIR/attacks/whitebox_audit.json``.

    Args:
        run_dir: The run directory.

    Returns:
        ``None`` when the audit was not run; else ``status`` (``ok`` or ``unreadable``) and, when
        readable, ``lower_bound`` (the proven one-run ε), ``ceiling`` (the most its canaries could
        prove), ``gdp_epsilon``, ``fdp_epsilon`` (the one-run f-DP bound, Mahloujifar et al. 2025;
        ``None`` when not computed), ``canary_clients`` (client-level and distributed runs: the
        Andrew et al. 2024 estimate, ``None`` otherwise), ``canaries``, ``accountant_epsilon`` and
        ``violation``.
    """
    path = run_dir / "attacks" / WHITEBOX_AUDIT_FILE
    if not path.exists():
        return None
    try:
        doc = read_json(path=path)
    except ReportInputError as exc:
        return {"status": "unreadable", "problem": str(exc)}
    if not isinstance(doc, Mapping):
        return {"status": "unreadable", "problem": f"{path} is not a JSON object"}

    def section(key: str) -> Mapping[str, Any]:
        value = doc.get(key)
        return value if isinstance(value, Mapping) else {}

    one_run, gdp, cfg = section("one_run"), section("gdp"), section("config")
    fdp, cc = section("fdp_one_run"), section("canary_clients")
    canaries = cfg.get("num_canaries")
    return {
        "status": "ok",
        "lower_bound": as_float(value=one_run.get("epsilon")),
        "ceiling": as_float(value=one_run.get("ceiling")),
        "gdp_epsilon": as_float(value=gdp.get("epsilon")),
        "fdp_epsilon": as_float(value=fdp.get("epsilon")) if fdp else None,
        "fdp_ceiling": as_float(value=fdp.get("ceiling_epsilon")) if fdp else None,
        "canary_clients": (
            {
                "estimate": as_float(value=cc.get("epsilon_estimate")),
                "violation": bool(cc.get("violation")),
            }
            if cc
            else None
        ),
        "canaries": int(canaries) if isinstance(canaries, int) else None,
        "accountant_epsilon": as_float(value=doc.get("accountant_epsilon")),
        "violation": bool(doc.get("violation")) or bool(cc.get("violation")),
    }


def whitebox_statement(*, whitebox: Mapping[str, Any], privacy: Mapping[str, Any]) -> str:
    """One sentence on the white-box audit's bound, its ceiling and the accountant's ε.

    Args:
        whitebox: :func:`whitebox_audit_facts` of the run, readable (``status`` ``ok``).
        privacy: The run's :func:`~evaluations.facts_privacy.privacy_facts`.

    Returns:
        The statement (with the violation, when the audit found one).
    """
    claimed = fmt_eps(eps=privacy.get("epsilon")) if privacy.get("applied") else "∞, no DP"
    text = (
        f"The white-box canary audit proves ε ≥ {fmt_num(value=whitebox.get('lower_bound'))} "
        f"(run's accountant: {claimed})."
    )
    ceiling, canaries = whitebox.get("ceiling"), whitebox.get("canaries")
    if ceiling is not None:
        text += (
            f" With {canaries if canaries is not None else 'its'} canaries it cannot detect leakage beyond "
            f"ε = {fmt_num(value=ceiling)}."
        )
    if whitebox.get("violation"):
        text += (
            " It finds MORE leakage than the accountant allows: the implementation or its accounting "
            "is broken."
        )
    return text
