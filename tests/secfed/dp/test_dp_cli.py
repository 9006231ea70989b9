"""``secfed privacy epsilon`` / ``secfed privacy calibrate``: values, round trips and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from privacy.calibration import epsilon_for
from secfed.cli import main
from secfed.config import load_config
from secfed.federation.server import planned_participation

REPO = Path(__file__).resolve().parents[3]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["privacy", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def exit_status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit status and output of a command that should fail (argparse exits, main returns)."""
    try:
        status = main(["privacy", *argv])
    except SystemExit as exc:
        status = int(exc.code or 0)
    captured = capsys.readouterr()
    return status, captured.err + captured.out


def test_epsilon_matches_the_accountant_and_reference(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--noise-multiplier", "1", "--sample-rate", "0.01", "--steps", "1000", "--delta", "1e-5")
    out = run_json(capsys, "epsilon", *args)
    assert out["accountant"] == "rdp"
    assert out["epsilon"] == epsilon_for(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=1e-5)
    assert out["epsilon"] == pytest.approx(2.1014, abs=1e-4)  # Opacus / dp_accounting RDP (PRIVACY_NOTES §1)
    prv = run_json(capsys, "epsilon", *args, "--accountant", "prv")
    assert prv["epsilon"] == pytest.approx(1.8384, abs=0.02) and prv["epsilon"] < out["epsilon"]
    assert main(["privacy", "epsilon", *args]) == 0
    text = capsys.readouterr().out
    assert "epsilon = 2.1014" in text and "1000 steps" in text
    more = run_json(
        capsys,
        "epsilon",
        "--noise-multiplier",
        "1",
        "--sample-rate",
        "0.01",
        "--steps",
        "2000",
        "--delta",
        "1e-5",
    )
    assert more["epsilon"] > out["epsilon"]  # more steps, more epsilon


@pytest.mark.parametrize(("accountant", "target"), [("rdp", 1.0), ("rdp", 8.0), ("prv", 3.0)])
def test_calibrate_round_trip(capsys: pytest.CaptureFixture[str], accountant: str, target: float) -> None:
    common = ("--delta", "1e-5", "--sample-rate", "0.01", "--steps", "1000", "--accountant", accountant)
    cal = run_json(capsys, "calibrate", "--target-epsilon", str(target), *common)
    sigma = cal["noise_multiplier"]
    back = run_json(capsys, "epsilon", "--noise-multiplier", repr(sigma), *common)
    assert back["epsilon"] == pytest.approx(cal["epsilon"])
    assert back["epsilon"] <= target  # epsilon(calibrated sigma) <= target
    assert back["epsilon"] > 0.97 * target  # and the noise is not wastefully large
    less = run_json(capsys, "epsilon", "--noise-multiplier", repr(sigma * 0.97), *common)
    assert less["epsilon"] > target  # 3% less noise misses the target


def test_calibrate_reference_values(capsys: pytest.CaptureFixture[str]) -> None:
    # get_noise_multiplier (RDP) for epsilon 1/3/8 at q=0.01, T=1000, delta=1e-5: 1.523/0.866/0.616.
    for target, sigma in ((1.0, 1.523), (3.0, 0.866), (8.0, 0.616)):
        out = run_json(
            capsys,
            "calibrate",
            "--target-epsilon",
            str(target),
            "--delta",
            "1e-5",
            "--sample-rate",
            "0.01",
            "--steps",
            "1000",
        )
        assert out["noise_multiplier"] == pytest.approx(sigma, rel=0.01)


def write_config(tmp_path: Path, sections: dict[str, dict[str, Any]] | None = None, **privacy: Any) -> Path:
    data: dict[str, dict[str, Any]] = {
        "experiment": {"rounds": 10},
        "data": {"dataset": "digits"},
        "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        "learner": {"name": "protonet", "local_steps": 3},
        "federation": {"sampling": "poisson", "sample_rate": 0.1},
        "privacy": {"mode": "client", "noise_multiplier": 1.2, "sample_rate": 0.02, **privacy},
    }
    for name, values in (sections or {}).items():
        data.setdefault(name, {}).update(values)
    path = tmp_path / "cfg.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_epsilon_of_a_planned_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_config(tmp_path)
    out = run_json(capsys, "epsilon", "--config", str(path))
    # record level: the rounds of the site that Poisson client sampling (q = 0.1) picks most often
    site_rounds = max(planned_participation(config=load_config(path)))
    assert out["record_rounds"] == site_rounds < 10
    assert out["record_steps"] == 3 * site_rounds
    # client level: per participation (the sample is public), the same site's rounds, q = 1
    assert out["rounds"] == 10 and out["client_rounds"] == site_rounds and out["client_sample_rate"] == 0.1
    assert out["record_epsilon"] == epsilon_for(
        noise_multiplier=1.2, sample_rate=0.02, steps=3 * site_rounds, delta=1e-5
    )
    assert out["client_epsilon"] == epsilon_for(
        noise_multiplier=1.2, sample_rate=1.0, steps=site_rounds, delta=1e-5
    )
    assert out["client_epsilon"] > epsilon_for(noise_multiplier=1.2, sample_rate=0.1, steps=10, delta=1e-5)
    assert out["calibrated_for_target_epsilon"] is None
    over = run_json(
        capsys, "epsilon", "--config", str(path), "--set", "experiment.rounds=20", "--delta", "1e-6"
    )
    assert over["delta"] == 1e-6 and over["client_epsilon"] > out["client_epsilon"]
    assert main(["privacy", "epsilon", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "record level" in text and "client level" in text
    assert f"in {site_rounds} of 10 rounds" in text and "no sampling amplification" in text

    target = write_config(tmp_path, target_epsilon=2.0)
    cal = run_json(capsys, "epsilon", "--config", str(target))
    assert cal["calibrated_for_target_epsilon"] == 2.0
    assert 0.97 * 2.0 < cal["client_epsilon"] <= 2.0  # client mode: calibrated at the client level


def test_epsilon_of_a_distributed_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fed = {"sampling": "fixed", "aggregation": "secagg"}
    path = write_config(tmp_path, {"federation": fed}, mode="distributed", mechanism="ddg")
    out = run_json(capsys, "epsilon", "--config", str(path))
    # Distributed DDG with every planned client surviving is close to (and not below) the Gaussian.
    assert out["client_epsilon"] <= out["distributed_epsilon"] < 1.05 * out["client_epsilon"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["epsilon", "--noise-multiplier", "1", "--sample-rate", "0.01", "--steps", "10", "--delta", "2"],
            "--delta",
        ),
        (
            [
                "epsilon",
                "--noise-multiplier",
                "1",
                "--sample-rate",
                "1.5",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "--sample-rate",
        ),
        (
            [
                "epsilon",
                "--noise-multiplier",
                "-1",
                "--sample-rate",
                "0.1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "--noise-multiplier",
        ),
        (
            [
                "epsilon",
                "--noise-multiplier",
                "1",
                "--sample-rate",
                "0.1",
                "--steps",
                "ten",
                "--delta",
                "1e-5",
            ],
            "--steps",
        ),
        (
            [
                "epsilon",
                "--noise-multiplier",
                "nan",
                "--sample-rate",
                "0.1",
                "--steps",
                "1",
                "--delta",
                "1e-5",
            ],
            "finite",
        ),
        (["epsilon", "--noise-multiplier", "1", "--sample-rate", "0.1", "--delta", "1e-5"], "--steps"),
        (
            [
                "epsilon",
                "--noise-multiplier",
                "1",
                "--sample-rate",
                "0.1",
                "--steps",
                "5",
                "--delta",
                "1e-5",
                "--accountant",
                "gdp",
            ],
            "--accountant",
        ),
        (["epsilon", "--config", "/nonexistent/cfg.toml"], "not found"),
        (["epsilon", "--set", "privacy.delta=0.1"], "--set needs --config"),
        (
            [
                "calibrate",
                "--target-epsilon",
                "0",
                "--delta",
                "1e-5",
                "--sample-rate",
                "0.1",
                "--steps",
                "10",
            ],
            "--target-epsilon",
        ),
        (
            ["calibrate", "--target-epsilon", "1", "--delta", "1e-5", "--sample-rate", "0.1", "--steps", "0"],
            "--steps",
        ),
        (["calibrate", "--target-epsilon", "1", "--delta", "1e-5", "--sample-rate", "0.1"], "--steps"),
        (
            [
                "calibrate",
                "--target-epsilon",
                "1e-9",
                "--delta",
                "1e-5",
                "--sample-rate",
                "1",
                "--steps",
                "1000000",
            ],
            "cannot calibrate",
        ),
        ([], "SUBCOMMAND"),
    ],
)
def test_bad_input_exits_with_status_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, output = exit_status(capsys, *argv)
    assert status == 2
    assert message in output


def test_config_with_explicit_values_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_config(tmp_path)
    status, err = exit_status(capsys, "epsilon", "--config", str(path), "--steps", "5")
    assert status == 2 and "--config reads" in err
    bad = write_config(tmp_path, noise_multiplier=-1.0)
    status, err = exit_status(capsys, "epsilon", "--config", str(bad))
    assert status == 2 and "privacy.noise_multiplier" in err
