"""The secure-aggregation facts of a run: protocol, n, k, t, threat model and dropouts per round."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evaluations.jsonio import as_float
from evaluations.rundata import RunData
from evaluations.wording import fmt_pct

__all__ = ["secagg_facts"]

_PROTOCOLS = {
    "secagg": "SecAgg (Bonawitz et al. 2017)",
    "secagg+": "SecAgg+ (Bell et al. 2020)",
    "plain": "none (plain sum)",
}


def _span(values: Sequence[Any]) -> str | None:
    nums = sorted({int(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not nums:
        return None
    return str(nums[0]) if len(nums) == 1 else f"{nums[0]}–{nums[-1]}"


def secagg_facts(*, run: RunData) -> dict[str, Any]:
    """The secure-aggregation section: protocol, n, k, t, threat model and dropouts per round.

    Args:
        run: The run.

    Returns:
        The section's facts.
    """
    rows = [m for m in run.metrics if isinstance(m.get("round"), int)]
    protocols = sorted({str(m["agg_protocol"]) for m in rows if m.get("agg_protocol")})
    protocol = (
        protocols[-1]
        if protocols
        else (run.summary or {}).get("aggregation") or run.setting(key="federation.aggregation")
    )
    applied = protocol in ("secagg", "secagg+")
    active = run.setting(key="secagg.active")
    corrupt = as_float(value=run.setting(key="secagg.corrupt_fraction"))
    adversary = None
    if applied and active is None:
        adversary = "not recorded"
    elif applied and active:
        adversary = (
            "active (malicious) server: signatures and a consistency check detect a server that deviates "
            "from the protocol"
        )
    elif applied:
        adversary = (
            "honest-but-curious server: it follows the protocol but may try to learn from everything it sees"
        )
    per_round = []
    for m in rows:
        per_round.append(
            {
                "round": m["round"],
                "included": len(m.get("clients") or []),
                "dropped": list(m.get("dropped") or []),
                "stragglers": list(m.get("stragglers") or []),
                "survivors": m.get("agg_survivors"),
                "aborted": bool(m.get("agg_aborted")),
                "skipped": bool(m.get("skipped")),
            }
        )
    total_drop = sum(len(r["dropped"]) for r in per_round)
    total_strag = sum(len(r["stragglers"]) for r in per_round)
    sent = [f for m in rows if (f := as_float(value=m.get("agg_bytes_sent_per_client"))) is not None]
    n, k, t = (_span([m.get(f"agg_{x}") for m in rows]) for x in ("n", "k", "t"))
    aborted = sum(1 for r in per_round if r["aborted"])
    if not protocol:
        statement = "How site updates were combined was not recorded."
    elif not applied:
        statement = (
            "Secure aggregation was not used: the coordinating server received each site's model update "
            "in the clear and summed them. Only differential privacy (if applied) limits what the server "
            "can learn from an individual site's update."
        )
    else:
        name = _PROTOCOLS.get(protocol, protocol)
        extra = (
            f" Each site exchanges keys with k = {k} neighbours instead of all other sites."
            if protocol == "secagg+" and k
            else ""
        )
        statement = (
            f"Site updates were combined with secure aggregation, {name}: the server learns only the sum "
            f"of the updates of the sites that completed a round, never a single site's update, as long as "
            f"fewer than t = {t or 'unrecorded'} of the n = {n or 'unrecorded'} participants of a round "
            f"collude with it.{extra} Threat model: {adversary}; assumed fraction of corrupt sites: "
            f"{fmt_pct(value=corrupt) if corrupt is not None else 'not recorded'}. A site that drops out "
            "during a round is left out of that round's sum; its secret mask is removed by the remaining "
            "sites."
        )
    return {
        "applied": applied,
        "protocol": protocol,
        "protocol_name": _PROTOCOLS.get(str(protocol), protocol) if protocol else None,
        "n": n,
        "k": k,
        "t": t,
        "threat_model": {
            "adversary": "active" if active else ("honest-but-curious" if active is not None else None),
            "description": adversary,
            "corrupt_fraction": corrupt,
        },
        "bytes_sent_per_client": (sum(sent) / len(sent)) if sent else None,
        "rounds": per_round,
        "total_dropouts": total_drop,
        "total_stragglers": total_strag,
        "aborted_rounds": aborted,
        "statement": statement,
        "dropout_statement": (
            f"Across {len(per_round)} rounds, {total_drop} site-rounds were lost to dropouts and "
            f"{total_strag} to late answers (stragglers)"
            + (f"; {aborted} rounds were aborted by the protocol." if aborted else ".")
            if per_round
            else "No per-round records (metrics.jsonl) were found."
        ),
    }
