"""Report content shared by the HTML and Markdown renderers.

Both :mod:`evaluations.render_html` and :mod:`evaluations.render_md` show the same sections with the
same wording; this module prepares that content once, as plain values (``(label, value)`` rows for
key-value tables, ``(headers, rows)`` for tables), and each renderer only lays it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from evaluations.jsonio import as_float
from evaluations.wording import fmt_eps, fmt_num, fmt_pct
from secfed.federation.egress import WITHHELD_NOTE

__all__ = [
    "ATTACKS_INTRO",
    "KeyValues",
    "Table",
    "attack_table",
    "dropout_table",
    "empirical_table",
    "eps_cell",
    "eps_list",
    "epsilon_sites_table",
    "glance_rows",
    "privacy_rows",
    "run_overview_rows",
    "secagg_rows",
    "sites_table",
    "sweep_overview_rows",
    "supervised_sweep_columns",
    "supervised_table",
    "utility_table",
    "fmt_interval",
]

#: ``(label, value)`` rows of a two-column table.
KeyValues = list[tuple[str, Any]]
#: ``(headers, rows)`` of a table; values are formatted by the renderer's ``cell``.
Table = tuple[list[str], list[list[Any]]]

#: The paragraph introducing the attack tests (section 5 of a run report).
ATTACKS_INTRO = (
    "These attacks play the role of a curious server or an outsider holding the released model. They "
    "measure what leaks in practice; they do not replace the formal guarantee above."
)

_ATTACK_HEADERS = {
    "psnr_db": "PSNR (dB)",
    "ssim": "SSIM",
    "mse": "MSE",
    "label_accuracy": "label accuracy",
    "flat_baseline_psnr_db": "flat-image baseline PSNR (dB)",
    "auc": "AUC",
    "balanced_accuracy": "balanced accuracy",
    "tpr_at_0.1%": "TPR at 0.1 % FPR",
    "tpr_at_1%": "TPR at 1 % FPR",
    "members": "members",
    "non_members": "non-members",
    "lower_bound": "ε lower bound",
    "sent_in_run": "observed by the server in this run",
    "accountant_epsilon": "accountant's ε",
}


def attack_table(*, rows: Sequence[Mapping[str, Any]]) -> Table:
    """Headers and display values of an attack's metric rows (rates as percentages, ε as ε).

    Args:
        rows: The ``rows`` of one attack in :func:`evaluations.facts.attack_facts`.

    Returns:
        ``(headers, rows)`` ready for a table.
    """
    if not rows:
        return [], []
    keys = list(rows[0].keys())
    out = []
    for r in rows:
        line: list[Any] = []
        for k in keys:
            v = r.get(k)
            if k.startswith("tpr") and isinstance(v, float):
                line.append(fmt_pct(value=v))
            elif k in ("lower_bound", "accountant_epsilon") and isinstance(v, float):
                line.append(fmt_eps(eps=v))
            else:
                line.append(v)
        out.append(line)
    return [_ATTACK_HEADERS.get(k, k.replace("_", " ")) for k in keys], out


def empirical_table(*, rows: Sequence[Mapping[str, Any]]) -> Table:
    """Headers and display values of the empirical-ε rows (a note column only when a bound has a note).

    Args:
        rows: The ``rows`` of :func:`evaluations.facts.empirical_epsilon_facts`.

    Returns:
        ``(headers, rows)`` ready for a table.
    """
    headers = [
        "audit",
        "empirical ε lower bound",
        "confidence",
        "method",
        "accountant's ε",
        "source",
        "verdict",
        "what it means",
    ]
    notes = any(r.get("note") for r in rows)
    out = []
    for r in rows:
        line = [
            r["audit"],
            fmt_eps(eps=r["lower_bound"]),
            r["confidence"],
            r["method"],
            fmt_eps(eps=r["accountant_epsilon"]),
            r["accountant_source"],
            r["verdict"],
            r.get("reading"),
        ]
        out.append([*line, r.get("note")] if notes else line)
    return ([*headers, "note"] if notes else headers), out


def glance_rows(*, facts: Mapping[str, Any]) -> KeyValues:
    """The "At a glance" summary of a run report.

    Args:
        facts: From :func:`evaluations.facts.run_facts`.

    Returns:
        ``(label, value)`` rows.
    """
    p, s, u, a = facts["privacy"], facts["secure_aggregation"], facts["utility"], facts["attacks"]
    privacy = (
        f"ε = {fmt_eps(eps=p['epsilon'])} at δ = {fmt_num(value=p['delta'])} per {p['unit'] or 'unit'} "
        f"({p['mode']} level)"
        if p["applied"]
        else "no differential privacy was applied"
    )
    return [
        ("Privacy guarantee", privacy),
        ("Secure aggregation", s["protocol_name"] or "not recorded"),
        ("Test accuracy", fmt_pct(value=u["test_accuracy"], ci=u["ci95"])),
        *_supervised_glance(u.get("supervised") or {}),
        ("Attack tests", "; ".join([f"{k}: {v['status']}" for k, v in a.items()] + _whitebox_glance(facts))),
        ("Empirical check", facts["empirical_epsilon"]["statement"]),
    ]


def _whitebox_glance(facts: Mapping[str, Any]) -> list[str]:
    whitebox = facts.get("whitebox_audit")
    return [] if not whitebox else [f"whitebox-audit: {whitebox.get('status', 'ok')}"]


def _supervised_glance(sup: Mapping[str, Any]) -> KeyValues:
    if not sup.get("applied"):
        return []
    pooled = sup["rows"][0]
    out: KeyValues = [
        (
            "Test ROC AUC (global model, no adaptation)",
            fmt_interval(value=pooled["auc"], ci=pooled["auc_ci95"], pct=False),
        )
    ]
    if pooled.get("sensitivity") is not None or pooled.get("specificity") is not None:
        out.append(
            (
                "Test sensitivity / specificity",
                f"{fmt_interval(value=pooled['sensitivity'], ci=pooled['sensitivity_ci95'], pct=True)} / "
                f"{fmt_interval(value=pooled['specificity'], ci=pooled['specificity_ci95'], pct=True)}",
            )
        )
    return out


def fmt_interval(*, value: float | None, ci: Sequence[float] | None, pct: bool) -> str:
    """A metric with its 95 % interval: ``0.931 (0.905–0.953)`` or ``85.40 % (82.4–88.0 %)``.

    Args:
        value: The metric (``None``: undefined, shown as ``—``).
        ci: ``[low, high]`` or ``None``.
        pct: Show as a percentage.

    Returns:
        The text.
    """
    if value is None or math.isnan(value):
        return "—"
    text = fmt_pct(value=value) if pct else f"{value:.3f}"
    if ci is not None and len(ci) == 2:
        text += f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f} %)" if pct else f" ({ci[0]:.3f}–{ci[1]:.3f})"
    return text


def supervised_table(*, supervised: Mapping[str, Any]) -> Table:
    """The supervised evaluation on the test split, pooled, per held-out site and on validation.

    Args:
        supervised: ``facts["utility"]["supervised"]`` of :func:`evaluations.facts.run_facts`.

    Returns:
        ``(headers, rows)``.
    """
    headers = [
        "data",
        "records",
        "positives",
        "ROC AUC (95 % CI)",
        "accuracy (95 % CI)",
        "sensitivity (95 % CI)",
        "specificity (95 % CI)",
    ]
    return headers, [
        [
            r["label"],
            r["records"],
            r["positives"],
            fmt_interval(value=r["auc"], ci=r["auc_ci95"], pct=False),
            fmt_interval(value=r["accuracy"], ci=r["accuracy_ci95"], pct=True),
            fmt_interval(value=r["sensitivity"], ci=r["sensitivity_ci95"], pct=True),
            fmt_interval(value=r["specificity"], ci=r["specificity_ci95"], pct=True),
        ]
        for r in supervised.get("rows", [])
    ]


def supervised_sweep_columns(*, points: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Sweep-table columns of the supervised evaluation, or none when no point has it.

    Args:
        points: Sweep point rows (with the keys of :data:`evaluations.facts.SUPERVISED_POINT_KEYS`).

    Returns:
        ``(headers, one list of cells per point)``; both empty lists' worth when absent.
    """
    if not any(as_float(value=p.get("test_auc")) is not None for p in points):
        return [], [[] for _ in points]

    def ci(raw: Any) -> list[float] | None:
        return [float(raw[0]), float(raw[1])] if isinstance(raw, (list, tuple)) and len(raw) == 2 else None

    headers = ["test AUC (95 % CI)", "test sensitivity", "test specificity"]
    cells = [
        [
            fmt_interval(value=as_float(value=p.get("test_auc")), ci=ci(p.get("test_auc_ci95")), pct=False),
            fmt_interval(
                value=as_float(value=p.get("test_sensitivity")),
                ci=ci(p.get("test_sensitivity_ci95")),
                pct=True,
            ),
            fmt_interval(
                value=as_float(value=p.get("test_specificity")),
                ci=ci(p.get("test_specificity_ci95")),
                pct=True,
            ),
        ]
        for p in points
    ]
    return headers, cells


