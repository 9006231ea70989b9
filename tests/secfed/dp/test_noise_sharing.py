"""Record-level DP with the noise split across sites under secure aggregation (secfed.dp.sharing).

Adversary's view: the server sees only the decoded SecAgg sum, knows the noise shares of the
``c`` sites colluding with it, and reads the ledger / summary. The tests check the noise each site
adds, the noise of the decoded sum (with and without dropouts, with colluders' shares removed),
that the ledger's ε is the accountant's ε for ``z_eff`` per round (rising with dropouts), that each
site's own ledger is never below the server's, that the collusion assumption is written
everywhere, and that unsound configurations are refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privacy.accountants import RDPAccountant
from privacy.calibration import epsilon_for
from privacy.noise import fixed_noise_source
from secfed.config import config_from_dict, max_sites_per_round
from secfed.dp import sharing
from secfed.dp.modes import RecordMode
from secfed.dp.params import dp_params
from secfed.dp.server import (
    PrivacyStateError,
    ServerPrivacy,
    calibrated_noise_multiplier,
    planned_epsilon,
    record_class_aware_steps,
)
from secfed.errors import ConfigError
from secfed.experiment import Experiment

REPO = Path(__file__).resolve().parents[3]
C, E, LR, Z, Q = 1.0, 2, 0.5, 1.0, 0.3


def _cfg(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "experiment": {
            "rounds": 2,
            "eval_every": 0,
            "eval_episodes": 5,
            "final_eval_episodes": 10,
            "seed": 5,
        },
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 4},
        "task": {"n_way": 2, "k_shot": 1, "q_query": 2, "test_n_way": 2, "test_q_query": 2},
        "model": {"arch": "mlp", "hidden": 8, "norm": "none", "layers": 1},
        "learner": {"name": "protonet", "local_steps": 1, "local_lr": LR, "local_optimizer": "sgd"},
        "federation": {"server_lr": 1.0, "server_optimizer": "sgd", "aggregation": "secagg"},
        "privacy": {
            "mode": "record",
            "noise_multiplier": Z,
            "max_grad_norm": C,
            "sample_rate": Q,
            "episodes_per_step": E,
            "noise_sharing": True,
        },
        "secagg": {"corrupt_fraction": 0.0},
    }
    for key, value in over.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def _config(**over: Any) -> Any:
    return config_from_dict(_cfg(**over), base_dir=REPO)


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"federation__aggregation": "plain"}, "federation.aggregation = 'plain'"),
        ({"privacy__mode": "client"}, "privacy.mode = 'client'"),
        ({"learner__local_steps": 2}, "learner.local_steps = 2"),
        ({"learner__local_optimizer": "adam"}, "learner.local_optimizer = 'adam'"),
        ({"privacy__noise_multiplier": 0.0}, "privacy.noise_multiplier"),
        ({"privacy__colluding_sites": 2}, "threshold floor t = 2"),
        ({"privacy__colluding_sites": 4}, "below the 4 sites"),
        ({"privacy__noise_sharing": False, "privacy__colluding_sites": 1}, "only applies with"),
    ],
)
def test_unsound_configurations_are_refused_with_the_setting_named(over: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _config(**over)


def test_reptile_is_refused() -> None:
    with pytest.raises(ConfigError, match="learner.name = 'reptile'"):
        _config(
            learner__name="reptile",
            learner__inner_steps=1,
            learner__inner_lr=0.1,
            learner__inner_optimizer="sgd",
            learner__meta_batch=1,
        )


# ------------------------------------------------------------------------------------------------
# The noise each site adds and the noise of the sum
# ------------------------------------------------------------------------------------------------
D = 200_000


def _encodings(config: Any, n: int, seed: str) -> tuple[Any, list[np.ndarray]]:
    """``n`` sites' encodings of a zero update (zero clipped sum) through the real factory."""
    factory = sharing.make_noise_sharing_encoder_factory(params=dp_params(config=config), dim=D)
    with fixed_noise_source(seed=seed):
        encoders = [factory(1) for _ in range(n)]
        out = [enc.encode(x=np.zeros(D)) for enc in encoders]
    return encoders[0], out


