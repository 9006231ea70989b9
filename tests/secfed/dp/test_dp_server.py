"""Server-side privacy: ledger, budgets, central noise, resume, distributed DP under SecAgg."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_shared import run_and_kill

from privacy.accountants import DistributedDPAccountant, DistributedEvent, create_accountant
from privacy.calibration import calibrate_noise, epsilon_for
from privacy.distributed import SKELLAM_MAX_LOCAL_VARIANCE
from privacy.errors import InvalidInputError
from privacy.ledger import INTEGRITY_VERIFIED, PrivacyLedger
from secfed.components import build_client_aggregator, build_server_aggregator
from secfed.config import ExperimentConfig, config_from_dict
from secfed.dp import ServerPrivacy, calibrated_config
from secfed.dp.distributed import (
    distributed_dp_config,
    make_distributed_encoder_factory,
    rotation_seed,
)
from secfed.dp.params import dp_params
from secfed.dp.server import (
    LEDGER_FILE,
    PrivacyStateError,
    calibrated_noise_multiplier,
    planned_epsilon,
    record_steps_per_round,
)
from secfed.errors import ConfigError, IntegrityError, MessageError
from secfed.experiment import Experiment, read_metrics
from secfed.federation.secure import SecureClientAggregator, SecureServerAggregator
from secfed.federation.server import RoundOutcome, planned_participation, sampled_sites

REPO = Path(__file__).resolve().parents[3]
DELTA = 1e-5


def tiny(**sections: dict[str, Any]) -> dict[str, Any]:
    """A tiny digits run (MLP, 16 hidden units, no norm), no intermediate evaluation."""
    base: dict[str, Any] = {
        "experiment": {"rounds": 3, "eval_every": 0, "eval_episodes": 5, "final_eval_episodes": 5, "seed": 3},
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 4},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
        "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        "learner": {"name": "protonet", "local_steps": 1},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return base


def cfg_of(**sections: dict[str, Any]) -> ExperimentConfig:
    return config_from_dict(tiny(**sections), base_dir=REPO)


def ledger_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """The ledger's counted entries (commits, and begins never committed) without timestamps and
    hashes (which depend on wall time), after verifying every MAC with the ledger's key."""
    ledger = PrivacyLedger.read(path=run_dir / LEDGER_FILE)
    assert ledger.integrity == INTEGRITY_VERIFIED and ledger.delta == DELTA
    return [
        {
            "round": e.round,
            "sites": {n: r.to_dict() for n, r in e.sites.items()},
            "global": None if e.global_record is None else e.global_record.to_dict(),
        }
        for e in ledger.releases()
    ]


def outcome(
    rnd: int, reports: dict[int, dict[str, Any] | None], clients: list[int] | None = None
) -> RoundOutcome:
    site_reports = {sid: ({"privacy": rep} if rep is not None else {}) for sid, rep in reports.items()}
    return RoundOutcome(
        round=rnd,
        train_loss=0.0,
        clients=sorted(reports) if clients is None else clients,
        dropped=[],
        stragglers=[],
        aggregation={},
        site_reports=site_reports,
    )


def record_report(steps: int = 2, z: float = 1.0, q: float = 0.1, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "record",
        "unit": "record",
        "adjacency": "add/remove one record",
        "mechanism": "episodic-gaussian",
        "noise_multiplier": z,
        "sample_rate": q,
        "steps": steps,
        **extra,
    }


CLIENT_REPORT = {
    "mode": "client",
    "unit": "client",
    "adjacency": "add/remove one client's entire dataset",
    "mechanism": "client-clip",
    "noise_multiplier": 1.0,
    "sample_rate": 0.75,
    "steps": 1,
}


