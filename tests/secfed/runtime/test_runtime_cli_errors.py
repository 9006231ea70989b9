"""Bad input at the command line: typed errors naming the file, documented exit codes, no traceback.

From the user's side: each case runs ``python -m secfed`` in a fresh process (as a user would) and
reads its exit status and stderr. A corrupted checkpoint exits 1 with a CheckpointError naming
the file, a folder that is not a run exits 2, ``report`` exits non-zero on a corrupted run
directory (after writing the report), and ``--resume`` on a finished run does not evaluate again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runtime_cfg import REPO, tiny_config_dict

import secfed.experiment as experiment
from secfed.cli import main
from secfed.config import config_from_dict, config_to_toml


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished run (3 rounds, checkpoint, metrics, summary)."""
    cfg = config_from_dict(tiny_config_dict(experiment={"eval_every": 1}), base_dir=REPO)
    out = tmp_path_factory.mktemp("finished") / "run"
    experiment.Experiment(config=cfg).run(out_dir=out, progress=False)
    return out


def _copy(run: Path, tmp_path: Path, *, finished: bool) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    if not finished:
        (dst / "summary.json").unlink()
    return dst


def _weights(run: Path) -> Path:
    return run / "checkpoint" / json.loads((run / "checkpoint" / "state.json").read_text())["weights"]


def _truncate_checkpoint(run: Path) -> Path:
    path = _weights(run)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_metrics(run: Path) -> Path:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = lines[0][: len(lines[0]) // 2]  # a torn line in the middle: not a crash, corruption
    path.write_text("\n".join(lines) + "\n")
    return path


def _secfed(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "secfed", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
        check=False,
    )


def _check(proc: subprocess.CompletedProcess[str], *, code: int, names: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.splitlines()[-1].startswith("secfed: error:"), proc.stderr  # after any progress
    assert names in proc.stderr, proc.stderr


def test_missing_and_unreadable_config_files(tmp_path: Path) -> None:
    _check(_secfed("run", tmp_path / "missing.toml"), code=2, names="missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("not = [toml\n")
    _check(_secfed("config", bad), code=2, names="bad.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(128, 256)))  # not UTF-8 (old code: UnicodeDecodeError traceback)
    _check(_secfed("run", binary), code=2, names="binary.toml")


def test_truncated_checkpoint_is_a_checkpoint_error(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path, finished=False)
    weights = _truncate_checkpoint(run)
    # old code: safetensors' SafetensorError traceback, exit 1
    _check(_secfed("run", "--resume", run, "--no-progress"), code=1, names=str(weights))
    _check(_secfed("attack", run, "--attack", "mia"), code=1, names=str(weights))


def test_corrupted_metrics_stop_resume_and_report(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path, finished=False)
    metrics = _corrupt_metrics(run)
    before = metrics.read_text()
    # old code: resume silently dropped every round after the corrupted line and rewrote the file
    _check(_secfed("run", "--resume", run, "--no-progress"), code=1, names=str(metrics))
    assert metrics.read_text() == before
    _check(_secfed("report", run), code=2, names=str(metrics))


def test_report_exits_nonzero_on_a_corrupted_checkpoint(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path, finished=True)
    weights = _truncate_checkpoint(run)
    proc = _secfed("report", run)  # old code: exit 0
    _check(proc, code=1, names=weights.name)
    assert "integrity check failed" in proc.stderr
    assert proc.stdout.strip() == str(run / "report.html")  # still written, the failure first
    assert weights.name in (run / "report.md").read_text()


def test_resume_of_a_folder_that_is_not_a_run_exits_2(tmp_path: Path) -> None:
    _check(_secfed("run", "--resume", tmp_path), code=2, names="not a run directory")  # old code: 1


def test_resume_of_a_finished_run_does_not_evaluate_again(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(finished_run, tmp_path, finished=True)
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def no_evaluation(**_: object) -> tuple[float, float]:
        raise AssertionError("the final evaluation ran again")

    monkeypatch.setattr(experiment, "final_evaluation", no_evaluation)
    monkeypatch.setattr(experiment, "evaluate_model", no_evaluation)
    assert main(["run", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "is complete; nothing to resume" in out.err
    summary = json.loads(files["summary.json"])
    assert f"{100 * summary['test_accuracy']:.2f}" in out.out  # its summary, printed again
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files  # nothing rewritten


def test_config_with_few_final_episodes_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from secfed.cli import MIN_FINAL_EVAL_EPISODES, few_episodes_warning

    assert few_episodes_warning(MIN_FINAL_EVAL_EPISODES) is None
    assert few_episodes_warning(1000) is None
    text = few_episodes_warning(20)
    assert text is not None and "20 test episodes" in text and "600" in text
    cfg = config_from_dict(tiny_config_dict(experiment={"rounds": 1, "eval_every": 0}), base_dir=REPO)
    f = tmp_path / "c.toml"
    f.write_text(config_to_toml(cfg))
    assert main(["run", str(f), "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "fewer than the 600" in out.err and "fewer than the 600" in out.out
