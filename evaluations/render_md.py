"""Lay out report facts as Markdown (the same sections and wording as the HTML report).

Figures are referenced by their relative paths (``report_plots/*.png``, ``attacks/*.png``), which
:func:`evaluations.report.write_report` writes beside the Markdown file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from evaluations.jsonio import as_float
from evaluations.render_html import Figure, attack_table, cell, empirical_table
from evaluations.wording import GLOSSARY, fmt_eps, fmt_num, fmt_pct

__all__ = ["render_run_md", "render_sweep_md", "md_table"]


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(*, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (cells formatted with :func:`evaluations.render_html.cell`, pipes escaped).

    Args:
        headers: Column names.
        rows: One sequence of values per row.

    Returns:
        The table, ending with a newline.
    """
    lines = ["| " + " | ".join(_esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_esc(cell(value=v)) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    return md_table(headers=["item", "value"], rows=[[k, v] for k, v in rows])


def _figs(figures: Mapping[str, Figure], *keys: str) -> list[str]:
    return [
        f"**{f.title}**\n\n![{f.title}]({f.path})\n\n*{f.caption}*\n" for k in keys if (f := figures.get(k))
    ]


def _glossary() -> list[str]:
    return ["## Glossary\n", *[f"- **{term}**: {text}" for term, text in GLOSSARY], ""]


def _sites(sites: Sequence[Mapping[str, Any]]) -> list[str]:
    if not sites:
        return []
    return [
        md_table(
            headers=["site", "training records", "classes"],
            rows=[[s["site"], s["records"], s["classes"]] for s in sites],
        )
    ]


def render_run_md(*, facts: Mapping[str, Any], figures: Mapping[str, Figure], generated: str) -> str:
    """The Markdown report of one run.

    Args:
        facts: From :func:`evaluations.facts.run_facts`.
        figures: Figures by key.
        generated: Generation time stamp.

    Returns:
        The Markdown text.
    """
    w, p, s = facts["what_was_run"], facts["privacy"], facts["secure_aggregation"]
    u, a, e = facts["utility"], facts["attacks"], facts["empirical_epsilon"]
    out: list[str] = [
        f"# Privacy and utility audit report: {w['name'] or w['run_dir']}\n",
        f"*Generated {generated} from the run folder `{w['run_dir']}`.*\n",
        "## At a glance\n",
        _kv(
            [
                (
                    "Privacy guarantee",
                    f"ε = {fmt_eps(eps=p['epsilon'])} at δ = {fmt_num(value=p['delta'])} "
                    f"per {p['unit'] or 'unit'} ({p['mode']} level)"
                    if p["applied"]
                    else "no differential privacy was applied",
                ),
                ("Secure aggregation", s["protocol_name"] or "not recorded"),
                ("Test accuracy", fmt_pct(value=u["test_accuracy"], ci=u["ci95"])),
                ("Attack tests", "; ".join(f"{k}: {v['status']}" for k, v in a.items())),
                ("Empirical check", e["statement"]),
            ]
        ),
        "## 1. What was run\n",
        _kv(
            [
                ("Run status", w["status"]),
                ("Configuration fingerprint (SHA-256)", w["config_hash"] or "not recorded"),
                ("Code version", w["code_version"] or "not recorded"),
                ("Dataset", w["dataset"]),
                ("Learning method", w["learner"]),
                ("Model", w["model"]),
                ("How data is split across sites", w["partition"]),
                ("Rounds completed / configured", f"{w['rounds_completed']} / {w['rounds_configured']}"),
                ("Random seed", w["seed"]),
                ("Training wall time (s)", w["wall_s"]),
            ]
        ),
    ]
    if w["config_problem"]:
        out.append(f"> **Warning:** {w['config_problem']}\n")
    out += ["### Data held by each site\n", w["sites_statement"] + "\n", *_sites(w["sites"])]

    out += ["## 2. Privacy guarantee (differential privacy)\n", p["statement"] + "\n"]
    if p["explanation"]:
        out.append(p["explanation"] + "\n")
    out += [f"> **Warning:** {x}\n" for x in p["warnings"]]
    if p["applied"]:
        ledger = p["ledger"]
        ledger_text = (
            f"{ledger['file']}: {ledger['rounds']} rounds, integrity check "
            + ("passed" if ledger["verified"] else f"FAILED ({ledger['problem']})")
            if ledger["present"]
            else "not found"
        )
        out.append(
            _kv(
                [
                    ("Mode", p["mode"]),
                    ("Protected unit", p["unit"] or "not recorded"),
                    ("Neighbouring datasets differ by", p["adjacency"] or "not recorded"),
                    ("δ (delta)", p["delta"]),
                    (p["epsilon_label"], fmt_eps(eps=p["epsilon"])),
                    (
                        "Global client-level ε (ledger)",
                        fmt_eps(eps=p["global_epsilon"])
                        if p["global_epsilon"] is not None
                        else p["global_epsilon_note"],
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
                    ("Privacy ledger", ledger_text),
                ]
            )
        )
        if p["epsilon_sites"]:
            out += [
                f"### {p['epsilon_sites_label']}\n",
                md_table(
                    headers=["site", "ε"], rows=[[k, fmt_eps(eps=v)] for k, v in p["epsilon_sites"].items()]
                ),
            ]
    out += _figs(figures, "epsilon")

    out += ["## 3. Protection of updates in transit (secure aggregation)\n", s["statement"] + "\n"]
    if s["applied"]:
        tm = s["threat_model"]
        out.append(
            _kv(
                [
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
            )
        )
    out += ["### Participation and dropouts per round\n", s["dropout_statement"] + "\n"]
    if s["rounds"]:
        out.append(
            md_table(
                headers=[
                    "round",
                    "sites included",
                    "dropped",
                    "stragglers",
                    "survivors (protocol)",
                    "aborted",
                ],
                rows=[
                    [r["round"], r["included"], r["dropped"], r["stragglers"], r["survivors"], r["aborted"]]
                    for r in s["rounds"]
                ],
            )
        )

    out += ["## 4. How well the model works (utility)\n", u["statement"] + "\n"]
    if u["setting"]:
        out.append(f"Test setting: {u['setting']}.\n")
    if u["per_round"]:
        out.append(
            md_table(
                headers=["round", "test accuracy (95 % interval)"],
                rows=[[r["round"], fmt_pct(value=r["accuracy"], ci=r["ci95"])] for r in u["per_round"]],
            )
        )
    out += _figs(figures, "accuracy")

    out += [
        "## 5. Attack tests: what could an attacker still learn?\n",
        "These attacks play the role of a curious server or an outsider holding the released model. They "
        "measure what leaks in practice; they do not replace the formal guarantee above.\n",
    ]
    for name, entry in a.items():
        out += [f"### {entry['title']}\n", entry["explanation"] + "\n", entry["statement"] + "\n"]
        if entry["rows"]:
            headers, rows = attack_table(rows=entry["rows"])
            out.append(md_table(headers=headers, rows=rows))
        out += _figs(figures, f"attack_{name}", f"attack_{name}_client")

    out += ["## 6. Empirical check of the privacy guarantee\n", e["statement"] + "\n"]
    if e["rows"]:
        headers, rows = empirical_table(rows=e["rows"])
        out.append(md_table(headers=headers, rows=rows))
    out += _glossary()
    return "\n".join(out)


def _eps_cell(eps: float | None) -> str:
    return fmt_eps(eps=eps) if eps is None or not math.isinf(eps) else "∞ (no DP)"


def _eps_list(values: Any) -> str:
    if not isinstance(values, list):
        return "not recorded"
    return ", ".join(
        "∞"
        if (f := as_float(value=v)) is not None and math.isinf(f)
        else (f"{f:g}" if f is not None else str(v))
        for v in values
    )


def sweep_table(*, points: Sequence[Mapping[str, Any]]) -> str:
    """The sweep's summary table: accuracy ± CI, ε and attack metrics per point (Markdown).

    Args:
        points: Point rows (from :func:`evaluations.facts.sweep_facts` or ``sweep.json``).

    Returns:
        The table.
    """
    rows = []
    for p in points:
        m = p.get("attack_metrics") or {}
        rows.append(
            [
                p["name"],
                _eps_cell(p.get("target_epsilon")),
                _eps_cell(p.get("epsilon")),
                p.get("noise_multiplier"),
                p.get("learner"),
                p.get("protocol") or p.get("aggregation"),
                fmt_pct(value=p.get("test_accuracy"), ci=p.get("ci95")),
                m.get("mia_auc"),
                fmt_pct(value=m["mia_tpr_at_0.1%"]) if m.get("mia_tpr_at_0.1%") is not None else None,
                m.get("inversion_psnr"),
                fmt_eps(eps=m["audit_epsilon_lb"]) if m.get("audit_epsilon_lb") is not None else None,
                str(p.get("status")) + (f": {p['problem']}" if p.get("problem") else ""),
            ]
        )
    return md_table(
        headers=[
            "point",
            "target ε",
            "ε reached",
            "σ",
            "learner",
            "aggregation",
            "test accuracy (95 % CI)",
            "MIA AUC",
            "MIA TPR@0.1%",
            "inversion PSNR",
            "empirical ε LB",
            "status",
        ],
        rows=rows,
    )


def render_sweep_md(*, facts: Mapping[str, Any], figures: Mapping[str, Figure], generated: str) -> str:
    """The Markdown report of a sweep.

    Args:
        facts: From :func:`evaluations.facts.sweep_facts`.
        figures: Figures by key.
        generated: Generation time stamp.

    Returns:
        The Markdown text.
    """
    w = facts["what_was_run"]
    out = [
        f"# Privacy–utility sweep report: {w['sweep_dir']}\n",
        f"*Generated {generated}.* The same experiment was trained at several privacy levels (ε) to show how "
        "much accuracy each level of protection costs, and how much an attacker could learn at each level.\n",
        "## 1. What was run\n",
        _kv(
            [
                ("Base configuration", w["config_path"]),
                ("Base configuration fingerprint (SHA-256)", w["base_config_hash"]),
                ("Code version", w["code_version"] or "not recorded"),
                ("Dataset", w["dataset"]),
                ("Privacy levels ε", _eps_list(w["epsilons"])),
                ("Learning methods", w["learners"]),
                ("Aggregation", w["aggregations"]),
                ("Attacks", w["attacks"] or "none"),
                ("Extra settings", w["overrides"] or "none"),
                ("Grid points", w["points"]),
            ]
        ),
        *[f"> **Note:** {n}\n" for n in facts["notes"]],
        "### Data held by each site\n",
        w["sites_statement"] + "\n",
        *_sites(w["sites"]),
        "## 2. Privacy–utility trade-off\n",
        "Each row is one training run. ε is the privacy budget actually spent (smaller = stronger privacy; "
        "∞ = no differential privacy). Accuracy is on test tasks never seen in training, with its 95 % "
        "confidence interval; attack columns show what an attacker achieved (MIA AUC 0.5 = guessing).\n",
        sweep_table(points=facts["points"]),
        *_figs(figures, "privacy_utility", "attack_vs_epsilon", "audit_vs_epsilon"),
        *[f"> **Warning ({p['name']}):** {x}\n" for p in facts["points"] for x in p.get("warnings", [])],
        *_glossary(),
    ]
    return "\n".join(out)
