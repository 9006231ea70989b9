"""The ``secfed sweep`` and ``secfed report`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_rundirs import make_run

from secfed.cli import build_parser, main

TINY = """
[experiment]
rounds = 1
eval_every = 0
final_eval_episodes = 10
seed = 1
[data]
dataset = "digits"
[partition]
num_sites = 3
[task]
n_way = 3
k_shot = 1
q_query = 2
test_n_way = 3
test_q_query = 2
[model]
arch = "mlp"
hidden = 8
norm = "none"
layers = 1
[learner]
name = "protonet"
local_steps = 1
"""


def test_commands_are_registered() -> None:
    text = build_parser().format_help()
    assert "sweep" in text and "report" in text


def test_report_prints_the_html_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, attacks=())
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(run / "report.html") and Path(out).is_file()


def test_report_of_a_wrong_folder_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilons", "1,abc"], "'abc' is not a number"),
        (["--epsilons", "inf", "--learners", "bogus"], "choose from"),
        (["--epsilons", "inf", "--aggregation", ","], "at least one"),
        (["--epsilons", "inf", "--set", "experiment.rounds=0"], "experiment.rounds"),
    ],
)
def test_sweep_rejects_bad_arguments_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY, encoding="utf-8")
    out = tmp_path / "sweep"
    assert main(["sweep", str(cfg), *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "runs").exists()  # nothing was trained


def test_sweep_command_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY, encoding="utf-8")
    out = tmp_path / "sweep"
    rc = main(
        ["sweep", str(cfg), "--epsilons", "inf", "--attacks", "none", "--out", str(out), "--no-progress"]
    )
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "| epsinf | ∞ (no DP) |" in stdout and f"report: {out / 'report.html'}" in stdout
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["attacks"] == [] and doc["points"][0]["status"] == "ran"
    assert (out / "report.html").is_file() and (out / "report_plots" / "privacy_utility.png").is_file()