# ------------------------------------------------------------------------------------------------
# Central noise (client mode) and input checks
# ------------------------------------------------------------------------------------------------
def test_central_noise_std_matches_zc(tmp_path: Path) -> None:
    z, c = 1.3, 0.7
    sp = ServerPrivacy(
        config=cfg_of(privacy={"mode": "client", "noise_multiplier": z, "max_grad_norm": c}), run_dir=tmp_path
    )
    total = np.zeros(400_000)
    noisy = sp.central_noise(total, 3, 1)
    assert noisy.shape == total.shape and not np.any(total)  # input untouched
    assert abs(noisy.std() - z * c) < 0.01 * z * c
    assert abs(noisy.mean()) < 5 * z * c / math.sqrt(total.size)
    again = sp.central_noise(total, 3, 1)
    assert not np.allclose(again, noisy)  # fresh noise every call
    signal_ = np.arange(10, dtype=np.float64)
    assert abs(float(np.mean(sp.central_noise(signal_, 2, 2) - signal_))) < 5 * z * c  # noise is added


@pytest.mark.parametrize("mode", ["record", "distributed"])
def test_central_noise_is_identity_in_other_modes(tmp_path: Path, mode: str) -> None:
    fed = {"aggregation": "secagg"} if mode == "distributed" else {}
    sp = ServerPrivacy(
        config=cfg_of(
            privacy={"mode": mode, "mechanism": "skellam" if mode == "distributed" else "gaussian"},
            federation=fed,
        ),
        run_dir=tmp_path,
    )
    total = np.ones(7)
    assert sp.central_noise(total, 4, 1) is total


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="privacy.mode"):
        ServerPrivacy(config=cfg_of(), run_dir=tmp_path)
    with pytest.raises(ConfigError, match="federation.weighting"):
        ServerPrivacy(
            config=cfg_of(privacy={"mode": "client"}, federation={"weighting": "examples"}), run_dir=tmp_path
        )
    sp = ServerPrivacy(config=cfg_of(privacy={"mode": "client"}), run_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="1-D"):
        sp.central_noise(np.zeros((2, 2)), 2, 1)
    with pytest.raises(InvalidInputError, match="finite"):
        sp.central_noise(np.array([np.nan]), 2, 1)
    with pytest.raises(InvalidInputError, match="n_survivors"):
        sp.central_noise(np.zeros(3), -1, 1)
    with pytest.raises(PrivacyStateError, match="resume_to"):
        sp.before_round(round_idx=1)
    assert not (tmp_path / LEDGER_FILE).exists()  # nothing written before resume_to


def test_client_mode_refuses_an_aggregate_released_without_noise(tmp_path: Path) -> None:
    sp = ServerPrivacy(config=cfg_of(privacy={"mode": "client"}), run_dir=tmp_path)
    sp.resume_to(completed_round=0)
    sp.register_sites({s: {"records": 10} for s in range(4)})
    with pytest.raises(PrivacyStateError, match="not begun"):  # write-ahead: before_round first
        sp.after_round(outcome=outcome(1, dict.fromkeys(range(4), CLIENT_REPORT)))
    sp.before_round(round_idx=1)
    with pytest.raises(PrivacyStateError, match="without central noise"):
        sp.after_round(outcome=outcome(1, dict.fromkeys(range(4), CLIENT_REPORT)))
    # nothing committed; the write-ahead begin of round 1 counts as released
    assert [e.kind for e in PrivacyLedger.read(path=tmp_path / LEDGER_FILE).entries] == ["begin"]
    sp.central_noise(np.zeros(5), 4, 1)
    m = sp.after_round(outcome=outcome(1, dict.fromkeys(range(4), CLIENT_REPORT)))
    assert m["epsilon"] == pytest.approx(
        epsilon_for(noise_multiplier=1.0, sample_rate=1.0, steps=1, delta=DELTA)
    )


