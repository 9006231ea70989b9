"""A run records the code it ran: the commit when it started, marked ``-dirty`` with local edits.

Found in review: ``summary.json``'s ``code_version`` was read after the final evaluation, so a
commit made while a long run trained was recorded as that run's code.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from runtime_cfg import tiny_config_dict

import secfed.experiment as experiment
from secfed.config import config_from_dict
from secfed.experiment import Experiment


def test_the_recorded_code_version_is_read_when_the_run_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phase = {"now": "start"}
    real_final = experiment.final_evaluation

    def final_evaluation(**kwargs):  # type: ignore[no-untyped-def]
        phase["now"] = "after-training"  # stands for a commit made while the run trained
        return real_final(**kwargs)

    monkeypatch.setattr(experiment, "final_evaluation", final_evaluation)
    monkeypatch.setattr(experiment, "_code_version", lambda: f"code-at-{phase['now']}")
    cfg = config_from_dict(tiny_config_dict(experiment={"rounds": 1, "eval_every": 0}))
    Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert phase["now"] == "after-training"
    assert summary["code_version"] == "code-at-start"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_code_version_names_the_commit_and_marks_local_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    module = repo / "pkg" / "experiment.py"
    module.write_text("x = 1\n", encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.setattr(experiment, "__file__", str(module))
    assert experiment._code_version() == head
    (repo / "untracked.txt").write_text("not code\n", encoding="utf-8")
    assert experiment._code_version() == head  # untracked files do not make the code dirty
    module.write_text("x = 2\n", encoding="utf-8")
    assert experiment._code_version() == head + "-dirty"
    monkeypatch.setattr(experiment, "__file__", str(tmp_path / "elsewhere" / "experiment.py"))
    (tmp_path / "elsewhere").mkdir()
    assert experiment._code_version() == "unknown"
