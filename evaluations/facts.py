"""The facts of an audit report, as plain JSON-able dicts (pure functions of what was read).

:func:`run_facts` turns a :class:`~evaluations.rundata.RunData` and its attack outcomes into the
sections of a run report; :func:`sweep_facts` does the same for a sweep directory. The HTML and
Markdown renderers only lay these facts out, so the three report files always agree. Every piece
that the run does not have (no differential privacy, no secure aggregation, an attack that was not
run, an unfinished run) is stated as such instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evaluations.attack_results import (
    AttackOutcome,
    InversionRow,
    audit_rows,
    headline_metrics,
    inversion_rows,
    mia_rows,
    strongest_inversion,
    strongest_mia,
)
from evaluations.errors import ReportInputError
from evaluations.jsonio import as_float, read_json
from evaluations.rundata import RunData
from evaluations.wording import (
    adjacency_words,
    baseline_words,
    epsilon_explanation,
    fmt_eps,
    fmt_num,
    fmt_pct,
    strength_words,
    trust_words,
    unit_words,
)
from secfed.config import config_from_dict, config_hash
from secfed.errors import SecfedError
from secfed.federation.egress import WITHHELD_NOTE

__all__ = [
    "run_facts",
    "privacy_facts",
    "secagg_facts",
    "utility_facts",
    "supervised_facts",
    "SUPERVISED_POINT_KEYS",
    "attack_facts",
    "empirical_epsilon_facts",
    "epsilon_series",
    "sweep_facts",
    "model_description",
    "audit_reading",
]

_REL_TOL = 1e-6
_PROTOCOLS = {
    "secagg": "SecAgg (Bonawitz et al. 2017)",
    "secagg+": "SecAgg+ (Bell et al. 2020)",
    "plain": "none (plain sum)",
}


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


# --------------------------------------------------------------------------------------------------
# What was run
# --------------------------------------------------------------------------------------------------


_ARCH_NAMES = {"mlp": "MLP", "conv4": "Conv-4"}
_NORM_NAMES = {"none": "no normalisation", "batch": "BatchNorm", "group": "GroupNorm"}


def model_description(*, run: RunData) -> str | None:
    """The model in words, e.g. "MLP, 1 hidden layer of 512 units, no normalisation" or "Conv-4, 64
    filters per layer, GroupNorm (8 groups), on a fixed ScatterNet front-end (J = 2, L = 8)".

    Args:
        run: The run.

    Returns:
        The description, or ``None`` when the configuration does not name the architecture.
    """
    arch = run.setting(key="model.arch")
    if not arch:
        return None
    hidden, norm = run.setting(key="model.hidden"), run.setting(key="model.norm")
    parts = [_ARCH_NAMES.get(str(arch), str(arch))]
    if arch == "mlp":
        layers = run.setting(key="model.layers", default=1)
        if layers == 0:
            parts.append("no hidden layer (the embedding is the input features)")
        else:
            plural = "s" if layers != 1 else ""
            parts.append(f"{layers} hidden layer{plural} of {hidden} units")
    else:
        parts.append(f"{hidden} filters per layer")
    norm_text = _NORM_NAMES.get(str(norm), f"{norm} normalisation")
    if norm == "group" and run.setting(key="model.groups") is not None:
        norm_text += f" ({run.setting(key='model.groups')} groups)"
    parts.append(norm_text)
    text = ", ".join(parts)
    if run.setting(key="model.frontend") == "scatter":
        text += (
            f", on a fixed ScatterNet front-end (J = {run.setting(key='model.scatter_j')}, "
            f"L = {run.setting(key='model.scatter_l')}; no trainable parameters)"
        )
    return text


def _what_was_run(run: RunData) -> dict[str, Any]:
    s = run.summary or {}
    sites = []
    for key, info in sorted((run.sites or {}).items(), key=lambda kv: (len(kv[0]), kv[0])):
        sites.append(
            {
                "site": info.get("site", key),
                "records": info.get("records"),
                "classes": info.get("classes"),
                "withheld": "records" in (info.get("withheld") or []),
            }
        )
    records = [int(r["records"]) for r in sites if isinstance(r.get("records"), int)]
    withheld = any(r["withheld"] for r in sites)
    model = model_description(run=run)
    fingerprint = s.get("config_hash")
    if not fingerprint and run.config:
        try:  # an unfinished run: fingerprint its resolved configuration the way the runtime does
            fingerprint = config_hash(config_from_dict(run.config))
        except SecfedError:
            fingerprint = None
    status = "complete" if run.summary is not None else "unfinished (no summary.json yet)"
    if s.get("stopped_early"):
        status = f"stopped early: {s['stopped_early']}"
    return {
        "run_dir": str(run.path),
        "name": run.setting(key="experiment.name"),
        "status": status,
        "config_hash": fingerprint,
        "code_version": s.get("code_version"),
        "config_problem": run.config_problem,
        "dataset": s.get("dataset") or run.setting(key="data.dataset"),
        "learner": s.get("learner") or run.setting(key="learner.name"),
        "model": model,
        "partition": run.setting(key="partition.scheme"),
        "rounds_completed": s.get("rounds", run.metrics[-1].get("round") if run.metrics else 0),
        "rounds_configured": run.setting(key="experiment.rounds"),
        "seed": run.setting(key="experiment.seed"),
        "backend": s.get("backend") or run.setting(key="experiment.backend"),
        "wall_s": as_float(value=s.get("wall_s")),
        "wall_note": WITHHELD_NOTE if withheld and s.get("wall_s") is None else None,
        "sites": sites,
        "total_records": sum(records) if records else None,
        "sites_statement": (
            f"{len(sites)} sites took part. Their record counts are {WITHHELD_NOTE}: a count differs "
            "by one between neighbouring datasets, so releasing it would void the guarantee. The "
            "classes column is the size of each site's public class list."
            if sites and withheld
            else f"{len(sites)} sites took part, holding {sum(records)} training records in total; "
            "the table lists what each site reported about itself (counts only, no data)."
            if sites and records
            else "No per-site data summary (sites.json) was recorded."
        ),
    }


# --------------------------------------------------------------------------------------------------
# Privacy
# --------------------------------------------------------------------------------------------------


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


def privacy_facts(*, run: RunData) -> dict[str, Any]:
    """The privacy-guarantee section of a run.

    Args:
        run: The run.

    Returns:
        Mode, unit, adjacency, δ, final ε per site and global, accountant, the ledger's status, a
        plain-language statement and warnings about anything inconsistent or missing.
    """
    s = run.summary or {}
    last_row = run.metrics[-1] if run.metrics else {}
    ledger = run.ledger
    last = ledger.rounds[-1] if ledger.rounds else None
    mode = s.get("mode") or run.setting(key="privacy.mode") or ("unknown" if not run.config else "none")
    warnings: list[str] = []

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
    if delta is None and mode not in ("none", "unknown"):
        delta = as_float(value=run.setting(key="privacy.delta"))

    rec: Mapping[str, Any] = {}
    if last is not None:
        rec = next(iter(last.records.values()), {}) or last.global_record or {}
    unit = s.get("privacy_unit") or rec.get("privacy_unit")
    adjacency = s.get("adjacency") or rec.get("adjacency")
    accountant = (
        s.get("accountant")
        or ledger.accountant
        or (run.setting(key="privacy.accountant") if mode not in ("none", "unknown") else None)
    )
    mechanism = (
        s.get("mechanism")
        or rec.get("mechanism")
        or (run.setting(key="privacy.mechanism") if mode not in ("none", "unknown") else None)
    )
    sigma = as_float(value=s.get("noise_multiplier"))
    if sigma is None and rec:
        sigma = as_float(value=rec.get("noise_multiplier"))
    if (
        sigma is None
        and mode not in ("none", "unknown")
        and not as_float(value=run.setting(key="privacy.target_epsilon"))
    ):
        sigma = as_float(
            value=run.setting(key="privacy.noise_multiplier")
        )  # not calibrated at run time: as configured

    ledger_facts: dict[str, Any] = {
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
            ledger_facts["consistent_with_summary"] = not bad
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

    applied = mode not in ("none", "unknown")
    if mode == "none":
        statement = (
            "No differential privacy was applied. The trained model and the updates sent by the sites "
            "carry no formal guarantee about any individual record or site."
        )
        explanation = (
            "Without differential privacy, protection rests only on the sites never sharing raw data "
            "(and on secure aggregation, if used). The attack results below show what could still be learned."
        )
    elif mode == "unknown":
        statement = (
            "Whether differential privacy was applied cannot be told: the run's configuration is missing."
        )
        explanation = ""
    elif epsilon is None and not eps_sites:
        statement = (
            f"Differential privacy was configured (mode '{mode}') but no ε was recorded in this run "
            "directory, so the guarantee cannot be confirmed from it."
        )
        explanation = epsilon_explanation(eps=None, delta=delta, unit=unit)
        warnings.append("Differential privacy was configured but no ε was recorded.")
    else:
        who = {
            "record": "Each site's individual records are protected by record-level differential privacy "
            "(noisy, clipped training steps inside each site: DP-SGD, Abadi et al. 2016).",
            "client": "Each site as a whole is protected by client-level differential privacy "
            "(clipped site updates with noise added by the aggregator: DP-FedAvg, McMahan et al. 2018).",
            "distributed": "Each site as a whole is protected by distributed differential privacy: "
            "every site adds a share of the noise itself and the shares are summed under secure aggregation "
            "(Kairouz et al. 2021; Agarwal et al. 2021).",
        }.get(mode, f"Differential privacy mode '{mode}' was applied.")
        statement = (
            f"{who} The protected unit is {unit_words(unit=unit)}; neighbouring datasets differ by "
            f"{adjacency_words(adjacency=adjacency)}. The final guarantee is ε = {fmt_eps(eps=epsilon)} "
            f"at δ = {fmt_num(value=delta)}, computed by the {accountant or 'unrecorded'} accountant: "
            f"{strength_words(eps=epsilon)}."
        )
        if s.get("trust_assumption"):  # record-level noise shared across sites under SecAgg
            statement += f" Trust assumption: {s['trust_assumption']}."
        explanation = epsilon_explanation(eps=epsilon, delta=delta, unit=unit)
    if s.get("stopped_early"):
        warnings.append(f"Training stopped early: {s['stopped_early']}")
    if applied and not ledger.present:
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
        "unit": unit,
        "adjacency": adjacency,
        "delta": delta,
        "epsilon": epsilon,
        "epsilon_sites": eps_sites,
        "global_epsilon": global_eps,
        "accountant": accountant,
        "mechanism": mechanism,
        "noise_multiplier": sigma,
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


# --------------------------------------------------------------------------------------------------
# Secure aggregation
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Utility
# --------------------------------------------------------------------------------------------------


def utility_facts(*, run: RunData) -> dict[str, Any]:
    """The utility section: final accuracy with its 95 % interval and the per-round evaluations.

    Args:
        run: The run.

    Returns:
        The section's facts.
    """
    s = run.summary or {}
    acc, ci = as_float(value=s.get("test_accuracy")), as_float(value=s.get("test_accuracy_ci95"))
    episodes = s.get("test_episodes")
    per_round = [
        {
            "round": m["round"],
            "accuracy": a,
            "ci95": as_float(value=m.get("test_accuracy_ci95")),
            # the supervised evaluation (secfed.supervised_eval), when the run computed it
            "auc": as_float(value=m.get("test_auc")),
            "val_auc": as_float(value=m.get("val_auc")),
        }
        for m in run.metrics
        if isinstance(m.get("round"), int) and (a := as_float(value=m.get("test_accuracy"))) is not None
    ]
    base = as_float(value=s.get("untrained_test_accuracy"))
    base_ci = as_float(value=s.get("untrained_test_accuracy_ci95"))
    pretrain = run.setting(key="model.pretrain_steps")
    baseline_text, beat = baseline_words(
        accuracy=acc,
        ci=ci,
        base=base,
        base_ci=base_ci,
        pretrained=isinstance(pretrain, int) and pretrain > 0,
    )
    # the mean training loss per round (absent under DP: a function of the private records)
    train_loss = [
        (int(m["round"]), loss)
        for m in run.metrics
        if isinstance(m.get("round"), int) and (loss := as_float(value=m.get("train_loss"))) is not None
    ]
    n_way, k_shot, q = (run.setting(key=f"task.{k}") for k in ("test_n_way", "test_k_shot", "test_q_query"))
    learner = s.get("learner") or run.setting(key="learner.name")
    setting = None
    chance = None
    if isinstance(n_way, int) and isinstance(k_shot, int) and learner != "fedavg":
        setting = (
            f"{n_way}-way {k_shot}-shot: each test task shows {k_shot} labelled example(s) of each of "
            f"{n_way} classes never seen in training, then asks for "
            f"{q if q is not None else 'several'} further examples per class to be classified"
        )
        chance = 1.0 / n_way
    if acc is None:
        statement = "The final evaluation has not been recorded (the run is unfinished)." + (
            " The last evaluation during training is shown below." if per_round else ""
        )
    else:
        statement = (
            f"The final model classified {fmt_pct(value=acc, ci=ci)} of test examples correctly (95 % "
            f"confidence interval) over "
            f"{episodes if episodes is not None else 'an unrecorded number of'} test tasks"
            + (f", against {fmt_pct(value=chance)} expected by guessing" if chance is not None else "")
            + "."
        )
        if base is not None:
            statement += (
                f" The untrained starting model scores {fmt_pct(value=base, ci=base_ci)} on the same test "
                "tasks"
                + (
                    ": training did not beat the untrained model."
                    if not beat
                    else f", so training added {100 * (acc - base):.1f} points."
                )
            )
    return {
        "test_accuracy": acc,
        "ci95": ci,
        "untrained_accuracy": base,
        "untrained_ci95": base_ci,
        "baseline": baseline_text,
        "beat_untrained": beat,
        "train_loss": train_loss,
        "episodes": episodes,
        "setting": setting,
        "chance": chance,
        "per_round": per_round,
        "statement": statement,
        "supervised": supervised_facts(summary=s),
    }


#: Keys of the supervised evaluation (:mod:`secfed.supervised_eval`) carried into a sweep point.
SUPERVISED_POINT_KEYS: tuple[str, ...] = (
    "test_supervised_accuracy",
    "test_supervised_accuracy_ci95",
    "test_auc",
    "test_auc_ci95",
    "test_sensitivity",
    "test_sensitivity_ci95",
    "test_specificity",
    "test_specificity_ci95",
)

#: What the supervised evaluation's data costs, shown wherever its metrics are.
SUPERVISED_NOTE = (
    "The test and validation splits are public evaluation data held by the server: scoring the released "
    "model on them reads no training record and costs no privacy."
)


def _interval(raw: Any) -> list[float] | None:
    if isinstance(raw, (list, tuple)) and len(raw) == 2:
        lo, hi = as_float(value=raw[0]), as_float(value=raw[1])
        if lo is not None and hi is not None:
            return [lo, hi]
    return None


def _supervised_row(label: str, m: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """One row of the supervised table from flat summary keys (prefix ``test_``/``val_``) or a site dict."""
    acc = "supervised_accuracy" if prefix else "accuracy"
    records = m.get(prefix + ("supervised_records" if prefix else "records"))
    positives = m.get(prefix + ("supervised_positives" if prefix else "positives"))
    return {
        "label": label,
        "records": records if isinstance(records, int) else None,
        "positives": positives if isinstance(positives, int) else None,
        "accuracy": as_float(value=m.get(prefix + acc)),
        "accuracy_ci95": _interval(m.get(prefix + acc + "_ci95")),
        **{key: as_float(value=m.get(prefix + key)) for key in ("auc", "sensitivity", "specificity")},
        **{
            f"{key}_ci95": _interval(m.get(f"{prefix}{key}_ci95"))
            for key in ("auc", "sensitivity", "specificity")
        },
    }


def supervised_facts(*, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The supervised evaluation of the global model on the test split (when the run computed it).

    Args:
        summary: The run's ``summary.json``.

    Returns:
        ``applied`` (False when the summary has no supervised keys: other learners or datasets, or
        an older run), ``positive_class``, ``rows`` (pooled test, each held-out site, validation),
        ``statement`` and ``note`` (the data is public: no privacy cost).
    """
    if as_float(value=summary.get("test_supervised_accuracy")) is None:
        return {
            "applied": False,
            "positive_class": None,
            "rows": [],
            "statement": None,
            "note": SUPERVISED_NOTE,
        }
    positive = summary.get("supervised_positive_class")
    rows = [_supervised_row("test split, pooled (all held-out sites)", summary, "test_")]
    for site in summary.get("test_supervised_sites") or []:
        if isinstance(site, Mapping):
            rows.append(_supervised_row(f"held-out site {site.get('site')}", site, ""))
    if as_float(value=summary.get("val_supervised_accuracy")) is not None:
        rows.append(_supervised_row("validation split", summary, "val_"))
    pooled = rows[0]
    auc = pooled["auc"]
    parts = [
        f"ROC AUC {fmt_num(value=auc)}" + _ci_words(pooled["auc_ci95"], pct=False)
        if auc is not None
        else "ROC AUC undefined (one class only)",
        f"accuracy {fmt_pct(value=pooled['accuracy'])}" + _ci_words(pooled["accuracy_ci95"], pct=True),
    ]
    if pooled["sensitivity"] is not None or pooled["specificity"] is not None:
        found = f"share of {positive} cases detected" if positive else "share of positive cases detected"
        parts.append(
            f"sensitivity ({found}) {fmt_pct(value=pooled['sensitivity'])}"
            + _ci_words(pooled["sensitivity_ci95"], pct=True)
        )
        parts.append(
            "specificity (share of the other cases correctly cleared) "
            f"{fmt_pct(value=pooled['specificity'])}" + _ci_words(pooled["specificity_ci95"], pct=True)
        )
    statement = (
        f"Applied as is, with no adaptation, to the {pooled['records']} records of the test split, the "
        "final global model reached "
        + ", ".join(parts)
        + " (95 % confidence intervals"
        + (f"; positive class: {positive}" if positive else "")
        + ")."
    )
    return {
        "applied": True,
        "positive_class": positive,
        "rows": rows,
        "statement": statement,
        "note": SUPERVISED_NOTE,
    }