def _sum_mod(encoded: list[np.ndarray], bits: int) -> np.ndarray:
    total = np.zeros(D, dtype=np.uint64)
    for e in encoded:
        total = total + e  # uint64 wraps mod 2^64; the decoder reduces mod 2^bits
    return total & np.uint64((1 << bits) - 1)


@pytest.mark.parametrize("colluding", [0, 1])
def test_each_site_adds_a_share_of_std_sigma_over_sqrt_m_minus_c(colluding: int) -> None:
    config = _config(privacy__colluding_sites=colluding)
    m = max_sites_per_round(config)
    sigma = Z * 2 * C  # episodic: sensitivity 2C
    enc, (one,) = _encodings(config, 1, f"share-{colluding}")
    noise = enc.decode(total=one, n_summed=1) / (LR / E)  # back to clipped-sum units
    expected = sigma / math.sqrt(m - colluding)
    assert float(np.std(noise)) == pytest.approx(expected, rel=0.01)
    assert abs(float(np.mean(noise))) < 0.01 * expected
    assert sharing.share_stddev(params=dp_params(config=config)) == pytest.approx(expected)


@pytest.mark.parametrize(("colluding", "survivors"), [(0, 4), (0, 3), (1, 4), (1, 2)])
def test_decoded_sum_carries_counted_noise_sigma_sqrt_s_minus_c_over_m_minus_c(
    colluding: int, survivors: int
) -> None:
    config = _config(privacy__colluding_sites=colluding)
    m = max_sites_per_round(config)
    sigma = Z * 2 * C
    enc, encoded = _encodings(config, survivors, f"sum-{colluding}-{survivors}")
    total = enc.decode(total=_sum_mod(encoded, enc.bits), n_summed=survivors) / (LR / E)
    # the server knows the colluders' shares: subtract them, what remains is the counted noise
    known = sum(enc.decode(total=e, n_summed=1) for e in encoded[:colluding]) / (LR / E)
    counted = total - known
    expected = sigma * math.sqrt((survivors - colluding) / (m - colluding))
    assert float(np.std(counted)) == pytest.approx(expected, rel=0.01)
    z_eff = sharing.effective_noise_multiplier(params=dp_params(config=config), survivors=survivors)
    assert z_eff * 2 * C == pytest.approx(expected)
    # the full sum of s shares: sigma * sqrt(s / (m - c))
    assert float(np.std(total)) == pytest.approx(sigma * math.sqrt(survivors / (m - colluding)), rel=0.01)


def test_sum_of_lattice_encodings_is_exactly_the_sum() -> None:
    """SecAgg adds integers: the decoded sum is the sum of the sites' noisy lattice points."""
    config = _config()
    factory = sharing.make_noise_sharing_encoder_factory(params=dp_params(config=config), dim=1000)
    rng = np.random.default_rng(0)
    with fixed_noise_source(seed="exact"):
        encs = [factory(1) for _ in range(3)]
        xs = [rng.normal(size=1000) * 1e-3 for _ in range(3)]
        encoded = [e.encode(x=x) for e, x in zip(encs, xs, strict=True)]
    mask = np.uint64((1 << encs[0].bits) - 1)
    total = (encoded[0] + encoded[1] + encoded[2]) & mask
    singles = sum(encs[0].decode(total=e, n_summed=1) for e in encoded)
    np.testing.assert_array_equal(encs[0].decode(total=total, n_summed=3), singles)


def test_site_engines_add_no_noise_and_account_the_worst_case() -> None:
    from secfed import components
    from secfed.dp.site import build_site_privacy

    config = _config(privacy__colluding_sites=1)
    site = components.build_site(config=config, site_id=0)
    hook = build_site_privacy(config=config, site_id=0, site=site)
    t = sharing.threshold_floor(params=dp_params(config=config))
    m = max_sites_per_round(config)
    assert hook.engine_noise_multiplier == 0.0
    assert hook.accounted_noise_multiplier == pytest.approx(Z * math.sqrt((t - 1) / (m - 1)))


