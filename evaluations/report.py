"""Audit reports of a run directory or a sweep directory: ``report.html``, ``report.md``, ``report.json``.

``report.html`` is self-contained (inline style sheet, plots embedded as base64 PNG data URIs, no
scripts, fonts or any other resource from the network) and written for a reader who is not a
machine-learning researcher: what was run, the privacy guarantee in plain words, the secure-
aggregation set-up and threat model, utility with 95 % confidence intervals, attack results, and
the empirical ε lower bounds beside the accountant's ε. ``report.md`` has the same content with
the plots as PNG files under ``report_plots/``; ``report.json`` holds the same facts as data.

Integrity: when a privacy ledger fails its check (forged, edited, truncated) or cannot be verified
(its HMAC key is missing, or it is an unauthenticated version-1 ledger), or the run's checkpoint
(``checkpoint/state.json`` and the safetensors file it names, which ``secfed attack`` and
``--resume`` read) is corrupted, the report is still written, with the failure first, and
:attr:`ReportPaths.integrity_problems` lists it; ``secfed report`` then exits with status 1
(:class:`secfed.errors.IntegrityError`).

Every section degrades gracefully: a run without differential privacy states that none was
applied, an attack that was not run is reported as "not run", an unfinished run is reported as
such. Reading never modifies the run directory apart from writing the report files.

Usage::

    from evaluations.report import write_report
    paths = write_report(path=Path("runs/demo"))
    print(paths.html)
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from evaluations import plots
from evaluations.attack_results import AttackOutcome, mia_curves, read_attacks
from evaluations.errors import ReportInputError
from evaluations.facts import epsilon_series, run_facts, sweep_facts
from evaluations.jsonio import atomic_write_text, dumps_strict, read_json
from evaluations.render_html import Figure, render_run_html, render_sweep_html
from evaluations.render_md import render_run_md, render_sweep_md
from evaluations.rundata import RunData, is_run_dir, load_run

__all__ = ["ReportPaths", "write_report", "REPORT_FORMAT", "REPORT_VERSION", "PLOTS_DIR"]

REPORT_FORMAT = "secfed.report"
REPORT_VERSION = 1
#: Folder (inside the run or sweep directory) holding the report's PNG plots.
PLOTS_DIR = "report_plots"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ReportPaths:
    """The files written by :func:`write_report`.

    Attributes:
        html: The self-contained HTML report.
        markdown: The Markdown report.
        json: The report's facts as JSON.
        plots: The PNG plots written under ``report_plots/`` (the Markdown report links them).
        integrity_problems: One line per privacy ledger that failed its integrity check or could not
            be verified, and per corrupted checkpoint (empty when everything verified).
    """

    html: Path
    markdown: Path
    json: Path
    plots: tuple[Path, ...]
    integrity_problems: tuple[str, ...] = ()


def _read_png(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.startswith(_PNG_MAGIC) else None


def _run_figures(
    run: RunData, facts: Mapping[str, Any], outcomes: Mapping[str, AttackOutcome]
) -> list[Figure]:
    figs: list[Figure] = []
    util = facts["utility"]
    final = None
    if util["test_accuracy"] is not None:
        final = (int(facts["what_was_run"]["rounds_completed"] or 0), util["test_accuracy"], util["ci95"])
    if util["per_round"] or final is not None:
        figs.append(
            Figure(
                key="accuracy",
                title="Accuracy over training rounds",
                caption="Share of test examples classified correctly after each evaluated round, with 95 % "
                "confidence bars; the square is the final evaluation on more test tasks; the grey dashed "
                "line is what guessing would achieve"
                + (
                    "; the green dashed line and band are the untrained model on the same test tasks."
                    if util.get("untrained_accuracy") is not None
                    else "."
                ),
                png=plots.accuracy_plot(
                    rounds=[r["round"] for r in util["per_round"]],
                    accuracy=[r["accuracy"] for r in util["per_round"]],
                    ci95=[r["ci95"] for r in util["per_round"]],
                    final=final,
                    chance=util["chance"],
                    baseline=(
                        (util["untrained_accuracy"], util.get("untrained_ci95"))
                        if util.get("untrained_accuracy") is not None
                        else None
                    ),
                ),
                path=f"{PLOTS_DIR}/accuracy.png",
            )
        )
    if util.get("train_loss") and not facts["privacy"]["applied"]:
        figs.append(
            Figure(
                key="loss",
                title="Training loss over rounds",
                caption="The sites' mean training loss in each round (not released under DP, where it "
                "depends on the private records).",
                png=plots.loss_plot(
                    rounds=[r for r, _ in util["train_loss"]], loss=[v for _, v in util["train_loss"]]
                ),
                path=f"{PLOTS_DIR}/loss.png",
            )
        )
    series = epsilon_series(run=run)
    if facts["privacy"]["applied"] and series:
        figs.append(
            Figure(
                key="epsilon",
                title="Privacy spent over training rounds",
                caption="Cumulative ε after each round (from the privacy ledger when present). Every round "
                "of training spends some privacy; the curve must stay below any agreed budget.",
                png=plots.epsilon_plot(series=series, delta=facts["privacy"]["delta"]),
                path=f"{PLOTS_DIR}/epsilon.png",
            )
        )
    mia = outcomes.get("mia")
    if mia is not None:
        png = _read_png(mia.image)
        path = (
            f"attacks/{mia.image.name}"
            if png is not None and mia.image is not None
            else f"{PLOTS_DIR}/mia_roc.png"
        )
        if png is None and mia.status == "ok" and (curves := mia_curves(data=mia.data)):
            png = plots.roc_plot(curves=curves)
        if png is not None:
            figs.append(
                Figure(
                    key="attack_mia",
                    title="Membership inference ROC curve (log-log)",
                    caption="True-positive rate against false-positive rate of each membership attack, on "
                    "logarithmic axes so that the low false-positive region is visible; the dashed diagonal "
                    "is guessing.",
                    png=png,
                    path=path,
                )
            )
    client_roc = run.attacks_dir / "mia_client_roc.png"
    if mia is not None and (png := _read_png(client_roc)) is not None:
        figs.append(
            Figure(
                key="attack_mia_client",
                title="Client-level membership inference ROC curve (log-log)",
                caption="The same for the question whether a whole site took part in training.",
                png=png,
                path=f"attacks/{client_roc.name}",
            )
        )
    inv = outcomes.get("inversion")
    if inv is not None and (png := _read_png(inv.image)) is not None and inv.image is not None:
        figs.append(
            Figure(
                key="attack_inversion",
                title="Gradient inversion: originals and reconstructions",
                caption="Private training images of one site (as written by the attack) beside what the "
                "server reconstructed from that site's update.",
                png=png,
                path=f"attacks/{inv.image.name}",
            )
        )
    return figs


def _sweep_figures(facts: Mapping[str, Any]) -> list[Figure]:
    figs: list[Figure] = []
    utility: dict[str, list[tuple[float, float, float | None]]] = {}
    mia: dict[str, list[tuple[float, float]]] = {}
    audit: dict[str, list[tuple[float, float]]] = {}
    ceilings: dict[str, list[tuple[float, float]]] = {}
    for p in facts["points"]:
        label = f"{p.get('learner')}, {p.get('protocol') or p.get('aggregation')}"
        # the x axis shows the target ε the point was calibrated for (1, 8, ∞), not the ε reached
        # (0.999992, 7.99337), which the table gives
        eps = p["target_epsilon"] if p["target_epsilon"] is not None else p["epsilon"]
        if eps is None:
            continue
        if p["test_accuracy"] is not None:
            utility.setdefault(label, []).append((eps, p["test_accuracy"], p["ci95"]))
        m = p.get("attack_metrics") or {}
        if isinstance(m.get("mia_auc"), (int, float)):
            mia.setdefault(label, []).append((eps, float(m["mia_auc"])))
        if isinstance(m.get("audit_epsilon_lb"), (int, float)):
            audit.setdefault(label, []).append((eps, max(0.0, float(m["audit_epsilon_lb"]))))
            if isinstance(p.get("audit_ceiling"), (int, float)):
                ceilings.setdefault(label, []).append((eps, float(p["audit_ceiling"])))
    wwr = facts.get("what_was_run", {})
    untrained = wwr.get("untrained_accuracy")
    if utility:
        figs.append(
            Figure(
                key="privacy_utility",
                title="Privacy–utility curve",
                caption="Test accuracy (with 95 % confidence bars) at each target privacy level ε (the ε "
                "reached is in the table); further right = weaker privacy, the rightmost point (∞) is "
                "training without differential privacy. The axis runs from guessing (dotted) to 100 %, so "
                "differences within the confidence bars do not look like a trend"
                + ("; the dashed line is the untrained model on the same test tasks." if untrained else "."),
                png=plots.privacy_utility_plot(
                    series=utility,
                    chance=wwr.get("chance"),
                    baseline=(untrained, wwr.get("untrained_ci95")) if untrained is not None else None,
                ),
                path=f"{PLOTS_DIR}/privacy_utility.png",
            )
        )
    if mia:
        figs.append(
            Figure(
                key="attack_vs_epsilon",
                title="Membership inference against privacy level",
                caption="AUC of the strongest membership attack at each ε (0.5 = guessing).",
                png=plots.metric_vs_epsilon_plot(
                    series=mia, ylabel="membership-inference AUC", title="Attack success vs ε", reference=0.5
                ),
                path=f"{PLOTS_DIR}/mia_vs_epsilon.png",
            )
        )
    if audit:
        figs.append(
            Figure(
                key="audit_vs_epsilon",
                title="Empirical ε lower bound against the accountant's ε",
                caption="The audit's lower bound on ε at each target ε, beside the accountant's ε (dashed, "
                "y = x): a bound above that line would refute the guarantee. A bound of 0 means that the "
                "audit detected no leakage with its canaries, not that nothing leaks (at ∞ the run has no "
                "differential privacy and no guarantee)"
                + (
                    "; open triangles: the most the audit could show with its canaries (its ceiling)."
                    if ceilings
                    else "."
                ),
                png=plots.metric_vs_epsilon_plot(
                    series=audit,
                    ylabel="empirical ε lower bound",
                    title="Audit vs accountant",
                    reference=None,
                    accountant_line=True,
                    ceilings=ceilings or None,
                    ymin=0.0,
                ),
                path=f"{PLOTS_DIR}/audit_vs_epsilon.png",
            )
        )
    return figs


def _ledger_alert(run: RunData, name: str | None = None) -> str | None:
    """One line when the run's ledger is present and not verified."""
    ledger = run.ledger
    if not ledger.present or ledger.verified:
        return None
    where = f"{name}: " if name else ""
    file = ledger.path.name if ledger.path is not None else "privacy ledger"
    if ledger.integrity == "unverifiable":
        return f"{where}{file}: integrity cannot be verified ({ledger.problem}); its ε is unconfirmed."
    return f"{where}{file} failed its integrity check: {ledger.problem}"