def _ci_words(ci: list[float] | None, *, pct: bool) -> str:
    if ci is None:
        return ""
    if pct:
        return f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f} %)"
    return f" ({ci[0]:.3f}–{ci[1]:.3f})"


# --------------------------------------------------------------------------------------------------
# Attacks and empirical ε
# --------------------------------------------------------------------------------------------------

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
        elif name == "mia":
            rows = mia_rows(data=o.data)
            entry["rows"] = [
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
            entry["statement"] = (
                f"{joined[:1].upper()}{joined[1:]}."
                if parts
                else "The result file holds no membership-inference metrics."
            )
        elif name == "inversion":
            irows = inversion_rows(data=o.data)
            entry["rows"] = [
                {
                    "attack": r.attack,
                    "psnr_db": r.psnr,
                    "ssim": r.ssim,
                    "mse": r.mse,
                    "label_accuracy": r.label_accuracy,
                    "flat_baseline_psnr_db": r.flat_baseline_psnr,
                    **(
                        {"sent_in_run": r.sent_in_run}
                        if any(x.sent_in_run is not None for x in irows)
                        else {}
                    ),
                }
                for r in irows
            ]
            best_inv = strongest_inversion(rows=irows)
            if best_inv is not None:
                entry["statement"] = _inversion_statement(best_inv)
            else:
                entry["statement"] = "The result file holds no reconstruction scores."
        else:
            arows = audit_rows(data=o.data)
            entry["rows"] = [
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
            canaries = o.data.get("canaries") if isinstance(o.data, dict) else None
            design = ""
            if isinstance(canaries, dict) and isinstance(canaries.get("count"), int):
                design = f" The audit inserted {canaries['count']} canary records"
                if isinstance(canaries.get("included"), int):
                    design += f", {canaries['included']} of them included in training"
                design += "."
            entry["statement"] = (
                f"{len(arows)} empirical lower bound(s) found; see the comparison with the accountant's ε."
                + design
                if arows
                else "The result file holds no ε lower bound."
            )
        out[name] = entry
    return out


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
        privacy: The run's :func:`privacy_facts`.

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


# --------------------------------------------------------------------------------------------------
# Whole run / sweep
# --------------------------------------------------------------------------------------------------


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
            ``empirical_epsilon`` as :func:`run_facts` builds them).
        whitebox: :func:`whitebox_audit_facts` of the run (``None``: not run).

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
        "what_was_run": _what_was_run(run),
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
            "statement": _whitebox_statement(whitebox=whitebox, privacy=privacy),
        }
    facts["verdict"] = verdict_facts(facts=facts, whitebox=whitebox)
    return facts


