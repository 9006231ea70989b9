"""Client-level ε when the client sample is public (issue 16, item 5).

The sample is drawn from ``experiment.seed``, logged in ``metrics.jsonl``, and under secure
aggregation the server sees who sends a masked input: an adversary knows who took part. The sound
client-level ε is then accounted per participation, with no amplification by sampling: a site's
ε composes the releases that contained its update; the run's ε is the maximum over sites. These
tests take that adversary's view: they recompute ε from what a reader of the run directory sees
(``metrics.jsonl``'s clients per round) and from the seed's public schedule, and check that the
ledger, the planner and the calibration never report less.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privacy.accountants import DistributedDPAccountant
from privacy.analysis import DEFAULT_RDP_ORDERS, ddg_rdp, rdp_to_epsilon
from privacy.analysis.participation import (
    known_participation_gaussian_epsilon,
    known_participation_rdp,
    participation_rdp,
)
from privacy.calibration import distributed_epsilon_for, epsilon_for
from secfed.config import ExperimentConfig, config_from_dict
from secfed.dp import calibrated_config
from secfed.dp.distributed import distributed_dp_config, model_dim
from secfed.dp.params import dp_params
from secfed.dp.server import client_rounds, planned_epsilon
from secfed.experiment import Experiment, read_metrics
from secfed.federation.server import planned_participation

REPO = Path(__file__).resolve().parents[3]
DELTA = 1e-5


def _cfg(
    *,
    mode: str = "client",
    num_sites: int = 10,
    rounds: int = 100,
    q: float = 0.3,
    z: float = 2.0,
    seed: int = 0,
    **extra: dict[str, Any],
) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "experiment": {
            "rounds": rounds,
            "eval_every": 0,
            "eval_episodes": 5,
            "final_eval_episodes": 5,
            "seed": seed,
        },
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "iid", "num_sites": num_sites},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
        "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        "learner": {"name": "protonet", "local_steps": 1},
        "federation": {"sampling": "poisson", "sample_rate": q},
        "privacy": {"mode": mode, "noise_multiplier": z, "delta": DELTA},
    }
    if mode == "distributed":
        raw["federation"]["aggregation"] = "secagg"
        raw["privacy"]["mechanism"] = "ddg"
    for name, values in extra.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw, base_dir=REPO)


# ------------------------------------------------------------------------------------------------
# The analysis: a priori (public Bernoulli participation) and ex post (known schedule)
# ------------------------------------------------------------------------------------------------
def test_known_participation_reproduces_the_issue_figures() -> None:
    # issue 16, item 5: ledger (amplified) 8.62 vs 17.45; 11.02 vs 37.14 with participation known
    assert known_participation_gaussian_epsilon(
        noise_multiplier=2.0, sample_rate=0.3, rounds=100, delta=DELTA
    ) == pytest.approx(17.45, abs=0.005)
    assert known_participation_gaussian_epsilon(
        noise_multiplier=1.0, sample_rate=0.1, rounds=200, delta=DELTA
    ) == pytest.approx(37.14, abs=0.01)
    assert epsilon_for(noise_multiplier=2.0, sample_rate=0.3, steps=100, delta=DELTA) == pytest.approx(
        8.62, abs=0.005
    )
    assert epsilon_for(noise_multiplier=1.0, sample_rate=0.1, steps=200, delta=DELTA) == pytest.approx(
        11.02, abs=0.005
    )


def test_known_participation_rdp_limits_and_order() -> None:
    orders = np.asarray(DEFAULT_RDP_ORDERS, dtype=float)
    rho = orders / (2 * 1.3**2)
    np.testing.assert_allclose(known_participation_rdp(orders=orders, base_rdp=rho, sample_rate=1.0), rho)
    assert not np.any(known_participation_rdp(orders=orders, base_rdp=rho, sample_rate=0.0))
    lo = known_participation_rdp(orders=orders, base_rdp=rho, sample_rate=0.2)
    hi = known_participation_rdp(orders=orders, base_rdp=rho, sample_rate=0.4)
    assert np.all(lo <= hi) and np.all(hi <= rho) and np.all(np.isfinite(lo))  # no overflow at large α
    # ex post: the composition over the rounds that included the unit
    np.testing.assert_allclose(participation_rdp(curves=[rho, rho, rho], orders=orders), 3 * rho)


# ------------------------------------------------------------------------------------------------
# Planning at the settings of item 5
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("q", "z", "rounds", "amplified"), [(0.3, 2.0, 100, 8.62), (0.1, 1.0, 200, 11.02)])
def test_planned_client_epsilon_is_the_composition_over_the_most_sampled_site(
    q: float, z: float, rounds: int, amplified: float
) -> None:
    cfg = _cfg(q=q, z=z, rounds=rounds)
    k = max(planned_participation(config=cfg))
    plan = planned_epsilon(config=cfg)
    assert plan["client_rounds"] == client_rounds(config=cfg) == k
    assert plan["client_epsilon"] == pytest.approx(
        epsilon_for(noise_multiplier=z, sample_rate=1.0, steps=k, delta=DELTA)
    )
    # far above the amplified figure the ledger used to report, and about the a priori figure
    a_priori = known_participation_gaussian_epsilon(
        noise_multiplier=z, sample_rate=q, rounds=rounds, delta=DELTA
    )
    assert plan["client_epsilon"] > 1.5 * amplified
    assert 0.85 * a_priori < plan["client_epsilon"] < 1.25 * a_priori


def test_planned_distributed_epsilon_is_not_amplified() -> None:
    # issue 16, item 5: distributed DDG, 3 expected survivors (q = 0.3 of 10), z = 1, 100 rounds
    cfg = _cfg(mode="distributed", q=0.3, z=1.0, rounds=100)
    plan = planned_epsilon(config=cfg)
    event = distributed_dp_config(params=dp_params(config=cfg), dim=model_dim(config=cfg)).event(
        num_survivors=3, sample_rate=1.0
    )
    amplified = distributed_epsilon_for(
        mechanism="ddg",
        local_stddev=event.local_stddev,
        num_clients=3,
        l2_sensitivity=event.l2_sensitivity,
        l1_sensitivity=event.l1_sensitivity,
        dim=event.dim,
        sample_rate=0.3,
        rounds=100,
        delta=DELTA,
    )
    k = client_rounds(config=cfg)
    orders = np.asarray(DEFAULT_RDP_ORDERS, dtype=float)
    curve = ddg_rdp(
        orders=orders,
        l2_sensitivity=event.l2_sensitivity,
        l1_sensitivity=event.l1_sensitivity,
        local_stddev=event.local_stddev,
        num_clients=3,
        dim=event.dim,
    )
    ex_post = rdp_to_epsilon(orders=orders, rdp=k * curve, delta=DELTA)[0]
    a_priori = rdp_to_epsilon(
        orders=orders,
        rdp=100 * known_participation_rdp(orders=orders, base_rdp=curve, sample_rate=0.3),
        delta=DELTA,
    )[0]
    assert plan["distributed_epsilon"] == pytest.approx(ex_post, rel=1e-9)
    assert plan["distributed_epsilon"] > 1.5 * amplified
    assert a_priori > 1.5 * amplified


# ------------------------------------------------------------------------------------------------
# Calibration meets the target under the sound accounting
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["client", "distributed"])
def test_calibration_meets_the_target_per_participation(mode: str) -> None:
    cfg = _cfg(mode=mode, q=0.3, rounds=40, privacy={"target_epsilon": 6.0})
    out = calibrated_config(config=cfg)
    z = out.privacy.noise_multiplier
    k = client_rounds(config=cfg)
    sound = epsilon_for(noise_multiplier=z, sample_rate=1.0, steps=k, delta=DELTA)
    plan = planned_epsilon(config=out)
    if mode == "client":
        assert sound <= 6.0 and plan["client_epsilon"] == pytest.approx(sound)
        assert sound > 0.97 * 6.0
    else:
        # recompute from the calibrated encoding: k rounds of the expected 3 survivors, no amplification
        event = distributed_dp_config(params=dp_params(config=out), dim=model_dim(config=out)).event(
            num_survivors=3, sample_rate=1.0
        )
        acc = DistributedDPAccountant()
        acc.step(event=event, num_rounds=k)
        assert acc.get_epsilon(delta=DELTA) <= 6.0 * (1 + 1e-6)
        assert plan["distributed_epsilon"] == pytest.approx(acc.get_epsilon(delta=DELTA), rel=1e-9)
        assert plan["distributed_epsilon"] >= sound * (1 - 1e-6)  # discrete noise costs a little more


# ------------------------------------------------------------------------------------------------
# The ledger of a run, from a reader's view of metrics.jsonl
# ------------------------------------------------------------------------------------------------
def _counts(metrics: list[dict[str, Any]], num_sites: int) -> list[list[int]]:
    """Participations per site after each round, from the clients logged in metrics.jsonl."""
    counts = [0] * num_sites
    out = []
    for row in metrics:
        for s in row["clients"]:
            counts[s] += 1
        out.append(list(counts))
    return out


def test_client_run_ledger_equals_the_composition_over_actual_participations(tmp_path: Path) -> None:
    z = 1.5
    base = _cfg(num_sites=5, q=0.5, z=z, rounds=8, seed=4, federation={"dropout_rate": 0.2})
    k_planned = client_rounds(config=base)
    # A budget equal to the planned ε: a projection charging one step per round would stop early;
    # the public schedule says which rounds can raise the maximum, so the run completes.
    budget = epsilon_for(noise_multiplier=z, sample_rate=1.0, steps=k_planned, delta=DELTA) * (1 + 1e-9)
    cfg = _cfg(
        num_sites=5,
        q=0.5,
        z=z,
        rounds=8,
        seed=4,
        federation={"dropout_rate": 0.2},
        privacy={"epsilon_budget": budget},
    )
    result = Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    metrics = read_metrics(tmp_path / "run")
    assert result.summary["stopped_early"] is None and len(metrics) == 8
    counts = _counts(metrics, 5)
    assert sum(len(m["clients"]) for m in metrics) < sum(
        len(s) for s in map(_sampled(cfg), range(1, 9))
    )  # dropouts
    for row, after in zip(metrics, counts, strict=True):
        expected = (
            epsilon_for(noise_multiplier=z, sample_rate=1.0, steps=max(after), delta=DELTA)
            if max(after)
            else 0.0
        )
        assert row["epsilon"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert result.summary["epsilon"] == pytest.approx(metrics[-1]["epsilon"])
    assert result.summary["client_participations_max"] == max(counts[-1]) <= k_planned
    assert result.summary["epsilon"] <= budget
    amplified = epsilon_for(noise_multiplier=z, sample_rate=0.5, steps=8, delta=DELTA)
    assert result.summary["epsilon"] > amplified
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "no client-sampling amplification" in summary["client_sampling"]


def test_distributed_run_epsilon_dominates_every_sites_composition(tmp_path: Path) -> None:
    cfg = _cfg(
        mode="distributed",
        num_sites=6,
        q=0.8,
        z=1.0,
        rounds=6,
        seed=2,
        federation={"dropout_rate": 0.15},
    )
    result = Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    metrics = read_metrics(tmp_path / "run")
    dcfg = distributed_dp_config(params=dp_params(config=cfg), dim=model_dim(config=cfg))
    per_site = {s: DistributedDPAccountant() for s in range(6)}
    every_release = DistributedDPAccountant()
    for row in metrics:
        if not row["clients"]:
            continue
        event = dcfg.event(num_survivors=len(row["clients"]), sample_rate=1.0)
        every_release.step(event=event)
        for s in row["clients"]:
            per_site[s].step(event=event)
        worst_site = max(acc.get_epsilon(delta=DELTA) for acc in per_site.values())
        # never below the most exposed site, never above composing every release
        assert (
            worst_site * (1 - 1e-9) <= row["epsilon"] <= every_release.get_epsilon(delta=DELTA) * (1 + 1e-9)
        )
    assert any(len(m["clients"]) < len(_sampled(cfg)(m["round"])) for m in metrics)  # dropouts happened
    assert result.summary["epsilon"] == pytest.approx(metrics[-1]["epsilon"])


def _sampled(cfg: ExperimentConfig) -> Any:
    from secfed.federation.server import sampled_sites

    return lambda rnd: sampled_sites(config=cfg, round_idx=rnd)
