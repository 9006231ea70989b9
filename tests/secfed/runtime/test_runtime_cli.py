"""The command line: help, validation errors before any work, and a real run."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_cfg import REPO, run_example, tiny_config_dict

from secfed.cli import main
from secfed.config import config_from_dict, config_to_toml


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--resume" in capsys.readouterr().out


def test_bad_value_fails_before_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    assert run_example(setting="learner.name=foo", out=out) == 2
    assert "learner.name = 'foo' is not allowed" in capsys.readouterr().err
    assert not out.exists()


def test_run_and_resume_complete_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config_from_dict(tiny_config_dict(experiment={"rounds": 2, "eval_every": 0}), base_dir=REPO)
    f = tmp_path / "c.toml"
    f.write_text(config_to_toml(cfg))
    assert (
        main(["run", str(f), "--out", str(tmp_path / "run"), "--no-progress", "--set", "experiment.rounds=1"])
        == 0
    )
    assert "test accuracy" in capsys.readouterr().out
    assert main(["run", "--resume", str(tmp_path / "run"), "--no-progress"]) == 0