def _checkpoint_alert(run: RunData, name: str | None = None) -> str | None:
    """One line when the run's checkpoint exists and is corrupted (read-only, header checks only)."""
    import json

    from safetensors import SafetensorError, safe_open

    info_path = run.path / "checkpoint" / "state.json"
    if not info_path.exists():
        return None  # a run that never finished a round, or a synthetic one: nothing to check
    where = f"{name}: " if name else ""
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        weights = info["weights"] if isinstance(info, dict) else None
        if not isinstance(weights, str) or Path(weights).name != weights:
            raise ValueError(f"it names no weights file ({weights!r})")
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        return f"{where}checkpoint/state.json is corrupted: {exc}"
    path = info_path.parent / weights
    try:
        with safe_open(str(path), framework="np") as fh:
            keys = set(fh.keys())
    except (OSError, SafetensorError) as exc:
        return f"{where}checkpoint/{weights} is corrupted or unreadable: {exc}"
    if "state" not in keys:
        return f"{where}checkpoint/{weights} is corrupted: it holds no 'state' array"
    return None


class _Render(Protocol):
    """A renderer of report facts: :func:`~evaluations.render_html.render_run_html` and its kin."""

    def __call__(self, *, facts: Mapping[str, Any], figures: Mapping[str, Figure], generated: str) -> str: ...


