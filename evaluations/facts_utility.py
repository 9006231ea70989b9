"""The utility facts of a run: accuracy against chance and the untrained model; the supervised evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluations.jsonio import as_float
from evaluations.rundata import RunData
from evaluations.wording import baseline_words, fmt_num, fmt_pct

__all__ = ["utility_facts", "supervised_facts", "SUPERVISED_POINT_KEYS", "SUPERVISED_NOTE"]


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
