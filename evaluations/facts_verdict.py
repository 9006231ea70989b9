"""The verdict box at the top of a run report: guarantee, trust, utility, attacks and audit, a row each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluations.wording import fmt_eps, fmt_num, fmt_pct, trust_words

__all__ = ["verdict_facts"]


def _audit_verdict(
    *,
    whitebox: Mapping[str, Any] | None,
    empirical: Mapping[str, Any],
    dp: bool,
    run_epsilon: float | None = None,
) -> str:
    parts: list[str] = []
    if whitebox is not None and whitebox.get("status") == "ok":
        lb, ceiling, m = whitebox.get("lower_bound"), whitebox.get("ceiling"), whitebox.get("canaries")
        text = f"white-box canary audit: proved ε ≥ {fmt_num(value=lb)}"
        acc = whitebox.get("accountant_epsilon")
        text += f" (accountant ε = {fmt_eps(eps=acc)}" if acc is not None else " (no DP: no accountant ε"
        if acc is not None and run_epsilon is not None and abs(acc - run_epsilon) > 0.01 * max(acc, 1.0):
            # the audit accounts for the mechanism it replays (e.g. every record at rate q); the run's
            # accountant may be tighter (class-aware participation): both are shown
            text += f" for the mechanism the audit replays; the run states ε = {fmt_eps(eps=run_epsilon)}"
        text += ")"
        if whitebox.get("fdp_epsilon") is not None:
            text += (
                "; its f-DP analysis (Mahloujifar et al. 2025) proves "
                f"ε ≥ {fmt_num(value=whitebox['fdp_epsilon'])}"
                f" (ceiling {fmt_num(value=whitebox.get('fdp_ceiling'))})"
            )
        cc = whitebox.get("canary_clients")
        if isinstance(cc, Mapping):
            text += f"; canary clients (Andrew et al. 2024) estimate ε ≈ {fmt_num(value=cc.get('estimate'))}"
        if whitebox.get("violation"):
            text += "; VIOLATION: more leakage than the accountant allows, the guarantee is refuted"
        elif lb is not None and lb <= 1e-9:
            text += "; 0 means this audit detected no leakage, not that nothing leaks"
        if ceiling is not None:
            text += (
                f". Its power: with {m if m is not None else 'its'} canaries this audit cannot detect "
                f"leakage beyond ε = {fmt_num(value=ceiling)} (its ceiling), so a smaller bound than the "
                "accountant's does not show the accountant is loose"
            )
            if acc is not None and ceiling < acc:
                text += f"; it cannot test the accountant's ε = {fmt_eps(eps=acc)} at all"
        parts.append(text)
    elif whitebox is not None:
        parts.append(f"white-box audit result unreadable ({whitebox.get('problem')})")
    if empirical.get("status") == "ok":
        parts.append(f"black-box audit: {empirical['statement']}")
    if not parts:
        return "not run (secfed attack RUN_DIR --attack whitebox-audit, about 10 s): the accountant's ε " + (
            "is not checked empirically" if dp else "— there is none: no DP"
        )
    return "; ".join(parts)


def verdict_facts(*, facts: Mapping[str, Any], whitebox: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The verdict box at the top of a run report: guarantee, utility, attacks, audit.

    Args:
        facts: The run's sections (``privacy``, ``secure_aggregation``, ``utility``, ``attacks``,
            ``empirical_epsilon`` as :func:`evaluations.facts.run_facts` builds them).
        whitebox: :func:`~evaluations.facts_audit.whitebox_audit_facts` of the run (``None``: not run).

    Returns:
        ``rows`` (``(label, text)`` pairs, in this order: guarantee, trust, utility, attacks,
        audit) and ``beat_untrained``.
    """
    p, sa, u, a = facts["privacy"], facts["secure_aggregation"], facts["utility"], facts["attacks"]
    dp = bool(p.get("applied"))
    if dp:
        guarantee = (
            f"ε = {fmt_eps(eps=p.get('epsilon'))} at δ = {fmt_num(value=p.get('delta'))} per "
            f"{p.get('unit') or 'unit (not recorded)'} ({p.get('mode')}-level DP, "
            f"{p.get('accountant') or 'accountant not recorded'} accountant)"
        )
    else:
        guarantee = "none claimed: no differential privacy was applied (ε = ∞)"
    trust = trust_words(
        mode=p.get("mode") if dp else "none",
        protocol=sa.get("protocol_name") if sa.get("protocol") not in (None, "plain") else None,
        trust_assumption=p.get("trust_assumption"),
    )
    mia = a.get("mia") or {}
    attack_parts: list[str] = []
    if mia.get("status") == "ok" and mia.get("rows"):
        # the record-level attacks when there are any (the usual privacy unit; a client-level
        # attack has a handful of members, too few to resolve low false-positive rates)
        rows = [r for r in mia["rows"] if str(r.get("attack", "")).startswith("record")] or mia["rows"]
        best = max(rows, key=lambda r: r.get("auc") if r.get("auc") is not None else -1.0)
        text = f"membership inference ({best.get('attack')}): AUC {fmt_num(value=best.get('auc'))}"
        for key, label in (("tpr_at_0.1%", "0.1 %"), ("tpr_at_1%", "1 %")):
            if best.get(key) is not None:
                text += f", true-positive rate {fmt_pct(value=best[key])} at {label} false positives"
                break
        if best.get("members") is not None and best.get("non_members") is not None:
            text += f" over {best['members']} members and {best['non_members']} non-members"
        text += " (AUC 0.5 = guessing; strongest of the record-level attacks)"
        attack_parts.append(text)
    inv = a.get("inversion") or {}
    if inv.get("status") == "ok":
        attack_parts.append(f"gradient inversion: {inv.get('statement')}")
    attacks = (
        "; ".join(attack_parts)
        if attack_parts
        else "none run (secfed attack RUN_DIR --attack mia): no attack result to show"
    )
    return {
        "rows": [
            ("Guarantee", guarantee),
            ("Trust assumptions", trust),
            ("Utility", u.get("baseline") or "not recorded"),
            ("Attacks", attacks),
            (
                "Audit",
                _audit_verdict(
                    whitebox=whitebox,
                    empirical=facts["empirical_epsilon"],
                    dp=dp,
                    run_epsilon=p.get("epsilon") if dp else None,
                ),
            ),
        ],
        "beat_untrained": u.get("beat_untrained"),
    }
