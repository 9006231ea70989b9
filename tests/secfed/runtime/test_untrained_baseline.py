"""The untrained baseline inside every run (issue 18).

From a reader of the run directory: ``summary.json`` carries the starting model's accuracy on the
very test tasks of the final evaluation, the console puts the accuracy beside it and says so in
plain words when training did not beat it, and the standalone scripts give the same figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from runtime_cfg import REPO, tiny_config_dict

from secfed.cli import main as cli_main
from secfed.cli import untrained_lines
from secfed.components import build_learner, build_test_source, load_splits, model_num_classes
from secfed.config import config_from_dict, config_to_toml
from secfed.experiment import Experiment, evaluate_model, initial_model, score_untrained
from secfed.seeding import derive_seed


def _run(tmp_path: Path, **experiment: object) -> dict:
    cfg = config_from_dict(tiny_config_dict(experiment=dict(experiment)), base_dir=REPO)
    return Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False).summary


def test_summary_carries_the_untrained_model_on_the_final_tasks(tmp_path: Path) -> None:
    summary = _run(tmp_path)
    cfg = config_from_dict(tiny_config_dict(), base_dir=REPO)
    # recomputed independently: the seeded starting model on the final evaluation's seeded tasks
    train, test = load_splits(config=cfg)
    model = initial_model(
        config=cfg, input_shape=test.input_shape, num_classes=model_num_classes(config=cfg, train=train)
    )
    acc, ci = evaluate_model(
        learner=build_learner(config=cfg),
        model=model,
        source=build_test_source(config=cfg, test=test),
        episodes=cfg.experiment.final_eval_episodes,
        seed=derive_seed(cfg.experiment.seed, "final-eval"),
    )
    assert summary["untrained_test_accuracy"] == pytest.approx(acc)
    assert summary["untrained_test_accuracy_ci95"] == pytest.approx(ci)
    # the figure does not depend on the run: the standalone function gives the same
    assert score_untrained(config=cfg) == pytest.approx((acc, ci))
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["untrained_test_accuracy"] == pytest.approx(acc)


def test_untrained_baseline_false_skips_it(tmp_path: Path) -> None:
    summary = _run(tmp_path, untrained_baseline=False)
    assert "untrained_test_accuracy" not in summary
    assert untrained_lines(summary) == []


def test_console_says_when_training_did_not_beat_it() -> None:
    beaten = {"test_accuracy": 0.9, "test_accuracy_ci95": 0.01}
    lines = untrained_lines({**beaten, "untrained_test_accuracy": 0.5, "untrained_test_accuracy_ci95": 0.01})
    assert len(lines) == 1 and "untrained model 50.00" in lines[0] and "+40.00 points" in lines[0]
    lines = untrained_lines(
        {**beaten, "untrained_test_accuracy": 0.895, "untrained_test_accuracy_ci95": 0.01}
    )
    assert lines[-1].startswith("training did not beat the untrained model")
    lines = untrained_lines({**beaten, "untrained_test_accuracy": 0.95, "untrained_test_accuracy_ci95": 0.01})
    assert lines[-1].startswith("training did not beat the untrained model")


def test_cli_prints_the_baseline_after_the_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config_from_dict(tiny_config_dict(), base_dir=REPO)
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(cfg))
    assert cli_main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    acc_line = next(i for i, line in enumerate(out) if line.startswith("test accuracy"))
    assert out[acc_line + 1].startswith("untrained model ")


def test_untrained_baseline_script_reads_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = _run(tmp_path)
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import untrained_baseline
    finally:
        sys.path.pop(0)
    acc, ci, episodes = untrained_baseline.untrained_accuracy(run_dir=tmp_path / "run")
    assert (acc, ci) == pytest.approx(
        (summary["untrained_test_accuracy"], summary["untrained_test_accuracy_ci95"])
    )
    # without the figure in summary.json it recomputes the same value
    doc = json.loads((tmp_path / "run" / "summary.json").read_text())
    del doc["untrained_test_accuracy"], doc["untrained_test_accuracy_ci95"]
    (tmp_path / "run" / "summary.json").write_text(json.dumps(doc))
    assert untrained_baseline.untrained_accuracy(run_dir=tmp_path / "run")[:2] == pytest.approx((acc, ci))
    assert episodes == 20
