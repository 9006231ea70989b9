"""A run killed mid-round and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_shared import run_and_kill
from runtime_cfg import REPO, tiny_config_dict

from secfed.config import config_from_dict
from secfed.errors import CheckpointError
from secfed.experiment import Experiment, read_metrics


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_resume_after_kill_matches_uninterrupted(tmp_path: Path) -> None:
    d = tiny_config_dict(experiment={"rounds": 6, "eval_every": 2}, learner={"local_steps": 15})
    cfg = config_from_dict(d, base_dir=REPO)
    full = Experiment(config=cfg).run(out_dir=tmp_path / "full", progress=False)

    run_dir = run_and_kill(cfg, tmp_path=tmp_path, after_rounds=2)
    done = len(read_metrics(run_dir))
    assert 1 <= done < 6, f"kill landed after {done} rounds"
    resumed = Experiment.resume(run_dir, progress=False)
    assert _strip(resumed.metrics) == _strip(full.metrics)
    assert resumed.summary["test_accuracy"] == full.summary["test_accuracy"]


def test_refuses_to_overwrite_and_bad_resume(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config_dict(experiment={"rounds": 1, "eval_every": 0}), base_dir=REPO)
    Experiment(config=cfg).run(out_dir=tmp_path / "r", progress=False)
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match="already holds a run"):
        Experiment(config=cfg).run(out_dir=tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    with pytest.raises(CheckpointError, match="config.toml is missing"):
        Experiment.resume(tmp_path / "nothing")
    (tmp_path / "r" / "summary.json").unlink()  # unfinished: a finished run is not resumed at all
    (tmp_path / "r" / "checkpoint" / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        Experiment.resume(tmp_path / "r")
