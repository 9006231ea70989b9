"""White-box one-run audit (issue 21): every privacy mode, from the auditor's view (released sums only).

Negative controls inject the bugs an audit exists to catch into the real mechanisms (noise cut 2x
and 4x, clipping disabled, one canary moving two units = sensitivity understated 2x); each must be
detected (a bound above the accountant's epsilon) at fixed seeds, in every mode. The positive
control: the honest mechanisms stay below the accountant's epsilon.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from attacks_toy import tiny_config

from attacks.audit import one_run_audit
from attacks.audit_harness import gaussian_epsilon
from attacks.errors import AttackConfigError, AttackInputError
from attacks.fdp import (
    gdp_audit,
    gdp_ceiling,
    gdp_delta,
    gdp_epsilon,
    gdp_mu_from_rates,
    one_run_gdp_audit,
    one_run_gdp_p_value,
)
from attacks.options import AttackOptions
from attacks.whitebox_audit import WhiteBoxAuditConfig, accountant_epsilon, run_whitebox_audit
from privacy.noise import fixed_noise_source

MODES = ("record", "episode", "client", "distributed")
Z = 1.0  # accountant epsilon about 4.8 for one release at delta 1e-5 (RDP)
BUGS: dict[str, dict[str, Any]] = {
    "noise_cut_2x": {"noise_factor": 0.5},
    "noise_cut_4x": {"noise_factor": 0.25},
    "clipping_disabled": {"clip_factor": 1e3},
    "sensitivity_understated_2x": {"group_size": 2},
}


def _audit(mode: str, seed: int = 3, **bug: Any) -> dict:
    cfg = WhiteBoxAuditConfig(
        mode=mode,
        noise_multiplier=Z,
        num_canaries=1000,
        dim=1024,
        background=8,
        reference_runs=0,
        seed=seed,
        **bug,
    )
    with fixed_noise_source(seed=seed):
        return run_whitebox_audit(config=cfg).to_dict()


# ---------------------------------------------------------------- pure math


def test_gdp_delta_matches_analytic_gaussian() -> None:
    for mu in (0.5, 1.0, 2.0):
        eps = gdp_epsilon(mu=mu, delta=1e-5)
        assert eps == pytest.approx(gaussian_epsilon(mu=mu, delta=1e-5), rel=1e-6)
        assert gdp_delta(epsilon=eps, mu=mu) == pytest.approx(1e-5, rel=1e-3)
    assert gdp_epsilon(mu=0.0, delta=1e-5) == 0.0
    assert gdp_mu_from_rates(fpr=0.5, fnr=0.5) == 0.0
    assert gdp_mu_from_rates(fpr=0.1587, fnr=0.5) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(AttackInputError):
        gdp_mu_from_rates(fpr=1.5, fnr=0.1)
    with pytest.raises(AttackConfigError):
        gdp_epsilon(mu=1.0, delta=0.0)


def test_gdp_bound_is_sound_and_sharp_on_a_known_gaussian() -> None:
    rng = np.random.default_rng(0)
    m = 4000
    for mu in (0.5, 1.0, 2.0):
        bounds = []
        for _ in range(20):
            inc = rng.random(m) < 0.5
            s = inc * mu + rng.standard_normal(m)
            bounds.append(gdp_audit(scores=s, included=inc, delta=1e-5).mu)
        # sound: at 95 % confidence, at most a few of 20 runs may exceed the truth
        assert sum(b > mu for b in bounds) <= 3
        assert np.median(bounds) > 0.7 * mu  # sharp


def test_ceilings_bound_achieved_and_perfect_guesses_reach_them() -> None:
    rng = np.random.default_rng(1)
    inc = rng.random(1000) < 0.5
    c = gdp_ceiling(included=inc, delta=1e-5)
    assert gdp_audit(scores=inc.astype(float), included=inc, delta=1e-5).mu == c.mu
    s = inc * 1.5 + rng.standard_normal(1000)
    assert gdp_audit(scores=s, included=inc, delta=1e-5).mu <= c.mu
    perfect = one_run_audit(scores=inc.astype(float), included=inc, delta=1e-5).epsilon
    assert one_run_audit(scores=s, included=inc, delta=1e-5).epsilon <= perfect


def test_one_run_gdp_is_valid_and_monotone() -> None:
    # p-value rises with mu (a larger mu is harder to refute)
    ps = [
        one_run_gdp_p_value(mu=mu, num_canaries=1000, num_guesses=100, num_correct=98)
        for mu in (0.5, 1.0, 2.0, 4.0)
    ]
    assert ps == sorted(ps)
    rng = np.random.default_rng(2)
    inc = rng.random(1000) < 0.5
    s = inc * 1.0 + rng.standard_normal(1000)
    b = one_run_gdp_audit(scores=s, included=inc, delta=1e-5)
    assert 0.0 <= b.mu <= 1.0  # proven bound below the truth


# ---------------------------------------------------------------- the audit, every mode


@pytest.mark.parametrize("mode", MODES)
def test_honest_mechanism_stays_below_the_accountant(mode: str) -> None:
    doc = _audit(mode)
    acc = doc["accountant_epsilon"]
    assert acc == pytest.approx(
        accountant_epsilon(
            config=WhiteBoxAuditConfig(
                mode=mode, noise_multiplier=Z, num_canaries=1000, dim=1024, background=8
            )
        )
    )
    assert doc["one_run"]["epsilon"] <= acc
    assert doc["gdp"]["epsilon"] <= acc
    assert doc["gdp"]["mu"] <= 1 / Z * 1.25  # near the true mu = 1/z, not above it by much
    assert not doc["violation"]
    assert doc["one_run"]["epsilon"] <= doc["one_run"]["ceiling"]


@pytest.mark.parametrize("bug", sorted(BUGS))
@pytest.mark.parametrize("mode", MODES)
def test_injected_bug_is_detected(mode: str, bug: str) -> None:
    doc = _audit(mode, **BUGS[bug])
    assert doc["violation"], (
        mode,
        bug,
        doc["one_run"]["epsilon"],
        doc["gdp"]["epsilon"],
        doc["accountant_epsilon"],
    )
    assert "VIOLATION" in doc["statement"]


def test_no_dp_reaches_the_ceiling() -> None:
    # the old audit gave 0.00 on a run without DP; the white-box canaries show full leakage
    doc = _audit("none")
    assert doc["accountant_epsilon"] is None
    assert doc["one_run"]["epsilon"] == pytest.approx(doc["one_run"]["ceiling"])
    assert doc["gdp"]["mu"] == pytest.approx(doc["gdp"]["ceiling_mu"])


def test_low_ceiling_is_stated() -> None:
    # at accountant epsilon ~ 24 the 200-canary ceiling is far lower: the report must say so
    cfg = WhiteBoxAuditConfig(
        mode="client", noise_multiplier=0.25, num_canaries=200, dim=256, reference_runs=0
    )
    with fixed_noise_source(seed=0):
        doc = run_whitebox_audit(config=cfg).to_dict()
    assert "cannot detect leakage below" in doc["statement"]
    assert doc["one_run"]["ceiling"] < doc["accountant_epsilon"]


def test_subsampled_multi_step_record_audit_is_sound() -> None:
    cfg = WhiteBoxAuditConfig(
        mode="record",
        noise_multiplier=1.0,
        sample_rate=0.5,
        steps=4,
        num_canaries=500,
        dim=512,
        reference_runs=0,
    )
    with fixed_noise_source(seed=4):
        doc = run_whitebox_audit(config=cfg).to_dict()
    assert 0 < doc["gdp"]["epsilon"] <= doc["accountant_epsilon"]
    assert not doc["violation"]


def test_config_is_checked() -> None:
    with pytest.raises(AttackConfigError):
        WhiteBoxAuditConfig(mode="bogus")
    with pytest.raises(AttackConfigError):
        WhiteBoxAuditConfig(num_canaries=100, dim=50)
    with pytest.raises(AttackConfigError):
        WhiteBoxAuditConfig(mode="record", noise_multiplier=0.0)
    with pytest.raises(AttackConfigError):
        run_whitebox_audit(config="record")  # type: ignore[arg-type]
    assert math.isinf(accountant_epsilon(config=WhiteBoxAuditConfig(mode="none", noise_multiplier=0.0)))


# ------------------------------------------------------ wiring: secfed attack --attack whitebox-audit


def _tiny_run(root: Path, privacy: dict[str, Any], local_steps: int = 2) -> Path:
    from secfed.experiment import Experiment

    config = tiny_config(
        "protonet",
        experiment={"final_eval_episodes": 5},
        learner={"local_steps": local_steps},
        privacy=privacy,
    )
    out = root / "run"
    Experiment(config=config).run(out_dir=out, progress=False)
    return out


def test_cli_audits_the_runs_own_mechanism(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from secfed.cli import main

    run_dir = _tiny_run(tmp_path, {"mode": "record", "noise_multiplier": 0.8, "sample_rate": 0.5})
    rc = main(["attack", str(run_dir), "--attack", "whitebox-audit", "--canaries", "300"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "[whitebox-audit] per-episode DP-SGD step 4/4" in captured.err  # progress
    assert "ceiling" in captured.out and "accountant epsilon" in captured.out
    doc = json.loads((run_dir / "attacks" / "whitebox_audit.json").read_text())
    cfg = doc["config"]
    # the run's own configuration: episodic learner -> per-episode mechanism, z, C, q, rounds x local steps
    assert (cfg["mode"], cfg["noise_multiplier"], cfg["sample_rate"], cfg["steps"]) == (
        "episode",
        0.8,
        0.5,
        4,
    )
    assert cfg["num_canaries"] == 300
    assert doc["accountant_epsilon"] == pytest.approx(accountant_epsilon(config=WhiteBoxAuditConfig(**cfg)))
    assert not doc["violation"]
    assert doc["fdp_one_run"]["epsilon"] <= doc["fdp_one_run"]["ceiling_epsilon"]


def test_cli_prints_the_fdp_bound_and_runs_the_blackbox_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reader of the console sees every bound the audit computed (the f-DP one included), and
    ``secfed attack --attack blackbox-init-audit`` audits the run's own (z, q, steps)."""
    from secfed.cli import main

    run_dir = _tiny_run(tmp_path, {"mode": "record", "noise_multiplier": 0.8, "sample_rate": 0.5})
    assert (
        main(["attack", str(run_dir), "--attack", "whitebox-audit", "--canaries", "300", "--no-progress"])
        == 0
    )
    out = capsys.readouterr().out
    assert "f-DP one-run bound" in out
    rc = main(
        ["attack", str(run_dir), "--attack", "blackbox-init-audit", "--canaries", "20", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "black-box audit, worst-case initial parameters" in out and "ceiling" in out
    doc = json.loads((run_dir / "attacks" / "blackbox_init_audit.json").read_text())
    assert (doc["config"]["noise_multiplier"], doc["config"]["sample_rate"], doc["config"]["trials"]) == (
        0.8,
        0.5,
        20,
    )
    assert f"{doc['accountant_epsilon']:.3f}" in out


def test_cli_without_dp_shows_full_leakage(tmp_path: Path) -> None:
    from attacks.runner import run_attack

    run_dir = _tiny_run(tmp_path, {"mode": "none"})
    doc = run_attack(run_dir=run_dir, attack="whitebox-audit")
    assert doc["config"]["mode"] == "none"
    assert doc["one_run"]["epsilon"] == pytest.approx(doc["one_run"]["ceiling"])
    assert doc["one_run"]["epsilon"] > 4.0  # the black-box audit reported 0.00 on such a run


def test_audit_epsilon_is_the_runs_epsilon_on_a_class_aware_run(tmp_path: Path) -> None:
    """The reader of the audit report compares the audit with the run: its accountant's epsilon must be
    the one the run's ledger holds. One episode slot of 3 classes per step out of a site's 5 classes:
    class-aware accounting counts 7 of the 8 steps; replaying rounds x local steps (the old audit) gives
    a larger epsilon than the run's."""
    from attacks.runner import run_attack
    from secfed.config import load_config
    from secfed.dp.server import planned_epsilon

    privacy = {"mode": "record", "noise_multiplier": 0.8, "sample_rate": 0.5, "episodes_per_step": 1}
    run_dir = _tiny_run(tmp_path, privacy, local_steps=4)
    summary = json.loads((run_dir / "summary.json").read_text())
    planned = planned_epsilon(config=load_config(run_dir / "config.toml"))
    assert planned["record_steps"] < planned["record_steps_all"]  # the run is class-aware
    doc = run_attack(run_dir=run_dir, attack="whitebox-audit", options=AttackOptions(canaries=200))
    assert doc["run_privacy"]["source"] == "ledger"
    assert doc["config"]["steps"] == planned["record_steps"]
    assert doc["accountant_epsilon"] == pytest.approx(summary["epsilon"], rel=1e-3)
    assert doc["accountant_epsilon"] == pytest.approx(planned["record_epsilon"], rel=1e-3)
    assert doc["accountant_matches_run"] is True
    every_step = WhiteBoxAuditConfig(**{**doc["config"], "steps": planned["record_steps_all"]})
    assert accountant_epsilon(config=every_step) > 1.02 * summary["epsilon"]