# ------------------------------------------------------------------------------------------------
# End to end: ledger, summary, site ledgers
# ------------------------------------------------------------------------------------------------
def _run(tmp: Path, monkeypatch: pytest.MonkeyPatch, **over: Any) -> dict[str, Any]:
    monkeypatch.setenv("SECFED_KEY_DIR", str(tmp / "keys"))
    config = _config(**over)
    Experiment(config=config).run(out_dir=tmp / "run", progress=False)
    lines = [json.loads(x) for x in (tmp / "run" / "privacy_ledger.jsonl").read_text().splitlines() if x]
    metrics = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines() if x]
    site_ledgers = {
        p.parent.name: [json.loads(x) for x in p.read_text().splitlines() if x]
        for p in (tmp / "run" / "site_state").glob("site-*/ledger.jsonl")
    }
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    return {"config": config, "ledger": lines, "metrics": metrics, "sites": site_ledgers, "summary": summary}


def _check_run(out: dict[str, Any], colluding: int) -> dict[int, int]:
    """Ledger ε = accountant ε for z_eff per round; site ledger >= server; c everywhere."""
    config = out["config"]
    m = max_sites_per_round(config)
    rounds = {int(r["round"]): r for r in out["metrics"] if "round" in r and "clients" in r}
    survivors = {rnd: len(r["clients"]) for rnd, r in rounds.items()}
    accs: dict[str, RDPAccountant] = {}
    commits = [e for e in out["ledger"] if e.get("kind") == "commit"]
    assert commits
    for entry in out["ledger"]:
        for rec in (entry.get("sites") or {}).values():
            shared = rec["params"]["noise_sharing"]
            assert shared["colluding_sites"] == colluding
            assert f"{colluding} survivor" in shared["trust_assumption"] or colluding == 0
    for entry in commits:
        s = survivors[int(entry["round"])]
        for name, rec in entry["sites"].items():
            if rec["steps"] == 0:
                continue
            z_eff = Z * math.sqrt((s - colluding) / (m - colluding))
            assert rec["noise_multiplier"] == pytest.approx(z_eff)
            assert rec["params"]["noise_sharing"]["survivors"] == s
            acc = accs.setdefault(name, RDPAccountant())
            acc.step(noise_multiplier=z_eff, sample_rate=Q, num_steps=rec["steps"])
            assert rec["epsilon"] == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-9)
    summary = out["summary"]
    for name, acc in accs.items():
        assert summary["epsilon_sites"][name] == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-9)
    assert summary["noise_sharing"]["colluding_sites"] == colluding
    assert "trust_assumption" in summary and "secure aggregation" in summary["trust_assumption"]
    # every site's own ledger: the collusion assumption in every line, and never below the server's
    for site_dir, lines in out["sites"].items():
        name = site_dir.split("-")[1]
        site_commits = [e for e in lines if e.get("kind") == "commit"]
        for e in lines:
            for rec in (e.get("sites") or {}).values():
                assert rec["params"]["noise_sharing"]["colluding_sites"] == colluding
        if site_commits:
            site_eps = site_commits[-1]["sites"][name]["epsilon"]
            assert site_eps >= summary["epsilon_sites"][name] - 1e-9
    return survivors


@pytest.mark.parametrize("colluding", [0, 1])
def test_ledger_epsilon_is_the_accountants_for_z_eff_and_sites_stay_conservative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, colluding: int
) -> None:
    out = _run(tmp_path, monkeypatch, privacy__colluding_sites=colluding)
    survivors = _check_run(out, colluding)
    assert set(survivors.values()) == {4}