def _whitebox_statement(*, whitebox: Mapping[str, Any], privacy: Mapping[str, Any]) -> str:
    """One sentence on the white-box audit's bound, its ceiling and the accountant's ε."""
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
    code_versions, first = set(), None
    for p in sweep.get("points", []):
        if not isinstance(p, Mapping):
            continue
        name = str(p.get("name"))
        target = as_float(value=p.get("target_epsilon"))
        row: dict[str, Any] = {
            "name": name,
            "target_epsilon": target,
            "learner": p.get("learner"),
            "aggregation": p.get("aggregation"),
            "status": p.get("status", "unknown"),
            "problem": p.get("problem"),
            "run_dir": p.get("run_dir"),
            "test_accuracy": as_float(value=p.get("test_accuracy")),
            "ci95": as_float(value=p.get("ci95")),
            "epsilon": as_float(value=p.get("epsilon")),
            "delta": as_float(value=p.get("delta")),
            "noise_multiplier": as_float(value=p.get("noise_multiplier")),
            "attacks": dict(p.get("attacks") or {}),
            **{k: p.get(k) for k in SUPERVISED_POINT_KEYS},
        }
        loaded = runs.get(name)
        if loaded is not None:
            run, outcomes = loaded
            first = first or (run, outcomes)
            facts = run_facts(run=run, outcomes=outcomes)
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
            if facts["what_was_run"]["code_version"]:
                code_versions.add(str(facts["what_was_run"]["code_version"]))
        else:
            row["attack_metrics"] = dict(p.get("attack_metrics") or {})
        points.append(row)
    first_facts = run_facts(run=first[0], outcomes=first[1]) if first is not None else None
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