def run_overview_rows(*, what: Mapping[str, Any]) -> KeyValues:
    """Section 1 ("What was run") of a run report.

    Args:
        what: ``facts["what_was_run"]`` of :func:`evaluations.facts.run_facts`.

    Returns:
        ``(label, value)`` rows.
    """
    return [
        ("Run status", what["status"]),
        ("Configuration fingerprint (SHA-256)", what["config_hash"] or "not recorded"),
        ("Code version", what["code_version"] or "not recorded"),
        ("Dataset", what["dataset"]),
        ("Learning method", what["learner"]),
        ("Model", what["model"]),
        ("How data is split across sites", what["partition"]),
        ("Rounds completed / configured", f"{what['rounds_completed']} / {what['rounds_configured']}"),
        ("Random seed", what["seed"]),
        ("Training wall time (s)", what.get("wall_note") or what["wall_s"]),
    ]


def sweep_overview_rows(*, what: Mapping[str, Any]) -> KeyValues:
    """Section 1 ("What was run") of a sweep report.

    Args:
        what: ``facts["what_was_run"]`` of :func:`evaluations.facts.sweep_facts`.

    Returns:
        ``(label, value)`` rows.
    """
    return [
        ("Base configuration", what["config_path"]),
        ("Base configuration fingerprint (SHA-256)", what["base_config_hash"]),
        ("Code version", what["code_version"] or "not recorded"),
        ("Dataset", what["dataset"]),
        ("Privacy levels ε", eps_list(values=what["epsilons"])),
        ("Learning methods", what["learners"]),
        ("Aggregation", what["aggregations"]),
        ("Attacks", what["attacks"] or "none"),
        ("Extra settings", what["overrides"] or "none"),
        ("Grid points", what["points"]),
    ]