def test_dropouts_raise_epsilon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = _run(tmp_path / "a", monkeypatch, experiment__rounds=3, partition__num_sites=8)
    drop = _run(
        tmp_path / "b",
        monkeypatch,
        experiment__rounds=3,
        partition__num_sites=8,
        federation__dropout_rate=0.1,
    )
    survivors = _check_run(drop, 0)
    assert min(survivors.values()) < 8, "the seed must produce a round with dropouts"
    _check_run(full, 0)
    # a site that survived every round with dropouts: its counted noise was lower, epsilon higher
    eps_full, eps_drop = full["summary"]["epsilon_sites"], drop["summary"]["epsilon_sites"]
    assert max(eps_drop.values()) > max(eps_full.values())


def test_server_refuses_a_sum_without_counted_noise(tmp_path: Path) -> None:
    cfg = _config(privacy__colluding_sites=1)
    ServerPrivacy(config=cfg, run_dir=tmp_path)  # the server accepts the configuration
    privacy = RecordMode(params=dp_params(config=cfg))  # the record mode's accounting behind it
    with pytest.raises(PrivacyStateError, match="no counted noise"):
        privacy.shared_noise_multiplier(1)
    z, params = privacy.shared_noise_multiplier(0)  # not decoded: the worst case
    assert params["survivors"] == sharing.threshold_floor(params=dp_params(config=cfg))
    assert z == pytest.approx(sharing.site_noise_multiplier(params=dp_params(config=cfg)))


# ------------------------------------------------------------------------------------------------
# Planning and calibration
# ------------------------------------------------------------------------------------------------
def test_planning_uses_full_counted_noise_only_when_every_round_surely_has_m_survivors() -> None:
    fixed = _config(federation__sampling="fixed")
    plan = planned_epsilon(config=fixed)
    steps = record_class_aware_steps(config=fixed)
    assert plan["record_planning_survivors"] == 4
    assert plan["record_epsilon"] == pytest.approx(
        epsilon_for(noise_multiplier=Z, sample_rate=Q, steps=steps, delta=1e-5, accountant="rdp")
    )
    assert plan["record_epsilon_site_ledger"] > plan["record_epsilon"]
    lossy = _config(federation__sampling="fixed", federation__dropout_rate=0.1)
    worse = planned_epsilon(config=lossy)
    assert worse["record_planning_survivors"] == sharing.threshold_floor(params=dp_params(config=lossy))
    assert worse["record_epsilon"] == pytest.approx(worse["record_epsilon_site_ledger"])
    assert worse["record_epsilon"] > plan["record_epsilon"]


def test_calibration_meets_the_target_with_the_counted_noise() -> None:
    cfg = _config(federation__sampling="fixed", federation__dropout_rate=0.1, privacy__target_epsilon=4.0)
    z = calibrated_noise_multiplier(config=cfg)
    t = sharing.threshold_floor(params=dp_params(config=cfg))
    z_counted = z * math.sqrt(t / 4)
    steps = record_class_aware_steps(config=cfg)
    eps = epsilon_for(noise_multiplier=z_counted, sample_rate=Q, steps=steps, delta=1e-5, accountant="rdp")
    assert eps <= 4.0 * (1 + 1e-6)
    assert eps > 3.9


def test_record_planning_is_class_aware_and_bounds_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few of a site's classes per step: the planner counts the worst class's steps, and the ledger
    of the run stays at or below the plan (never under-reported)."""
    over = {
        "experiment__rounds": 6,
        "partition__num_sites": 3,
        "privacy__noise_sharing": False,
        "privacy__episodes_per_step": 1,
        "federation__aggregation": "plain",
    }
    config = _config(**over)
    every = 6
    steps = record_class_aware_steps(config=config)
    assert steps < every
    plan = planned_epsilon(config=config)
    assert plan["record_steps"] == steps and plan["record_steps_all"] == every
    out_dir = tmp_path / "run"
    monkeypatch.setenv("SECFED_KEY_DIR", str(tmp_path / "keys"))
    Experiment(config=config).run(out_dir=out_dir, progress=False)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["epsilon"] <= plan["record_epsilon"] * (1 + 1e-9)
