"""The attack-results facts of a run: per attack its explanation, status, metric rows and result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluations.attack_results import (
    AttackOutcome,
    InversionRow,
    audit_rows,
    inversion_rows,
    mia_rows,
    strongest_inversion,
    strongest_mia,
)
from evaluations.wording import fmt_num, fmt_pct

__all__ = ["attack_facts"]

_ATTACK_INTRO = {
    "inversion": (
        "Gradient inversion: can the server reconstruct a site's training images?",
        "The attacker takes exactly what a site sent to the server and searches for images that would "
        "produce it. PSNR (in dB; higher = closer to the original) and SSIM (0 to 1; 1 = identical) "
        "measure how close the reconstructions came. A reconstruction no better than the flat-image "
        "baseline reveals no more than the average brightness.",
    ),
    "mia": (
        "Membership inference: can an attacker tell whether a record was used in training?",
        "An AUC of 0.5 means the attacker does no better than guessing, 1.0 means perfect. The true-"
        "positive rate at a 0.1 % false-positive rate shows whether some records can be identified with "
        "high confidence, which matters more than the average.",
    ),
    "audit": (
        "Privacy audit: does the measured privacy loss stay within the guarantee?",
        "Canary records are inserted and an attacker tries to detect them. The detection rate gives an "
        "empirical lower bound on ε: with the stated confidence, the true ε is at least this large.",
    ),
}


def _inversion_statement(best: InversionRow) -> str:
    text = f"Best reconstruction ({best.attack}): PSNR {fmt_num(value=best.psnr)} dB"
    if best.ssim is not None:
        text += f", SSIM {fmt_num(value=best.ssim)}"
    if best.psnr is not None and best.flat_baseline_psnr is not None:
        gain = best.psnr - best.flat_baseline_psnr
        side = "above" if gain >= 0 else "below"
        meaning = (
            "the reconstructions carry real detail"
            if gain > 1.0
            else "they reveal little beyond average brightness"
        )
        text += f"; {fmt_num(value=abs(gain))} dB {side} the flat-image baseline: {meaning}"
    if best.sent_in_run is False:
        text += " (this scenario gives the server more than this run sent it)"
    return text + "."


def _mia_entry(data: Any) -> tuple[list[dict[str, Any]], str]:
    """The membership-inference rows and statement (strongest attack per level)."""
    rows = mia_rows(data=data)
    table = [
        {
            "attack": r.attack,
            "auc": r.auc,
            "balanced_accuracy": r.balanced_accuracy,
            "tpr_at_0.1%": r.tpr_at_fpr.get("0.001"),
            "tpr_at_1%": r.tpr_at_fpr.get("0.01"),
            "members": r.num_members,
            "non_members": r.num_nonmembers,
        }
        for r in rows
    ]
    parts = []
    for best in strongest_mia(rows=rows):
        low = best.tpr_at_fpr.get("0.001")
        text = f"strongest attack {best.attack}: AUC {fmt_num(value=best.auc)}"
        if low is not None:
            text += f", true-positive rate {fmt_pct(value=low)} at 0.1 % false positives"
        if best.num_members is not None and best.num_nonmembers is not None:
            text += f" ({best.num_members} members, {best.num_nonmembers} non-members"
            if best.num_nonmembers < 1000:
                text += f"; rates below 1/{best.num_nonmembers} cannot be resolved"
            text += ")"
        parts.append(text)
    joined = "; ".join(parts)
    statement = (
        f"{joined[:1].upper()}{joined[1:]}."
        if parts
        else "The result file holds no membership-inference metrics."
    )
    return table, statement


def _inversion_entry(data: Any) -> tuple[list[dict[str, Any]], str]:
    """The gradient-inversion rows and the statement on the best reconstruction."""
    irows = inversion_rows(data=data)
    table = [
        {
            "attack": r.attack,
            "psnr_db": r.psnr,
            "ssim": r.ssim,
            "mse": r.mse,
            "label_accuracy": r.label_accuracy,
            "flat_baseline_psnr_db": r.flat_baseline_psnr,
            **({"sent_in_run": r.sent_in_run} if any(x.sent_in_run is not None for x in irows) else {}),
        }
        for r in irows
    ]
    best = strongest_inversion(rows=irows)
    statement = (
        _inversion_statement(best) if best is not None else "The result file holds no reconstruction scores."
    )
    return table, statement


def _audit_entry(data: Any) -> tuple[list[dict[str, Any]], str]:
    """The canary audit's lower bounds and a statement on its design."""
    arows = audit_rows(data=data)
    table = [
        {
            "audit": r.name,
            "lower_bound": r.lower_bound,
            "confidence": r.confidence,
            "method": r.method,
            "delta": r.delta,
            "accountant_epsilon": r.accountant_epsilon,
        }
        for r in arows
    ]
    canaries = data.get("canaries") if isinstance(data, dict) else None
    design = ""
    if isinstance(canaries, dict) and isinstance(canaries.get("count"), int):
        design = f" The audit inserted {canaries['count']} canary records"
        if isinstance(canaries.get("included"), int):
            design += f", {canaries['included']} of them included in training"
        design += "."
    statement = (
        f"{len(arows)} empirical lower bound(s) found; see the comparison with the accountant's ε." + design
        if arows
        else "The result file holds no ε lower bound."
    )
    return table, statement


def attack_facts(*, outcomes: Mapping[str, AttackOutcome]) -> dict[str, Any]:
    """The attack-results section.

    Args:
        outcomes: From :func:`evaluations.attack_results.read_attacks`.

    Returns:
        Per attack: title, explanation, status, metric rows and a result statement.
    """
    out: dict[str, Any] = {}
    for name, o in outcomes.items():
        title, intro = _ATTACK_INTRO.get(name, (name, ""))
        entry: dict[str, Any] = {
            "title": title,
            "explanation": intro,
            "status": o.status,
            "problem": o.problem,
            "file": f"attacks/{o.path.name}" if o.path else None,
            "image": f"attacks/{o.image.name}" if o.image else None,
            "rows": [],
        }
        if o.status == "not run":
            entry["statement"] = "Not run: no result file was found for this attack."
        elif o.status == "unreadable":
            entry["statement"] = f"The result file could not be read: {o.problem}"
        else:
            build = {"mia": _mia_entry, "inversion": _inversion_entry}.get(name, _audit_entry)
            entry["rows"], entry["statement"] = build(o.data)
        out[name] = entry
    return out