# ------------------------------------------------------------------------------------------------
# Record mode with synthetic rounds: accounting, reports, budget, resume
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["rdp", "prv"])
def test_record_accounting_matches_an_independent_accountant(tmp_path: Path, kind: str) -> None:
    sp = ServerPrivacy(config=cfg_of(privacy={"mode": "record", "accountant": kind}), run_dir=tmp_path)
    sp.resume_to(completed_round=0)
    sp.register_sites({s: {} for s in range(4)})
    plan = [
        {0: record_report(2), 1: record_report(2)},
        {1: record_report(3, z=1.5)},
        {0: record_report(2), 2: record_report(2)},
    ]
    expected = {s: create_accountant(kind=kind) for s in range(4)}
    previous = dict.fromkeys(range(4), 0.0)
    for rnd, reports in enumerate(plan, start=1):
        assert sp.before_round(round_idx=rnd) == (frozenset(), None)
        m = sp.after_round(outcome=outcome(rnd, dict(reports)))
        for sid, rep in reports.items():
            expected[sid].step(
                noise_multiplier=rep["noise_multiplier"], sample_rate=0.1, num_steps=rep["steps"]
            )
        for sid in range(4):
            eps = m["epsilon_sites"][str(sid)]
            assert eps == pytest.approx(expected[sid].get_epsilon(delta=DELTA), rel=1e-12)
            assert eps >= previous[sid]
            if sid not in reports:
                assert eps == previous[sid]  # sites that did not train add nothing
            previous[sid] = eps
        assert m["epsilon"] == max(m["epsilon_sites"].values())
        assert m["epsilon_unit"].startswith("record")
    rows = ledger_rounds(tmp_path)
    assert [r["round"] for r in rows] == [1, 2, 3] and all(r["global"] is None for r in rows)
    assert rows[1]["sites"]["1"]["steps"] == 3 and rows[1]["sites"]["0"]["steps"] == 0
    assert sorted(rows[0]["sites"]) == ["0", "1", "2", "3"]
    assert rows[0]["sites"]["3"]["epsilon"] == 0.0


def test_malformed_reports_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    sp = ServerPrivacy(config=cfg_of(privacy={"mode": "record"}), run_dir=tmp_path)
    sp.resume_to(completed_round=0)
    sp.before_round(round_idx=1)
    bad = [
        None,
        {**record_report(), "mode": "client"},
        {**record_report(), "mechanism": "client-clip"},
        {**record_report(), "steps": -1},
        {**record_report(), "sample_rate": 2.0},
        {k: v for k, v in record_report().items() if k != "noise_multiplier"},
    ]
    for rep in bad:
        with pytest.raises(MessageError, match="site 0"):
            sp.after_round(outcome=outcome(1, {0: rep}))
    with pytest.raises(MessageError, match="outside"):
        sp.after_round(outcome=outcome(1, {9: record_report()}))
    # only the write-ahead begin of round 1 (nothing committed), which counts as released
    assert [e.kind for e in PrivacyLedger.read(path=tmp_path / LEDGER_FILE).entries] == ["begin"]


def test_record_budget_excludes_sites_then_stops(tmp_path: Path) -> None:
    one_round = epsilon_for(noise_multiplier=1.0, sample_rate=0.1, steps=2, delta=DELTA)
    two_rounds = epsilon_for(noise_multiplier=1.0, sample_rate=0.1, steps=4, delta=DELTA)
    budget = (one_round + two_rounds) / 2
    sp = ServerPrivacy(config=cfg_of(privacy={"mode": "record", "epsilon_budget": budget}), run_dir=tmp_path)
    sp.resume_to(completed_round=0)
    sp.register_sites({s: {"privacy": {"mode": "record", "steps_per_round": 2}} for s in range(2)})
    assert sp.before_round(round_idx=1) == (frozenset(), None)
    sp.after_round(outcome=outcome(1, {0: record_report(2)}))
    excluded, stop = sp.before_round(round_idx=2)
    assert excluded == {0} and stop is None  # site 0 would exceed the budget; site 1 may train
    m = sp.after_round(outcome=outcome(2, {1: record_report(2)}))
    assert m["privacy_excluded"] == [0]
    excluded, stop = sp.before_round(round_idx=3)
    assert excluded == {0, 1} and stop is not None and "budget" in stop and "site '1'" in stop
    assert all(s["epsilon"] <= budget for r in ledger_rounds(tmp_path) for s in r["sites"].values())


def test_site_that_reports_its_budget_exhausted_is_excluded(tmp_path: Path) -> None:
    sp = ServerPrivacy(config=cfg_of(privacy={"mode": "record"}), run_dir=tmp_path)
    sp.resume_to(completed_round=0)
    sp.register_sites({s: {} for s in range(2)})
    sp.before_round(round_idx=1)
    sp.after_round(outcome=outcome(1, {0: record_report(0, budget_exhausted=True), 1: record_report(2)}))
    assert sp.before_round(round_idx=2) == (frozenset({0}), None)
    rows = ledger_rounds(tmp_path)
    assert rows[0]["sites"]["0"]["epsilon"] == 0.0 and rows[0]["sites"]["0"]["params"]["budget_exhausted"]


