"""Canary clients (Andrew et al. 2024) for client-level and distributed DP (issue 21).

The auditor's view: it inserts canary clients, sees only the released aggregates (the noisy sum, or
the decoded SecAgg sum), and estimates epsilon from the canaries' cosines against the unseen-canary
null. Negative control: a mechanism whose noise is cut 2x is detected at fixed seeds in both modes;
the honest one is not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from attacks.canary_clients import (
    CanaryClientConfig,
    canary_statistics,
    gaussian_pair_delta,
    gaussian_pair_epsilon,
    run_canary_client_audit,
)
from attacks.errors import AttackConfigError, AttackInputError
from attacks.fdp import gdp_epsilon
from privacy.noise import fixed_noise_source


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0, 4.0])
def test_equal_variance_pair_is_gdp(mu: float) -> None:
    got = gaussian_pair_epsilon(mu0=0.3, sigma0=0.7, mu1=0.3 + mu * 0.7, sigma1=0.7, delta=1e-5)
    assert got == pytest.approx(gdp_epsilon(mu=mu, delta=1e-5), abs=1e-4)


def test_pair_epsilon_is_symmetric_monotone_and_checked() -> None:
    a = gaussian_pair_epsilon(mu0=0.0, sigma0=1.0, mu1=1.5, sigma1=1.2, delta=1e-5)
    b = gaussian_pair_epsilon(mu0=1.5, sigma0=1.2, mu1=0.0, sigma1=1.0, delta=1e-5)
    assert a == pytest.approx(b, abs=1e-5)
    assert gaussian_pair_epsilon(mu0=0.0, sigma0=1.0, mu1=1.5, sigma1=1.2, delta=1e-3) < a
    # unequal variances leak more than equal ones with the same means
    assert a > gaussian_pair_epsilon(mu0=0.0, sigma0=1.0, mu1=1.5, sigma1=1.0, delta=1e-5)
    assert gaussian_pair_epsilon(mu0=0.0, sigma0=1.0, mu1=0.0, sigma1=1.0, delta=1e-5) == 0.0
    # δ(ε) at the returned ε meets δ
    assert gaussian_pair_delta(mu0=0.0, sigma0=1.0, mu1=1.5, sigma1=1.2, epsilon=a) <= 1e-5 * (1 + 1e-6)
    with pytest.raises(AttackInputError):
        gaussian_pair_epsilon(mu0=0.0, sigma0=0.0, mu1=1.0, sigma1=1.0, delta=1e-5)
    with pytest.raises(AttackInputError):
        gaussian_pair_epsilon(mu0=0.0, sigma0=1.0, mu1=math.nan, sigma1=1.0, delta=1e-5)
    with pytest.raises(AttackInputError):
        gaussian_pair_epsilon(mu0=0.0, sigma0=1.0, mu1=1.0, sigma1=1.0, delta=1.5)


def test_statistics_and_config_are_checked() -> None:
    u = np.eye(3)
    stats = canary_statistics(directions=u, releases=np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    assert stats["final_model"] == pytest.approx([2 / math.sqrt(5), 1 / math.sqrt(5), 0.0])
    assert stats["all_iterates"] == pytest.approx([1.0, 1 / math.sqrt(2), 0.0])
    with pytest.raises(AttackInputError):
        canary_statistics(directions=u, releases=np.ones((2, 4)))
    for bad in ({"mode": "record"}, {"noise_factor": 0.0}, {"num_canaries": 3}):
        with pytest.raises(AttackConfigError):
            CanaryClientConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(AttackConfigError):
        run_canary_client_audit(config="client")  # type: ignore[arg-type]


def _audit(mode: str, seed: int, noise_factor: float) -> dict:
    cfg = CanaryClientConfig(
        mode=mode,
        noise_multiplier=1.0,  # accountant epsilon 4.73 for one round at delta 1e-5 (RDP)
        rounds=1,
        num_canaries=600,
        dim=8192,
        noise_factor=noise_factor,
        reference_runs=0,
        bootstrap=100,
        seed=seed,
    )
    with fixed_noise_source(seed=seed):
        return run_canary_client_audit(config=cfg).to_dict()


@pytest.mark.parametrize("mode", ["client", "distributed"])
@pytest.mark.parametrize("seed", [3, 5])
def test_noise_cut_2x_is_detected_and_honest_is_not(mode: str, seed: int) -> None:
    honest = _audit(mode, seed, 1.0)
    acc = honest["accountant_epsilon"]
    assert acc == pytest.approx(4.73, abs=0.05)
    assert not honest["violation"], honest["statement"]
    assert honest["epsilon_estimate"] < 1.2 * acc  # an estimate: it scatters around the exact 4.38
    assert honest["bounds"]["one_run"]["epsilon"] <= honest["bounds"]["one_run"]["ceiling"]
    cut = _audit(mode, seed, 0.5)
    assert cut["violation"], cut["statement"]
    assert cut["epsilon_estimate"] > 1.5 * acc
    assert cut["estimates"]["final_model"]["equal_variance_interval"][0] > acc
    assert "VIOLATION" in cut["statement"]


def test_client_run_gets_canary_clients_with_the_runs_epsilon(tmp_path: Path) -> None:
    """A client-level run audited through `secfed attack`: the canary clients join its sites with its
    sampling and its counted rounds; the accountant's epsilon is the run's ledger epsilon."""
    from attacks.options import AttackOptions
    from attacks.runner import run_attack
    from tests.attacks.test_whitebox_audit import _tiny_run

    run_dir = _tiny_run(tmp_path, {"mode": "client", "noise_multiplier": 1.5, "max_grad_norm": 1.0})
    summary = json.loads((run_dir / "summary.json").read_text())
    lines: list[str] = []
    doc = run_attack(
        run_dir=run_dir, attack="whitebox-audit", options=AttackOptions(canaries=200), progress=lines.append
    )
    cc = doc["canary_clients"]
    assert cc is not None and cc["config"]["mode"] == "client"
    assert cc["config"]["real_clients"] == 4 and cc["config"]["rounds"] == doc["run_privacy"]["steps"]
    assert cc["accountant_epsilon"] == pytest.approx(summary["epsilon"], rel=1e-3)
    assert doc["accountant_matches_run"] is True
    assert any(line.startswith("canary clients: DP-FedAvg round") for line in lines)
    assert "canary clients: empirical epsilon" in doc["statement"]
    assert not cc["violation"]