def _write(
    folder: Path,
    *,
    kind: str,
    facts: dict[str, Any],
    figures: list[Figure],
    render_html: _Render,
    render_md: _Render,
) -> ReportPaths:
    """Stamp the facts with the time, render them, and write the plots, HTML, Markdown and JSON."""
    by_key = {f.key: f for f in figures}
    generated = _now()
    facts["generated_utc"] = generated
    html = render_html(facts=facts, figures=by_key, generated=generated)
    md = render_md(facts=facts, figures=by_key, generated=generated)
    plots_dir = folder / PLOTS_DIR
    written: list[Path] = []
    for fig in figures:
        if fig.path.startswith(PLOTS_DIR + "/"):
            plots_dir.mkdir(exist_ok=True)
            out = folder / fig.path
            out.write_bytes(fig.png)
            written.append(out)
    doc = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "kind": kind,
        "generated_utc": facts.get("generated_utc"),
        **{k: v for k, v in facts.items() if k not in ("kind", "generated_utc")},
        "figures": {f.key: {"title": f.title, "path": f.path} for f in figures},
    }
    paths = ReportPaths(
        html=folder / "report.html",
        markdown=folder / "report.md",
        json=folder / "report.json",
        plots=tuple(written),
        integrity_problems=tuple(facts.get("integrity_alerts", ())),
    )
    atomic_write_text(path=paths.html, text=html)
    atomic_write_text(path=paths.markdown, text=md)
    atomic_write_text(path=paths.json, text=dumps_strict(value=doc))
    return paths


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _write_run_report(folder: Path) -> ReportPaths:
    run = load_run(path=folder)
    outcomes = read_attacks(run_dir=folder)
    facts = run_facts(run=run, outcomes=outcomes)
    facts["integrity_alerts"] = [a for a in (_ledger_alert(run), _checkpoint_alert(run)) if a]
    return _write(
        folder,
        kind="run",
        facts=facts,
        figures=_run_figures(run, facts, outcomes),
        render_html=render_run_html,
        render_md=render_run_md,
    )


