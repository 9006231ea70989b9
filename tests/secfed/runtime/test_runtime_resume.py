"""A run killed mid-round and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runtime_cfg import REPO, tiny_config_dict

from secfed.config import config_from_dict, config_to_toml
from secfed.errors import CheckpointError
from secfed.experiment import Experiment, read_metrics


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def test_resume_after_kill_matches_uninterrupted(tmp_path: Path) -> None:
    d = tiny_config_dict(experiment={"rounds": 6, "eval_every": 2}, learner={"local_steps": 15})
    cfg = config_from_dict(d, base_dir=REPO)
    full = Experiment(config=cfg).run(out_dir=tmp_path / "full", progress=False)

    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text(config_to_toml(cfg))
    run_dir = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "secfed", "run", str(cfg_file), "--out", str(run_dir), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(read_metrics(run_dir)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
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
    (tmp_path / "r" / "checkpoint" / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        Experiment.resume(tmp_path / "r")
