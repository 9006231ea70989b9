"""Reports that cannot mislead a reader (issue 18): what the plots and tables show.

The reader's view is the figure itself: each test captures the matplotlib figure the report draws
(by wrapping ``evaluations.plots._png``) and reads its tick labels, axis range and lines. Old code:
x ticks "0.999992" and "7.99337", a y axis zoomed to the points (70.4-71.8 %), no accountant line
and a negative axis on "Audit vs accountant", an audit bound of 0.00 for the no-DP point without
explanation, 30 identical participation rows, "mlp (512 hidden units/filters, none normalisation)".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eval_rundirs import make_run, make_sweep_points, write_sweep_json

from evaluations import plots
from evaluations.facts import audit_reading, model_description
from evaluations.render_common import dropout_table
from evaluations.report import write_report
from evaluations.rundata import load_run


def _sweep(root: Path) -> Path:
    """Points at target ε 1 (reached 0.999992), 8 (reached 7.99337) and ∞, accuracies within noise."""
    sweep = root / "sweep"
    specs = [
        ("eps1", 1.0, (0.5, 0.999992), 0.704),
        ("eps8", 8.0, (4.0, 7.99337), 0.718),
        ("epsinf", float("inf"), None, 0.711),
    ]
    points = make_sweep_points(sweep, specs=specs, attacks=("audit",), audit_bounds=(0.2, 0.0))
    doc = {"format": "secfed.sweep", "version": 1, "epsilons": [1.0, 8.0, "inf"], "points": points}
    doc["untrained_test_accuracy"], doc["untrained_test_accuracy_ci95"] = 0.7104, 0.0071
    return write_sweep_json(sweep, doc)


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Title of each figure's axes -> the axes, for every figure the report draws."""
    captured: dict[str, Any] = {}
    real = plots._png

    def capture(fig: Any) -> bytes:
        ax = fig.axes[0]
        captured[ax.get_title()] = ax
        return real(fig)

    monkeypatch.setattr(plots, "_png", capture)
    return captured


def test_sweep_axes_read_naturally_and_do_not_magnify_noise(tmp_path: Path, figures: dict[str, Any]) -> None:
    write_report(path=_sweep(tmp_path))
    ax = figures["Privacy–utility trade-off"]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["1", "8", "∞ (no DP)"]  # old code: "0.999992", "7.99337"
    low, high = ax.get_ylim()
    assert high >= 100 and low <= 100 / 3  # runs from guessing (3-way) to 100 %, not 70.4-71.8 %
    names = [line.get_label() for line in ax.get_lines()]
    assert "untrained model" in names and "guessing" in names

    audit = figures["Audit vs accountant"]
    assert audit.get_ylim()[0] == 0  # a lower bound on ε is never negative
    assert "accountant's ε (y = x)" in [line.get_label() for line in audit.get_lines()]


def test_eps_label() -> None:
    assert [plots.eps_label(e) for e in (0.999992, 7.99337, 0.5, 12.34, 3.0, float("inf"))] == [
        "1",
        "7.99",
        "0.5",
        "12.3",
        "3",
        "∞",
    ]


def test_audit_bound_zero_is_explained(tmp_path: Path) -> None:
    no_dp = audit_reading(lower_bound=0.0, dp_applied=False, ceiling=None)
    assert "detected no leakage" in no_dp and "no differential privacy" in no_dp
    with_ceiling = audit_reading(lower_bound=0.0, dp_applied=True, ceiling=4.6)
    assert "cannot show more than ε = 4.6" in with_ceiling
    sweep = _sweep(tmp_path)
    write_report(path=sweep / "runs" / "epsinf")
    md = (sweep / "runs" / "epsinf" / "report.md").read_text(encoding="utf-8")
    assert "detected no leakage" in md and "not evidence that the run is private" in md


def test_identical_rounds_are_one_row(tmp_path: Path) -> None:
    rounds = [
        {"round": r, "included": 5, "dropped": [], "stragglers": [], "survivors": 5, "aborted": False}
        for r in range(1, 31)
    ]
    headers, rows = dropout_table(secagg={"rounds": rounds})
    assert rows == [["1–30", 5, [], [], 5, False]]  # old code: 30 identical rows
    rounds[9] = {**rounds[9], "dropped": [3], "survivors": 4}
    _, rows = dropout_table(secagg={"rounds": rounds})
    assert [r[0] for r in rows] == ["1–9", 10, "11–30"]


def test_model_row_reads_naturally(tmp_path: Path) -> None:
    run = load_run(path=make_run(tmp_path, dp=False, attacks=()))
    model = dict(run.config["model"])

    def described(**changes: Any) -> str | None:
        run.config["model"] = {**model, **changes}
        return model_description(run=run)

    assert described(arch="mlp", hidden=512, norm="none", layers=1) == (
        "MLP, 1 hidden layer of 512 units, no normalisation"
    )  # old code: "mlp (512 hidden units/filters, none normalisation)"
    assert described(arch="conv4", hidden=64, norm="group", groups=8) == (
        "Conv-4, 64 filters per layer, GroupNorm (8 groups)"
    )
    scatter = described(arch="mlp", hidden=256, norm="none", layers=1, frontend="scatter", scatter_j=2)
    assert scatter is not None and "ScatterNet front-end (J = 2" in scatter