def test_resume_keeps_every_released_round_and_rebuilds_the_accountants(tmp_path: Path) -> None:
    cfg = cfg_of(privacy={"mode": "record", "epsilon_budget": 50.0})
    sp = ServerPrivacy(config=cfg, run_dir=tmp_path)
    sp.resume_to(completed_round=0)
    sp.register_sites({s: {} for s in range(3)})
    metrics = []
    for rnd, reports in enumerate(
        [{0: record_report(2)}, {0: record_report(2), 2: record_report(5)}, {1: record_report(1)}], 1
    ):
        sp.before_round(round_idx=rnd)
        metrics.append(sp.after_round(outcome=outcome(rnd, reports)))
    # Crash during round 4's begin: a torn last line (never durable, so nothing was released).
    with open(tmp_path / LEDGER_FILE, "a") as fh:
        fh.write('{"kind": "begin", "round": 4, "si')
    again = ServerPrivacy(config=cfg, run_dir=tmp_path)
    again.resume_to(completed_round=2)  # round 3's checkpoint did not survive: round 3 stays counted
    assert [r["round"] for r in ledger_rounds(tmp_path)] == [1, 2, 3]
    assert again.summary()["epsilon_sites"] == metrics[2]["epsilon_sites"]
    again.register_sites({s: {} for s in range(3)})
    again.before_round(round_idx=3)
    redo = again.after_round(outcome=outcome(3, {1: record_report(1)}))
    # the re-run of round 3 is a second release: site 1 counts both
    assert redo["epsilon_sites"]["1"] > metrics[2]["epsilon_sites"]["1"]
    assert redo["epsilon_sites"]["0"] == metrics[2]["epsilon_sites"]["0"]
    with pytest.raises(IntegrityError, match="cannot be reconstructed"):
        ServerPrivacy(config=cfg, run_dir=tmp_path).resume_to(completed_round=5)
    with pytest.raises(ConfigError, match="budget"):
        other = cfg_of(privacy={"mode": "record", "epsilon_budget": 10.0})
        ServerPrivacy(config=other, run_dir=tmp_path).resume_to(completed_round=3)


