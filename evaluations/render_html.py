"""Lay out report facts as one self-contained HTML page.

The page loads nothing: the style sheet is inline, every image is a ``data:image/png;base64`` URI,
there are no scripts, fonts or links to other pages. Every value from the run directory is
HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evaluations import render_common as common
from evaluations.wording import GLOSSARY, fmt_eps, fmt_num, fmt_pct

__all__ = ["Figure", "render_run_html", "render_sweep_html", "cell"]

_CSS = """
body{font-family:Georgia,'Times New Roman',serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1d1d1d;line-height:1.5;background:#fff}
h1{font-size:1.7rem;border-bottom:3px solid #2b4c7e;padding-bottom:.3rem}
h2{font-size:1.3rem;color:#2b4c7e;margin-top:2.2rem;border-bottom:1px solid #c9d3e3}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.6rem 0 1rem 0;font-size:.92rem}
th,td{border:1px solid #c9d3e3;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#eef2f8}
.glance{background:#f5f8fc;border:1px solid #c9d3e3;border-radius:6px;padding:.6rem 1rem}
.glance td:first-child{font-weight:bold;white-space:nowrap}
.verdict{background:#fbfbf3;border:2px solid #556;border-radius:6px;padding:.6rem 1rem;margin:.8rem 0}
.verdict td:first-child{font-weight:bold;white-space:nowrap;vertical-align:top}
.verdict.fail{border-color:#c0392b}
.warn{background:#fff4e5;border-left:4px solid #e08a00;padding:.4rem .8rem;margin:.6rem 0}
.bad{background:#fdecea;border-left:4px solid #c62828;padding:.4rem .8rem;margin:.6rem 0}
.ok{color:#1b5e20}
.muted{color:#666;font-size:.9rem}
figure{margin:1rem 0}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.88rem;color:#444}
code{font-family:'DejaVu Sans Mono',monospace;font-size:.85rem;background:#f2f2f2;padding:0 .2rem}
dt{font-weight:bold;margin-top:.4rem}
"""


@dataclass(frozen=True)
class Figure:
    """A PNG figure for a report.

    Attributes:
        key: Short identifier (also the file stem of the Markdown copy).
        title: Heading shown above the figure.
        caption: Plain-language explanation shown below it.
        png: The PNG bytes.
        path: Path of the PNG relative to the report (for the Markdown report).
    """

    key: str
    title: str
    caption: str
    png: bytes
    path: str


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def cell(*, value: Any) -> str:
    """Plain text for a table cell (numbers with 3 significant digits, ``—`` for missing)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1e4:
            return f"{int(value):,}"
        return fmt_num(value=value)
    if isinstance(value, int) and abs(value) >= 1e4:
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell(value=v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(rows: Sequence[tuple[str, Any]], cls: str = "") -> str:
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(cell(value=v))}</td></tr>" for k, v in rows)
    return (
        f'<table class="{cls}"><tbody>{body}</tbody></table>'
        if cls
        else f"<table><tbody>{body}</tbody></table>"
    )


def _p(text: str | None, cls: str = "") -> str:
    if not text:
        return ""
    return f'<p class="{cls}">{_e(text)}</p>' if cls else f"<p>{_e(text)}</p>"


def _figure(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        f"<figure><h3>{_e(fig.title)}</h3>"
        f'<img src="data:image/png;base64,{data}" alt="{_e(fig.title)}">'
        f"<figcaption>{_e(fig.caption)}</figcaption></figure>"
    )


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body>\n</html>\n"
    )


def _glossary() -> str:
    items = "".join(f"<dt>{_e(term)}</dt><dd>{_e(text)}</dd>" for term, text in GLOSSARY)
    return f"<h2>Glossary</h2><dl>{items}</dl>"


def _warnings(warnings: Sequence[str]) -> str:
    return "".join(f'<div class="warn">{_e(w)}</div>' for w in warnings)


def _figs(figures: Mapping[str, Figure], *keys: str) -> str:
    return "".join(_figure(figures[k]) for k in keys if k in figures)


def _sites_table(sites: Sequence[Mapping[str, Any]]) -> str:
    if not sites:
        return ""
    return _table(*common.sites_table(sites=sites))


def _privacy_section(p: Mapping[str, Any], figures: Mapping[str, Figure]) -> list[str]:
    out = ["<h2>2. Privacy guarantee (differential privacy)</h2>", _p(p["statement"]), _p(p["explanation"])]
    out.append(_warnings(p["warnings"]))
    if p["applied"]:
        out.append(_kv(common.privacy_rows(privacy=p)))
        if p["epsilon_sites"]:
            out.append(f"<h3>{_e(p['epsilon_sites_label'])}</h3>")
            out.append(_table(*common.epsilon_sites_table(privacy=p)))
    out.append(_figs(figures, "epsilon"))
    return out


def _secagg_section(s: Mapping[str, Any]) -> list[str]:
    out = ["<h2>3. Protection of updates in transit (secure aggregation)</h2>", _p(s["statement"])]
    if s["applied"]:
        out.append(_kv(common.secagg_rows(secagg=s)))
    out.append("<h3>Participation and dropouts per round</h3>")
    out.append(_p(s["dropout_statement"]))
    if s["rounds"]:
        out.append(_table(*common.dropout_table(secagg=s)))
    return out


def _utility_section(u: Mapping[str, Any], figures: Mapping[str, Figure]) -> list[str]:
    out = ["<h2>4. How well the model works (utility)</h2>", _p(u["statement"])]
    if u["setting"]:
        out.append(_p(f"Test setting: {u['setting']}."))
    if u["per_round"]:
        out.append(_table(*common.utility_table(utility=u)))
    out.append(_figs(figures, "accuracy", "loss"))
    sup = u.get("supervised") or {}
    if sup.get("applied"):
        out.append("<h3>Supervised evaluation of the global model on the test split</h3>")
        out.append(_p(sup["statement"]))
        out.append(_table(*common.supervised_table(supervised=sup)))
        out.append(_p(sup["note"], "muted"))
    return out


def _attacks_section(a: Mapping[str, Any], figures: Mapping[str, Figure]) -> list[str]:
    out = ["<h2>5. Attack tests: what could an attacker still learn?</h2>", _p(common.ATTACKS_INTRO)]
    for name, entry in a.items():
        out.append(f"<h3>{_e(entry['title'])}</h3>")
        out.append(_p(entry["explanation"]))
        cls = "muted" if entry["status"] != "ok" else ""
        out.append(_p(entry["statement"], cls))
        if entry["rows"]:
            out.append(_table(*common.attack_table(rows=entry["rows"])))
        out.append(_figs(figures, f"attack_{name}", f"attack_{name}_client"))
    return out


def _empirical_section(e: Mapping[str, Any]) -> list[str]:
    out = ["<h2>6. Empirical check of the privacy guarantee</h2>"]
    if e.get("violations"):
        out.append(f'<div class="bad">{_e(e["statement"])}</div>')
    else:
        out.append(_p(e["statement"], "muted" if e["status"] != "ok" else ""))
    if e["rows"]:
        out.append(_table(*common.empirical_table(rows=e["rows"])))
    return out


def _integrity_alerts(f: Mapping[str, Any]) -> str:
    """Privacy-ledger integrity failures, shown first (:func:`evaluations.report.write_report`)."""
    return "".join(f'<div class="warn"><strong>{_e(a)}</strong></div>' for a in f.get("integrity_alerts", []))


def _verdict_box(f: Mapping[str, Any]) -> str:
    """The verdict at the very top: guarantee, trust, utility against the untrained model, attacks, audit."""
    v = f.get("verdict")
    if not v:
        return ""
    cls = "verdict fail" if v.get("beat_untrained") is False else "verdict"
    return (
        f'<div class="{cls}" id="verdict"><h2 style="margin-top:0">Verdict</h2>'
        + _kv(v["rows"], "verdict")
        + "</div>"
    )


def _glance_run(f: Mapping[str, Any]) -> str:
    return (
        '<div class="glance"><h2 style="margin-top:0">At a glance</h2>'
        + _kv(common.glance_rows(facts=f), "glance")
        + "</div>"
    )


def render_run_html(*, facts: Mapping[str, Any], figures: Mapping[str, Figure], generated: str) -> str:
    """The HTML report of one run.

    Args:
        facts: From :func:`evaluations.facts.run_facts`.
        figures: Figures by key (``accuracy``, ``epsilon``, ``attack_mia``, ``attack_inversion``).
        generated: Generation time stamp shown in the header.

    Returns:
        The page.
    """
    w = facts["what_was_run"]
    title = f"Privacy and utility audit report: {w['name'] or w['run_dir']}"
    body = [
        f"<h1>{_e(title)}</h1>",
        _integrity_alerts(facts),
        _verdict_box(facts),
        _p(
            f"Generated {generated} from the run folder {w['run_dir']}. This report explains, in plain "
            "words, what was trained, what privacy protection applied, how well the model works and "
            "what attacks could still learn.",
            "muted",
        ),
        _glance_run(facts),
        "<h2>1. What was run</h2>",
        _kv(common.run_overview_rows(what=w)),
        _p(w["config_problem"], "warn") if w["config_problem"] else "",
        "<h3>Data held by each site</h3>",
        _p(w["sites_statement"]),
        _sites_table(w["sites"]),
        *_privacy_section(facts["privacy"], figures),
        *_secagg_section(facts["secure_aggregation"]),
        *_utility_section(facts["utility"], figures),
        *_attacks_section(facts["attacks"], figures),
        *_empirical_section(facts["empirical_epsilon"]),
        _glossary(),
    ]
    return _page(title, body)


def render_sweep_html(*, facts: Mapping[str, Any], figures: Mapping[str, Figure], generated: str) -> str:
    """The HTML report of a privacy–utility sweep.

    Args:
        facts: From :func:`evaluations.facts.sweep_facts`.
        figures: Figures by key (``privacy_utility``, ``attack_vs_epsilon``, ``audit_vs_epsilon``).
        generated: Generation time stamp.

    Returns:
        The page.
    """
    w = facts["what_was_run"]
    title = f"Privacy–utility sweep report: {w['sweep_dir']}"
    points = facts["points"]
    # ROC AUC, sensitivity, specificity of the supervised evaluation, when the points have it
    sup_headers, sup_rows = common.supervised_sweep_columns(points=points)
    body = [
        f"<h1>{_e(title)}</h1>",
        _integrity_alerts(facts),
        _p(
            f"Generated {generated}. The same experiment was trained at several privacy levels (ε) to "
            "show how much accuracy each level of protection costs, and how much an attacker could learn "
            "at each level.",
            "muted",
        ),
        "<h2>1. What was run</h2>",
        _kv(common.sweep_overview_rows(what=w)),
        "".join(f'<div class="warn">{_e(n)}</div>' for n in facts["notes"]),
        "<h3>Data held by each site</h3>",
        _p(w["sites_statement"]),
        _sites_table(w["sites"]),
        "<h2>2. Privacy–utility trade-off</h2>",
        _p(
            "Each row is one training run. ε is the privacy budget actually spent (smaller = stronger "
            "privacy; ∞ = no differential privacy). Accuracy is on test tasks never seen in training, "
            "with its 95 % confidence interval."
        ),
        _table(
            [
                "point",
                "target ε",
                "ε reached",
                "δ",
                "noise σ",
                "learner",
                "aggregation",
                "test accuracy",
                *sup_headers,
                "status",
            ],
            [
                [
                    p["name"],
                    common.eps_cell(eps=p["target_epsilon"]),
                    common.eps_cell(eps=p["epsilon"]),
                    p["delta"],
                    p["noise_multiplier"],
                    p["learner"],
                    p.get("protocol") or p["aggregation"],
                    fmt_pct(value=p["test_accuracy"], ci=p["ci95"]),
                    *sup_cells,
                    p["status"] + (f": {p['problem']}" if p.get("problem") else ""),
                ]
                for p, sup_cells in zip(points, sup_rows, strict=True)
            ],
        ),
        _figs(figures, "privacy_utility"),
        "<h2>3. Attack results at each privacy level</h2>",
        _attack_table(points),
        _figs(figures, "attack_vs_epsilon", "audit_vs_epsilon"),
        _warnings([f"{p['name']}: {w_}" for p in points for w_ in p.get("warnings", [])]),
        _glossary(),
    ]
    return _page(title, body)


def _attack_table(points: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for p in points:
        m = p.get("attack_metrics") or {}
        rows.append(
            [
                p["name"],
                common.eps_cell(eps=p["epsilon"]),
                m.get("mia_auc"),
                fmt_pct(value=m["mia_tpr_at_0.1%"]) if m.get("mia_tpr_at_0.1%") is not None else None,
                m.get("inversion_psnr"),
                m.get("inversion_ssim"),
                fmt_eps(eps=m["audit_epsilon_lb"]) if m.get("audit_epsilon_lb") is not None else None,
                ", ".join(f"{k[:-7]}: {v}" for k, v in m.items() if k.endswith("_status")) or "not run",
            ]
        )
    return _p(
        "Membership-inference AUC (0.5 = guessing), true-positive rate at 0.1 % false positives, "
        "reconstruction quality of gradient inversion (PSNR in dB, SSIM), and the audit's empirical ε "
        "lower bound. Attacks that were not run are marked so."
    ) + _table(
        [
            "point",
            "ε",
            "MIA AUC",
            "MIA TPR @ 0.1 % FPR",
            "inversion PSNR (dB)",
            "inversion SSIM",
            "empirical ε lower bound",
            "attack status",
        ],
        rows,
    )
