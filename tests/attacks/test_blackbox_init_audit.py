"""Black-box audit with worst-case initial parameters (Annamalai & De Cristofaro 2024; issue 21).

The auditor's view: the final model only (the canary's loss on it), the initial model it chose, and
its own coin per trial. Negative control: noise cut 4x is detected at a fixed seed, the honest
mechanism is not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attacks.blackbox_init_audit import BlackBoxInitAuditConfig, main, run_blackbox_init_audit
from attacks.errors import AttackConfigError
from privacy.noise import fixed_noise_source


def _audit(**kw: object) -> dict:
    base: dict[str, object] = {
        "noise_multiplier": 2.0,  # 2 full-batch steps: accountant epsilon 3.19 at delta 1e-5 (RDP)
        "steps": 2,
        "trials": 120,
        "records": 200,
        "reference_runs": 0,
        "seed": 3,
    }
    base.update(kw)
    with fixed_noise_source(seed=3):
        return run_blackbox_init_audit(config=BlackBoxInitAuditConfig(**base)).to_dict()  # type: ignore[arg-type]


def test_config_is_checked() -> None:
    for bad in ({"init": "pretrained"}, {"sample_rate": 0.0}, {"trials": 2}):
        with pytest.raises(AttackConfigError):
            BlackBoxInitAuditConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(AttackConfigError):
        run_blackbox_init_audit(config={"trials": 10})  # type: ignore[arg-type]


def test_noise_cut_4x_is_detected_and_honest_is_not() -> None:
    honest = _audit()
    acc = honest["accountant_epsilon"]
    assert acc == pytest.approx(3.19, abs=0.05)
    assert not honest["violation"], honest["statement"]
    for b in honest["bounds"].values():
        assert b["epsilon"] <= b["ceiling"] + 1e-9
    cut = _audit(noise_factor=0.25)
    assert cut["violation"], cut["statement"]
    assert cut["bounds"]["gdp"]["epsilon"] > acc


def test_worst_case_initialisation_isolates_the_canary() -> None:
    """Pretraining on the other records makes their gradients vanish next to the canary's (which is
    clipped to C), unlike a random start."""
    worst = _audit(trials=8)
    rand = _audit(trials=8, init="random")
    assert worst["canary"]["median_record_gradient_norm_at_init"] < 0.05
    assert rand["canary"]["median_record_gradient_norm_at_init"] > 1.0
    assert worst["canary"]["gradient_norm_at_init"] > 1.0  # clipped to C = 1 by the mechanism


def test_cli_prints_progress_and_figures(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--noise-multiplier", "1", "--steps", "1", "--trials", "10"])
    out = capsys.readouterr()
    assert rc == 0
    assert "[blackbox-init-audit] trial 10/10" in out.err
    assert "accountant epsilon" in out.out and "ceiling" in out.out


def test_run_attack_mirrors_a_record_level_run(tmp_path: Path) -> None:
    """Through the runner: the run's ledger gives (z, q, steps), so the accountant's epsilon is the run's."""
    from attacks.options import AttackOptions
    from attacks.runner import run_attack
    from tests.attacks.test_whitebox_audit import _tiny_run

    run_dir = _tiny_run(tmp_path, {"mode": "record", "noise_multiplier": 0.8, "sample_rate": 0.5})
    summary = json.loads((run_dir / "summary.json").read_text())
    lines: list[str] = []
    doc = run_attack(
        run_dir=run_dir,
        attack="blackbox-init-audit",
        options=AttackOptions(canaries=8),
        progress=lines.append,
    )
    assert doc["config"]["trials"] == 8 and doc["config"]["steps"] == doc["run_privacy"]["steps"]
    assert doc["accountant_epsilon"] == pytest.approx(summary["epsilon"], rel=1e-3)
    assert (run_dir / "attacks" / "blackbox_init_audit.json").is_file()
    assert any(line.startswith("trial 8/8") for line in lines)
    with pytest.raises(AttackConfigError, match="record-level"):
        run_attack(run_dir=_tiny_run(tmp_path / "c", {"mode": "client"}), attack="blackbox-init-audit")