def _write_sweep_report(folder: Path) -> ReportPaths:
    sweep = read_json(path=folder / "sweep.json")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("points"), list):
        raise ReportInputError(f"{folder / 'sweep.json'}: expected an object with a 'points' list")
    runs: dict[str, tuple[RunData, dict[str, AttackOutcome]] | None] = {}
    for p in sweep["points"]:
        if not isinstance(p, dict) or not p.get("name"):
            raise ReportInputError(f"{folder / 'sweep.json'}: every point needs a 'name'")
        run_dir = folder / str(p.get("run_dir") or "")
        runs[str(p["name"])] = (
            (load_run(path=run_dir), read_attacks(run_dir=run_dir))
            if p.get("run_dir") and is_run_dir(path=run_dir)
            else None
        )
    facts = sweep_facts(sweep_dir=folder, sweep=sweep, runs=runs)
    facts["integrity_alerts"] = [
        a
        for name, r in runs.items()
        if r is not None
        for a in (_ledger_alert(r[0], name), _checkpoint_alert(r[0], name))
        if a is not None
    ]
    return _write(
        folder,
        kind="sweep",
        facts=facts,
        figures=_sweep_figures(facts),
        render_html=render_sweep_html,
        render_md=render_sweep_md,
    )


def write_report(*, path: Path) -> ReportPaths:
    """Write ``report.html``, ``report.md`` and ``report.json`` into a run or sweep directory.

    Args:
        path: A run directory (holds ``config.toml``/``metrics.jsonl``/``summary.json``) or a sweep
            directory (holds ``sweep.json``, see :func:`evaluations.sweep.run_sweep`).

    Returns:
        The paths of the files written, with ``integrity_problems`` when a privacy ledger failed
        its check or could not be verified, or a checkpoint is corrupted (the report is written all
        the same, the failure first).

    Raises:
        ReportInputError: If ``path`` is neither a run nor a sweep directory, or one of the JSON files
            it needs is malformed (the message names the file).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ReportInputError(f"{folder} is not a directory; give a RUN_DIR or a SWEEP_DIR")
    if (folder / "sweep.json").is_file():
        return _write_sweep_report(folder)
    if is_run_dir(path=folder):
        return _write_run_report(folder)
    raise ReportInputError(
        f"{folder} is neither a run directory (config.toml, metrics.jsonl or summary.json) "
        "nor a sweep directory (sweep.json)"
    )