# ------------------------------------------------------------------------------------------------
# Calibration and planning
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["record", "client"])
def test_calibrated_config_meets_the_target(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = cfg_of(
        experiment={"rounds": 20},
        learner={"local_steps": 3},
        federation={"sampling": "poisson", "sample_rate": 0.1},
        privacy={"mode": mode, "target_epsilon": 4.0},
    )
    out = calibrated_config(config=cfg)
    z = out.privacy.noise_multiplier
    assert z != cfg.privacy.noise_multiplier and out.privacy.target_epsilon == 4.0
    plan = planned_epsilon(config=out)
    eps = plan["record_epsilon"] if mode == "record" else plan["client_epsilon"]
    assert 4.0 * 0.97 < eps <= 4.0
    # both levels: the rounds of the site sampled most often (fewer than 20 at q_client = 0.1); the
    # client sample is public, so the client level is not amplified (q = 1 per participation)
    site_rounds = max(planned_participation(config=cfg))
    assert plan["record_rounds"] == plan["client_rounds"] == site_rounds < 20
    steps = site_rounds * 3 if mode == "record" else site_rounds
    q = 0.05 if mode == "record" else 1.0
    assert eps == pytest.approx(epsilon_for(noise_multiplier=z, sample_rate=q, steps=steps, delta=DELTA))
    assert calibrated_config(config=out) == out  # idempotent: a resumed run recomputes the same z
    assert calibrated_config(config=cfg_of(privacy={"mode": mode})) == cfg_of(privacy={"mode": mode})
    with pytest.raises(ConfigError, match="target_epsilon"):
        calibrated_noise_multiplier(config=cfg_of(privacy={"mode": mode}))
    with caplog.at_level(logging.WARNING, logger="secfed"):
        ServerPrivacy(config=out, run_dir=tmp_path)
        assert "calibrated_config" not in caplog.text
        weak = cfg.replace(privacy=dataclasses.replace(cfg.privacy, noise_multiplier=0.3))
        ServerPrivacy(config=weak, run_dir=tmp_path)  # target set, too little noise: warned
        assert "calibrated_config" in caplog.text


def test_record_calibration_counts_the_rounds_each_site_is_sampled(tmp_path: Path) -> None:
    # one of four sites per round: each trains in about a quarter of the rounds, so z is calibrated
    # for the site sampled most often, and every site's accounted epsilon stays within the target
    target = 3.0
    cfg = cfg_of(
        experiment={"rounds": 8},
        learner={"local_steps": 2},
        federation={"clients_per_round": 1},
        privacy={"mode": "record", "sample_rate": 0.1, "expected_batch": 4, "target_epsilon": target},
    )
    exp = Experiment(config=cfg)
    exp.run(out_dir=tmp_path / "run", progress=False)
    z = exp.config.privacy.noise_multiplier
    trained = [0] * 4
    for m in read_metrics(tmp_path / "run"):
        for sid in m["clients"]:
            trained[sid] += 1
    assert trained == planned_participation(config=cfg)  # the planner sees the runtime's sample
    most = max(trained)
    assert most < 8 and sum(trained) == 8
    rows = ledger_rounds(tmp_path / "run")
    final = rows[-1]["sites"]
    for sid, rec in final.items():
        steps = trained[int(sid)] * 2
        assert sum(row["sites"][sid]["steps"] for row in rows) == steps  # per-round step counts
        if steps:
            assert rec["epsilon"] == pytest.approx(
                epsilon_for(noise_multiplier=z, sample_rate=0.1, steps=steps, delta=DELTA)
            )
        assert rec["epsilon"] <= target
    assert max(rec["epsilon"] for rec in final.values()) > 0.97 * target  # no budget left unused
    # calibrating for fewer rounds than the busiest site trains would break the guarantee, and
    # calibrating for every round would waste it: the count matters both ways
    fewer = calibrate_noise(target_epsilon=target, delta=DELTA, sample_rate=0.1, steps=(most - 1) * 2)
    assert epsilon_for(noise_multiplier=fewer, sample_rate=0.1, steps=most * 2, delta=DELTA) > target
    every = calibrate_noise(target_epsilon=target, delta=DELTA, sample_rate=0.1, steps=8 * 2)
    assert z < every


def test_record_steps_per_round_follows_the_learner() -> None:
    assert record_steps_per_round(config=cfg_of(learner={"local_steps": 4})) == 4
    reptile = cfg_of(learner={"name": "reptile", "local_steps": 2, "meta_batch": 3, "inner_steps": 5})
    assert record_steps_per_round(config=reptile) == 30


# ------------------------------------------------------------------------------------------------
# End-to-end runs
# ------------------------------------------------------------------------------------------------
CLIENT_RUN = {
    "experiment": {"rounds": 5},
    "learner": {"local_steps": 12},
    "federation": {"sampling": "poisson", "sample_rate": 0.75},
    "privacy": {"mode": "client", "noise_multiplier": 1.0, "max_grad_norm": 1.0},
}


@pytest.fixture(scope="module")
def client_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Path, Any]:
    cfg = cfg_of(**CLIENT_RUN)
    run_dir = tmp_path_factory.mktemp("client") / "run"
    result = Experiment(config=cfg).run(out_dir=run_dir, progress=False)
    return cfg, run_dir, result


