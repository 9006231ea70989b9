"""Lay out report facts as Markdown (the same sections and wording as the HTML report).

Figures are referenced by their relative paths (``report_plots/*.png``, ``attacks/*.png``), which
:func:`evaluations.report.write_report` writes beside the Markdown file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evaluations import render_common as common
from evaluations.render_html import Figure, cell
from evaluations.wording import GLOSSARY, fmt_eps, fmt_pct

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


def _table(table: common.Table) -> str:
    headers, rows = table
    return md_table(headers=headers, rows=rows)


def _sites(sites: Sequence[Mapping[str, Any]]) -> list[str]:
    return [_table(common.sites_table(sites=sites))] if sites else []


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
        *[f"> **INTEGRITY CHECK FAILED:** {x}\n" for x in facts.get("integrity_alerts", [])],
        *(["## Verdict\n", _kv(facts["verdict"]["rows"])] if facts.get("verdict") else []),
        f"*Generated {generated} from the run folder `{w['run_dir']}`.*\n",
        "## At a glance\n",
        _kv(common.glance_rows(facts=facts)),
        "## 1. What was run\n",
        _kv(common.run_overview_rows(what=w)),
    ]
    if w["config_problem"]:
        out.append(f"> **Warning:** {w['config_problem']}\n")
    out += ["### Data held by each site\n", w["sites_statement"] + "\n", *_sites(w["sites"])]

    out += ["## 2. Privacy guarantee (differential privacy)\n", p["statement"] + "\n"]
    if p["explanation"]:
        out.append(p["explanation"] + "\n")
    out += [f"> **Warning:** {x}\n" for x in p["warnings"]]
    if p["applied"]:
        out.append(_kv(common.privacy_rows(privacy=p)))
        if p["epsilon_sites"]:
            out += [f"### {p['epsilon_sites_label']}\n", _table(common.epsilon_sites_table(privacy=p))]
    out += _figs(figures, "epsilon")

    out += ["## 3. Protection of updates in transit (secure aggregation)\n", s["statement"] + "\n"]
    if s["applied"]:
        out.append(_kv(common.secagg_rows(secagg=s)))
    out += ["### Participation and dropouts per round\n", s["dropout_statement"] + "\n"]
    if s["rounds"]:
        out.append(_table(common.dropout_table(secagg=s)))

    out += ["## 4. How well the model works (utility)\n", u["statement"] + "\n"]
    if u["setting"]:
        out.append(f"Test setting: {u['setting']}.\n")
    if u["per_round"]:
        out.append(_table(common.utility_table(utility=u)))
    out += _figs(figures, "accuracy", "loss")
    sup = u.get("supervised") or {}
    if sup.get("applied"):
        out += ["### Supervised evaluation of the global model on the test split\n", sup["statement"] + "\n"]
        out += [_table(common.supervised_table(supervised=sup)), f"*{sup['note']}*\n"]

    out += ["## 5. Attack tests: what could an attacker still learn?\n", common.ATTACKS_INTRO + "\n"]
    for name, entry in a.items():
        out += [f"### {entry['title']}\n", entry["explanation"] + "\n", entry["statement"] + "\n"]
        if entry["rows"]:
            out.append(_table(common.attack_table(rows=entry["rows"])))
        out += _figs(figures, f"attack_{name}", f"attack_{name}_client")

    out += ["## 6. Empirical check of the privacy guarantee\n", e["statement"] + "\n"]
    if e["rows"]:
        out.append(_table(common.empirical_table(rows=e["rows"])))
    out += _glossary()
    return "\n".join(out)


def sweep_table(*, points: Sequence[Mapping[str, Any]]) -> str:
    """The sweep's summary table: accuracy ± CI, ε and attack metrics per point (Markdown).

    Args:
        points: Point rows (from :func:`evaluations.facts.sweep_facts` or ``sweep.json``).

    Returns:
        The table.
    """
    rows = []
    sup_headers, sup_rows = common.supervised_sweep_columns(points=points)
    for p, sup_cells in zip(points, sup_rows, strict=True):
        m = p.get("attack_metrics") or {}
        rows.append(
            [
                p["name"],
                common.eps_cell(eps=p.get("target_epsilon")),
                common.eps_cell(eps=p.get("epsilon")),
                p.get("noise_multiplier"),
                p.get("learner"),
                p.get("protocol") or p.get("aggregation"),
                fmt_pct(value=p.get("test_accuracy"), ci=p.get("ci95")),
                *sup_cells,
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
            *sup_headers,
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
        *[f"> **INTEGRITY CHECK FAILED:** {x}\n" for x in facts.get("integrity_alerts", [])],
        f"*Generated {generated}.* The same experiment was trained at several privacy levels (ε) to show how "
        "much accuracy each level of protection costs, and how much an attacker could learn at each level.\n",
        "## 1. What was run\n",
        _kv(common.sweep_overview_rows(what=w)),
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
