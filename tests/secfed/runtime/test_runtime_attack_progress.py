"""Long attacks say what they are doing: ``secfed attack`` prints progress lines on stderr.

Old code: ``secfed attack RUN --attack mia`` on the demo run ran 559 s with no output at all (the
replica federations run with their own log silenced), inversion likewise. The user's view: the
lines on stderr, in order, the first before any replica or scenario starts working.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_cfg import REPO, tiny_config_dict

from attacks.mia import collect_reference_stats
from attacks.options import AttackOptions
from attacks.runner import run_attack
from secfed.cli import main
from secfed.config import config_from_dict
from secfed.experiment import Experiment


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = config_from_dict(tiny_config_dict(experiment={"rounds": 1, "eval_every": 0}), base_dir=REPO)
    out = tmp_path_factory.mktemp("attacked") / "run"
    Experiment(config=cfg).run(out_dir=out, progress=False)
    return out


def test_mia_reports_every_replica_as_it_starts_and_ends(finished_run: Path) -> None:
    lines: list[str] = []
    options = AttackOptions(references=2, rounds=1, levels=("record",))
    run_attack(run_dir=finished_run, attack="mia", options=options, progress=lines.append)
    assert lines[0].startswith("membership inference against site 0")  # before any training
    starts = [i for i, line in enumerate(lines) if "training ..." in line]
    ends = [i for i, line in enumerate(lines) if " done in " in line]
    assert len(starts) == len(ends) == 3
    assert all(s < e for s, e in zip(starts, ends, strict=True))
    assert "replica 3/3" in lines[ends[-1]] and "left" in lines[ends[0]]
    assert lines[-1].startswith("done: 3 replicas trained")


def test_attack_command_prints_progress_unless_told_not_to(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["attack", str(finished_run), "--attack", "inversion", "--iterations", "2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("[inversion] ")]
    assert lines and "loading" in lines[0]
    assert any("scenario 1/" in ln and "..." in ln for ln in lines)
    assert any("scenario 1/" in ln and "done in" in ln for ln in lines)
    assert main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_reference_model_loop_reports_progress() -> None:
    lines: list[str] = []

    def train_reference(*, include_mask: np.ndarray):  # type: ignore[no-untyped-def]
        return lambda idx: include_mask[idx].astype(float)

    collect_reference_stats(train_reference=train_reference, pool_size=8, num_models=3, progress=lines.append)
    assert [ln.split(" done")[0] for ln in lines if " done " in ln] == [
        f"reference model {r}/3" for r in (1, 2, 3)
    ]
    assert lines[0] == "reference model 1/3 training ..."