def sites_table(*, sites: Sequence[Mapping[str, Any]]) -> Table:
    """The data held by each site.

    Args:
        sites: ``facts["what_was_run"]["sites"]`` (may be empty).

    Returns:
        ``(headers, rows)``; ``rows`` is empty when no site is known (renderers then show no table).
    """
    return ["site", "training records", "public classes"], [
        [s["site"], WITHHELD_NOTE if s.get("withheld") else s["records"], s["classes"]] for s in sites
    ]


def _ledger_text(ledger: Mapping[str, Any]) -> str:
    if not ledger["present"]:
        return "not found"
    if ledger["verified"]:
        state = "passed"
    elif ledger.get("integrity") == "unverifiable":
        state = f"NOT POSSIBLE: integrity unknown ({ledger['problem']})"
    else:
        state = f"FAILED ({ledger['problem']})"
    return f"{ledger['file']}: {ledger['rounds']} rounds, integrity check {state}"


def privacy_rows(*, privacy: Mapping[str, Any]) -> KeyValues:
    """The differential-privacy settings of section 2 (shown only when DP was applied).

    Args:
        privacy: ``facts["privacy"]`` of :func:`evaluations.facts.run_facts`.

    Returns:
        ``(label, value)`` rows.
    """
    p = privacy
    return [
        ("Mode", p["mode"]),
        ("Protected unit", p["unit"] or "not recorded"),
        ("Neighbouring datasets differ by", p["adjacency"] or "not recorded"),
        ("δ (delta)", p["delta"]),
        (p["epsilon_label"], fmt_eps(eps=p["epsilon"])),
        (
            "Global client-level ε (ledger)",
            fmt_eps(eps=p["global_epsilon"]) if p["global_epsilon"] is not None else p["global_epsilon_note"],
        ),
        ("Accountant", p["accountant"] or "not recorded"),
        ("Noise mechanism", p["mechanism"] or "not recorded"),
        ("Noise multiplier σ", p["noise_multiplier"]),
        ("Clipping norm C", p["max_grad_norm"]),
        (
            "Target ε (noise calibrated for it)",
            fmt_eps(eps=p["target_epsilon"]) if p["target_epsilon"] else "none",
        ),
        ("Client sampling", p["client_sampling"] or "—"),
        ("ε budget", fmt_eps(eps=p["epsilon_budget"]) if p["epsilon_budget"] else "none set"),
        ("Privacy ledger", _ledger_text(p["ledger"])),
    ]