def test_client_run_ledger_metrics_and_summary(client_run: tuple[ExperimentConfig, Path, Any]) -> None:
    cfg, run_dir, result = client_run
    rows = ledger_rounds(run_dir)
    metrics = read_metrics(run_dir)
    assert [r["round"] for r in rows] == [m["round"] for m in metrics] == [1, 2, 3, 4, 5]
    last_sites = dict.fromkeys(map(str, range(4)), 0.0)
    last_global = 0.0
    participations = [0] * 4
    for row, m in zip(rows, metrics, strict=True):
        assert sorted(row["sites"]) == ["0", "1", "2", "3"]
        g = row["global"]
        # per participation (the sample is public): no amplification, the most exposed site's rounds
        assert g["mechanism"] == "dp-fedavg" and g["privacy_unit"] == "client" and g["sample_rate"] == 1.0
        assert g["params"]["participants"] == m["clients"]
        for sid in m["clients"]:
            participations[sid] += 1
        most = max(participations)
        assert g["epsilon"] == pytest.approx(
            epsilon_for(noise_multiplier=1.0, sample_rate=1.0, steps=most, delta=DELTA) if most else 0.0
        )
        assert g["epsilon"] >= last_global and m["epsilon"] == g["epsilon"]
        last_global = g["epsilon"]
        for name, rec in row["sites"].items():
            assert rec["epsilon"] >= last_sites[name]
            assert rec["steps"] == (1 if int(name) in m["clients"] else 0)
            assert m["epsilon_sites"][name] == rec["epsilon"]
            last_sites[name] = rec["epsilon"]
    for name, eps in last_sites.items():  # record bound: z/2 per round holding the site's update
        rounds_in = sum(int(name) in m["clients"] for m in metrics)
        bound = (
            epsilon_for(noise_multiplier=0.5, sample_rate=1.0, steps=rounds_in, delta=DELTA)
            if rounds_in
            else 0.0
        )
        assert eps == pytest.approx(bound)
    s = result.summary
    assert s["epsilon"] == last_global and s["epsilon_sites"] == last_sites
    assert (s["mode"], s["privacy_unit"], s["mechanism"], s["accountant"]) == (
        "client",
        "client",
        "dp-fedavg",
        "rdp",
    )
    assert s["delta"] == DELTA and s["stopped_early"] is None
    assert json.loads((run_dir / "summary.json").read_text())["epsilon_sites"] == last_sites


def test_killed_run_resumes_never_below_the_uninterrupted_epsilon(
    client_run: tuple[ExperimentConfig, Path, Any], tmp_path: Path
) -> None:
    cfg, full_dir, _ = client_run
    run_dir = run_and_kill(cfg, tmp_path=tmp_path, after_rounds=1, poll_s=0.02)
    done = len(read_metrics(run_dir))
    assert 1 <= done < 5, f"kill landed after {done} rounds"
    interrupted = PrivacyLedger.read(path=run_dir / LEDGER_FILE)
    at_boundary = interrupted.pending is None and interrupted.last_round == done
    resumed = Experiment.resume(run_dir, progress=False)
    full_eps = [m["epsilon"] for m in read_metrics(full_dir)]
    resumed_eps = [m["epsilon"] for m in resumed.metrics]
    assert all(r >= f * (1 - 1e-12) for r, f in zip(resumed_eps, full_eps, strict=True))
    if at_boundary:  # killed between two rounds: nothing was released twice
        assert ledger_rounds(run_dir) == ledger_rounds(full_dir) and resumed_eps == full_eps
    else:  # killed inside a round: it released (or may have) and is counted again when re-run
        rows = ledger_rounds(run_dir)
        assert len(rows) > len(full_eps)
        # per participation: the most exposed site over every counted release (the cut round twice)
        counts = [0] * cfg.partition.num_sites
        for row in rows:
            for sid in row["global"]["params"]["participants"]:
                counts[sid] += 1
        expected = epsilon_for(noise_multiplier=1.0, sample_rate=1.0, steps=max(counts), delta=DELTA)
        assert resumed.summary["epsilon"] == pytest.approx(expected)
        assert resumed.summary["epsilon"] >= json.loads((full_dir / "summary.json").read_text())["epsilon"]


def test_client_budget_stops_the_run_before_it_is_exceeded(tmp_path: Path) -> None:
    # Per participation (public sample): the run's epsilon is that of the most exposed site.
    two = epsilon_for(noise_multiplier=1.0, sample_rate=1.0, steps=2, delta=DELTA)
    three = epsilon_for(noise_multiplier=1.0, sample_rate=1.0, steps=3, delta=DELTA)
    budget = (two + three) / 2
    cfg = cfg_of(
        experiment={"rounds": 8},
        federation={"sampling": "poisson", "sample_rate": 0.5},
        privacy={"mode": "client", "epsilon_budget": budget},
    )
    # The first round in which some sampled site would take part for the third time.
    counts = [0] * cfg.partition.num_sites
    stop = None
    for rnd in range(1, 9):
        sampled = sampled_sites(config=cfg, round_idx=rnd)
        if any(counts[s] == 2 for s in sampled):
            stop = rnd
            break
        for s in sampled:
            counts[s] += 1
    assert stop is not None and stop > 2
    result = Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    s = result.summary
    assert s["rounds"] == stop - 1 and s["stopped_early"] and "privacy budget" in s["stopped_early"]
    assert s["epsilon"] == pytest.approx(two) and s["epsilon_budget"] == budget
    assert s["client_participations_max"] == 2
    rows = ledger_rounds(tmp_path / "run")
    assert all(r["global"]["epsilon"] <= budget for r in rows)


