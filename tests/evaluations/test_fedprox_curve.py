"""The FedProx curve script reads finished runs' summaries and refuses bad input by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluations.benchmarks.fedprox_curve import FedProxPoint, draw_curve, main, read_point
from evaluations.errors import EvaluationError


def _run(tmp_path: Path, name: str, **summary: object) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run


FIGURES = {"val_supervised_accuracy": 0.8, "val_auc": 0.97, "test_supervised_accuracy": 0.75, "test_auc": 0.9}


def test_reads_the_four_figures_of_a_run(tmp_path: Path) -> None:
    run = _run(tmp_path, "a", **FIGURES)
    assert read_point(spec=f"0.1:1:{run}") == FedProxPoint(0.1, 1, 0.8, 0.97, 0.75, 0.9)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0.1:1", "MU:SEED:RUN_DIR"),
        ("x:1:d", "MU must be a number"),
        ("-1:0:d", "MU must be finite and >= 0"),
    ],
)
def test_malformed_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        read_point(spec=spec)


def test_a_run_without_a_supervised_figure_is_named(tmp_path: Path) -> None:
    run = _run(tmp_path, "b", **{k: v for k, v in FIGURES.items() if k != "test_auc"})
    with pytest.raises(EvaluationError, match="test_auc is missing"):
        read_point(spec=f"0:0:{run}")


def test_duplicate_points_are_refused_and_a_png_is_drawn(tmp_path: Path) -> None:
    p = FedProxPoint(0.0, 0, 0.7, 0.9, 0.6, 0.8)
    with pytest.raises(EvaluationError, match="share the same"):
        draw_curve(points=[p, p], title="t")
    png = draw_curve(points=[p, FedProxPoint(0.1, 0, 0.8, 0.95, 0.7, 0.85)], title="t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_the_png_and_exits_2_on_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [_run(tmp_path, f"r{i}", **FIGURES) for i in range(2)]
    out = tmp_path / "img" / "curve.png"
    assert main(["--out", str(out), f"0:0:{runs[0]}", f"0.1:0:{runs[1]}"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["--out", str(out), f"0:0:{tmp_path / 'missing'}"]) == 2
    assert "cannot read a finished run's summary" in capsys.readouterr().err
