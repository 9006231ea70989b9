"""The last lines of ``make demo`` (examples/demo_summary.py, issue 18): accuracy against the
untrained model for both stages, ε with δ and the unit, the attack's AUC and TPR at low FPR, the
audit with its power, and the reports' paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from eval_rundirs import make_run

from evaluations.report import write_report

REPO = Path(__file__).resolve().parents[2]


def _summary_module():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import demo_summary
    finally:
        sys.path.pop(0)
    return demo_summary


def _baseline(run: Path, base: float) -> None:
    doc = json.loads((run / "summary.json").read_text())
    doc.update(untrained_test_accuracy=base, untrained_test_accuracy_ci95=0.01)
    (run / "summary.json").write_text(json.dumps(doc))


def test_demo_prints_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = make_run(tmp_path, name="plain", dp=False, aggregation="plain", attacks=())
    dp = make_run(tmp_path, name="dp", attacks=("mia",))
    _baseline(plain, 0.50)
    _baseline(dp, 0.95)  # the DP stage did not beat its untrained model
    (dp / "attacks" / "whitebox_audit.json").write_text(
        json.dumps({"config": {"num_canaries": 2000}, "one_run": {"epsilon": 1.6, "ceiling": 4.7}, "gdp": {}})
    )
    write_report(path=plain)
    write_report(path=dp)
    assert _summary_module().main([str(plain), str(dp)]) == 0
    out = capsys.readouterr().out
    assert "vs untrained model 50.0 ± 1.0 %" in out and "points)" in out
    assert "training did not beat the untrained model" in out
    assert "privacy: ε = " in out and "at δ = 1e-05 per record" in out
    assert "membership inference" in out and "AUC" in out and "at 0.1 % FPR" in out
    assert "with 2000 canaries this audit cannot detect leakage beyond ε = 4.7" in out
    assert str(dp / "report.html") in out and str(plain / "report.html") in out


def test_demo_summary_without_reports(tmp_path: Path) -> None:
    assert _summary_module().main([str(tmp_path), str(tmp_path)]) == 2