def test_record_run_accounts_every_site_and_stops_on_budget(tmp_path: Path) -> None:
    one = epsilon_for(noise_multiplier=1.0, sample_rate=0.1, steps=2, delta=DELTA)
    cfg = cfg_of(
        experiment={"rounds": 4},
        learner={"local_steps": 2},
        privacy={
            "mode": "record",
            "sample_rate": 0.1,
            "expected_batch": 4,
            "episodes_per_step": 2,
            "epsilon_budget": one * 1.1,
        },
    )
    result = Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    rows = ledger_rounds(tmp_path / "run")
    assert len(rows) == 1  # every site trained once; a second round would exceed the budget
    for rec in rows[0]["sites"].values():
        assert rec["mechanism"] == "episodic-gaussian" and rec["privacy_unit"] == "record"
        assert rec["steps"] == record_steps_per_round(config=cfg)
        assert rec["epsilon"] == pytest.approx(one)
    s = result.summary
    assert s["stopped_early"] and "no site may take part" in s["stopped_early"]
    assert s["epsilon"] == pytest.approx(one) and s["epsilon_unit"].startswith("record")
    assert s["privacy_unit"] == "record" and s["mechanism"] == "episodic-gaussian"


# ------------------------------------------------------------------------------------------------
# Distributed DP under secure aggregation
# ------------------------------------------------------------------------------------------------
def distributed_cfg(mechanism: str, dropout: float, rounds: int = 3, bits: int = 20) -> ExperimentConfig:
    return cfg_of(
        experiment={"rounds": rounds},
        partition={"scheme": "iid", "num_sites": 6},
        secagg={"corrupt_fraction": 0.0},
        federation={"aggregation": "secagg", "dropout_rate": dropout},
        privacy={"mode": "distributed", "mechanism": mechanism, "noise_multiplier": 1.0, "bits": bits},
    )


def test_distributed_encoders_sum_with_the_planned_noise() -> None:
    cfg = distributed_cfg("skellam", 0.0)
    dim = 300
    factory = make_distributed_encoder_factory(params=dp_params(config=cfg), dim=dim)
    enc = factory(1)
    assert rotation_seed(params=dp_params(config=cfg), round_idx=1) != rotation_seed(
        params=dp_params(config=cfg), round_idx=2
    )
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=dim) * 0.01 for _ in range(6)]
    # Every site encodes with its own encoder (own noise); the server decodes with a third one.
    total = sum(factory(1).encode(x=x) for x in xs) % (1 << enc.bits)
    err = enc.decode(total=total.astype(np.uint64), n_summed=6) - np.sum(xs, axis=0)
    # Six shares of 1/6 of the target variance each: total std z*C = 1 per coordinate.
    assert abs(err.std() - 1.0) < 0.15
    assert enc.noise_stddev(n_summed=6) == pytest.approx(1.0, rel=1e-6)
    # With little noise the rotation is what matters: another round's rotation does not undo it.
    quiet = distributed_cfg("skellam", 0.0)
    quiet = quiet.replace(privacy=dataclasses.replace(quiet.privacy, noise_multiplier=0.001))
    qf = make_distributed_encoder_factory(params=dp_params(config=quiet), dim=dim)
    big = [x * 5 for x in xs]  # norm ~ 0.87 < C: no clipping
    qtotal = (sum(qf(1).encode(x=x) for x in big) % (1 << qf(1).bits)).astype(np.uint64)
    right = qf(1).decode(total=qtotal, n_summed=6) - np.sum(big, axis=0)
    wrong = qf(2).decode(total=qtotal, n_summed=6) - np.sum(big, axis=0)
    assert right.std() < 0.01 < 0.05 < wrong.std()
    assert isinstance(build_client_aggregator(config=cfg, site_id=0), SecureClientAggregator)
    assert isinstance(build_server_aggregator(config=cfg), SecureServerAggregator)
    with pytest.raises(ConfigError, match="distributed"):
        make_distributed_encoder_factory(params=dp_params(config=cfg_of(privacy={"mode": "client"})), dim=300)


