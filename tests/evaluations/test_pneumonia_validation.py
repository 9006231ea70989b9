"""The PneumoniaMNIST validation runner: settings parse, rows carry no test-split figure, grids load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluations.benchmarks import pneumonia_validation as pv
from secfed.config import load_config
from secfed.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_parse_setting_keeps_dots_in_names_and_values() -> None:
    name, ov = pv.parse_setting("q05_lr2.5=learner.local_lr=2.5,federation.ema=0.95")
    assert name == "q05_lr2.5"
    assert ov == ["learner.local_lr=2.5", "federation.ema=0.95"]


@pytest.mark.parametrize(
    "bad", ["noequals", "=learner.local_lr=1", "n=", "n=local_lr=1", "n=learner.local_lr"]
)
def test_parse_setting_rejects_malformed(bad: str) -> None:
    with pytest.raises(ConfigError, match="--setting"):
        pv.parse_setting(bad)


def test_row_reads_validation_keys_only(tmp_path: Path) -> None:
    """A finished run is reused, and its test-split figures never reach the row."""
    run = tmp_path / "s__s0"
    run.mkdir()
    summary = {"val_auc": 0.9, "val_auc_ci95": [0.85, 0.94], "test_auc": 0.5, "test_sensitivity": 1.0}
    (run / "summary.json").write_text(json.dumps(summary))
    row = pv.validate_setting(config_path=tmp_path / "unused.toml", overrides=["a.b=1"], seed=0, run_dir=run)
    assert row["val_auc"] == 0.9 and row["wall_s"] is None
    assert not [k for k in row if k.startswith("test")]


def test_summarise_mean_and_spread() -> None:
    rows = [{"setting": "a", "val_auc": v} for v in (0.8, 0.9, 1.0)] + [{"setting": "b", "val_auc": 0.7}]
    a, b = pv.summarise(rows=rows)
    assert (a["n"], a["min"], a["max"]) == (3, 0.8, 1.0)
    assert a["mean"] == pytest.approx(0.9) and a["sd"] == pytest.approx(0.1)
    assert (b["n"], b["sd"]) == (1, 0.0)


@pytest.mark.parametrize("grid", sorted(pv.GRIDS))
def test_every_grid_setting_is_a_valid_configuration(grid: str) -> None:
    for name, overrides in pv.GRIDS[grid].items():
        cfg = load_config(REPO / "examples" / "pneumonia_dp.toml", overrides=overrides)
        assert cfg.privacy.expected_batch == round(cfg.privacy.sample_rate * 650), name


def test_main_rejects_bad_seeds_before_running(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--seeds"):
        pv.main(
            [
                str(REPO / "examples" / "pneumonia_dp.toml"),
                "--out",
                str(tmp_path),
                "--grid",
                "eps1",
                "--seeds",
                "1,1",
            ]
        )
    assert not (tmp_path / "rows.jsonl").exists()