def epsilon_sites_table(*, privacy: Mapping[str, Any]) -> Table:
    """ε per site (section 2).

    Args:
        privacy: ``facts["privacy"]`` of :func:`evaluations.facts.run_facts`.

    Returns:
        ``(headers, rows)``, one row per entry of ``privacy["epsilon_sites"]``.
    """
    return ["site", "ε"], [[k, fmt_eps(eps=v)] for k, v in privacy["epsilon_sites"].items()]


def secagg_rows(*, secagg: Mapping[str, Any]) -> KeyValues:
    """The secure-aggregation settings of section 3 (shown only when it was applied).

    Args:
        secagg: ``facts["secure_aggregation"]`` of :func:`evaluations.facts.run_facts`.

    Returns:
        ``(label, value)`` rows.
    """
    s, tm = secagg, secagg["threat_model"]
    return [
        ("Protocol", s["protocol_name"]),
        ("n (sites per round)", s["n"]),
        ("k (neighbours per site)", s["k"]),
        ("t (threshold)", s["t"]),
        ("Threat model", tm["adversary"] or "not recorded"),
        (
            "Assumed corrupt fraction",
            fmt_pct(value=tm["corrupt_fraction"]) if tm["corrupt_fraction"] is not None else None,
        ),
        ("Bytes sent per site per round", s["bytes_sent_per_client"]),
    ]


def dropout_table(*, secagg: Mapping[str, Any]) -> Table:
    """Participation and dropouts per round (section 3).

    Args:
        secagg: ``facts["secure_aggregation"]`` of :func:`evaluations.facts.run_facts`.

    Returns:
        ``(headers, rows)``: one row per run of consecutive rounds that went the same way (same
        sites included, dropped and straggling, survivors, abort), labelled ``"1–30"`` for a run
        and ``7`` for a single round, so that 30 identical rounds are one row.
    """
    headers = ["rounds", "sites included", "dropped", "stragglers", "survivors (protocol)", "aborted"]
    groups: list[tuple[int, int, list[Any]]] = []
    for r in secagg["rounds"]:
        cells = [r["included"], r["dropped"], r["stragglers"], r["survivors"], r["aborted"]]
        rnd = int(r["round"])
        if groups and groups[-1][2] == cells and groups[-1][1] == rnd - 1:
            groups[-1] = (groups[-1][0], rnd, cells)
        else:
            groups.append((rnd, rnd, cells))
    return headers, [[f"{a}–{b}" if b > a else a, *cells] for a, b, cells in groups]


def utility_table(*, utility: Mapping[str, Any]) -> Table:
    """Test accuracy per round (section 4).

    Args:
        utility: ``facts["utility"]`` of :func:`evaluations.facts.run_facts`.

    Returns:
        ``(headers, rows)``, one row per evaluated round.
    """
    rows = utility["per_round"]
    if any(r.get("auc") is not None for r in rows):  # the supervised evaluation ran each time
        return ["round", "test accuracy (95 % interval)", "test ROC AUC", "validation ROC AUC"], [
            [
                r["round"],
                fmt_pct(value=r["accuracy"], ci=r["ci95"]),
                fmt_interval(value=r.get("auc"), ci=None, pct=False),
                fmt_interval(value=r.get("val_auc"), ci=None, pct=False),
            ]
            for r in rows
        ]
    return ["round", "test accuracy (95 % interval)"], [
        [r["round"], fmt_pct(value=r["accuracy"], ci=r["ci95"])] for r in rows
    ]


def eps_cell(*, eps: float | None) -> str:
    """ε for a sweep table cell (``∞ (no DP)`` for an infinite ε).

    Args:
        eps: The ε, or ``None`` when not recorded.

    Returns:
        The text.
    """
    return fmt_eps(eps=eps) if eps is None or not math.isinf(eps) else "∞ (no DP)"


def eps_list(*, values: Any) -> str:
    """The privacy levels of a sweep, comma-separated (``∞`` for no DP).

    Args:
        values: ``facts["what_was_run"]["epsilons"]`` (a list, or anything else when not recorded).

    Returns:
        The text.
    """
    if not isinstance(values, list):
        return "not recorded"
    return ", ".join(
        "∞"
        if (f := as_float(value=v)) is not None and math.isinf(f)
        else (f"{f:g}" if f is not None else str(v))
        for v in values
    )