def test_skellam_noise_beyond_the_samplers_range_is_refused() -> None:
    # At 32 bits each client's Skellam variance would be ~1e16, where numpy's Poisson sampler
    # returns the wrong variance (too little noise); the planner says which bit width works.
    with pytest.raises(ConfigError, match=r"privacy.bits = \d+ or fewer"):
        distributed_dp_config(params=dp_params(config=distributed_cfg("skellam", 0.0, bits=32)), dim=300)
    planned = distributed_dp_config(
        params=dp_params(config=distributed_cfg("skellam", 0.0, bits=20)), dim=300
    )
    assert planned.scaled_local_stddev**2 <= SKELLAM_MAX_LOCAL_VARIANCE
    assert (
        distributed_dp_config(params=dp_params(config=distributed_cfg("ddg", 0.0, bits=32)), dim=300).bits
        == 32
    )


@pytest.mark.parametrize("mechanism", ["skellam", "ddg"])
def test_distributed_run_dropouts_raise_epsilon(tmp_path: Path, mechanism: str) -> None:
    eps = {}
    for dropout in (0.0, 0.2):
        run_dir = tmp_path / f"d{dropout}"
        result = Experiment(config=distributed_cfg(mechanism, dropout)).run(out_dir=run_dir, progress=False)
        rows = ledger_rounds(run_dir)
        metrics = read_metrics(run_dir)
        assert len(rows) == 3 and all(m["clients"] for m in metrics)  # every round decoded a sum
        replay = DistributedDPAccountant()
        for row, m in zip(rows, metrics, strict=True):
            g = row["global"]
            event = DistributedEvent.from_dict(data=g["params"]["event"])
            assert event.num_survivors == len(m["clients"]) == g["params"]["survivors"]
            assert event.mechanism == mechanism and g["privacy_unit"] == "client"
            replay.step(event=event)
            assert g["epsilon"] == pytest.approx(replay.get_epsilon(delta=DELTA), rel=1e-9)
        eps[dropout] = result.summary["epsilon"]
        assert result.summary["mechanism"] == mechanism and result.summary["accountant"] == "distributed-rdp"
        if dropout:
            assert any(m["dropped"] for m in metrics), "the seed produced no dropout"
        again = ServerPrivacy(config=distributed_cfg(mechanism, dropout), run_dir=run_dir)
        again.resume_to(completed_round=3)  # replays the distributed events and checks the recorded ε
        assert again.summary()["epsilon"] == eps[dropout]
    assert eps[0.2] > eps[0.0] > 0


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_distributed_budget_projects_the_fewest_survivors(tmp_path: Path, dropout: float) -> None:
    probe = ServerPrivacy(config=distributed_cfg("ddg", dropout), run_dir=tmp_path / "probe")
    full = probe.distributed_config().event(num_survivors=6, sample_rate=1.0)
    one_round = DistributedDPAccountant()
    one_round.step(event=full)
    budget = one_round.get_epsilon(delta=DELTA) * 1.01
    cfg = distributed_cfg("ddg", dropout)
    cfg = cfg.replace(privacy=dataclasses.replace(cfg.privacy, epsilon_budget=budget))
    sp = ServerPrivacy(config=cfg, run_dir=tmp_path / "run")
    sp.resume_to(completed_round=0)
    excluded, stop = sp.before_round(round_idx=1)
    assert excluded == frozenset()
    if dropout == 0:
        assert sp.worst_case_survivors() == 6 and stop is None  # every sampled site survives
    else:
        # With dropouts only 2 survivors (the SecAgg minimum) may carry noise: 1/3 of the planned variance.
        assert sp.worst_case_survivors() == 2
        assert stop is not None and "2 clients" in stop and "budget" in stop
