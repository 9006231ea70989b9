"""End-to-end federation: backends agree, runs are deterministic, dropouts are injected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from runtime_cfg import REPO, tiny_config_dict

from secfed.config import config_from_dict
from secfed.experiment import Experiment
from secfed.federation.server import plan_round


def _strip(rows: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("wall_s",) and not k.startswith("agg_bytes")} for r in rows
    ]


def test_sequential_is_deterministic(tmp_path: Path) -> None:
    cfg = config_from_dict(tiny_config_dict(), base_dir=REPO)
    a = Experiment(config=cfg).run(out_dir=tmp_path / "a", progress=False)
    b = Experiment(config=cfg).run(out_dir=tmp_path / "b", progress=False)
    assert _strip(a.metrics) == _strip(b.metrics)
    assert a.summary["test_accuracy"] == b.summary["test_accuracy"]
    assert len(a.metrics) == 3 and all(m["clients"] == [0, 1, 2, 3] for m in a.metrics)
    assert "test_accuracy" in a.metrics[1] and "test_accuracy_ci95" in a.metrics[2]
    # run directory contents
    for name in ("config.toml", "metrics.jsonl", "summary.json", "checkpoint/state.json", "sites.json"):
        assert (tmp_path / "a" / name).exists(), name
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["rounds"] == 3 and 0.0 <= summary["test_accuracy"] <= 1.0


def test_multiprocess_backend_matches_sequential(tmp_path: Path) -> None:
    seq = config_from_dict(tiny_config_dict(experiment={"rounds": 2, "threads": 1}), base_dir=REPO)
    mp = config_from_dict(
        tiny_config_dict(experiment={"rounds": 2, "threads": 1, "backend": "multiprocess"}), base_dir=REPO
    )
    a = Experiment(config=seq).run(out_dir=tmp_path / "seq", progress=False)
    b = Experiment(config=mp).run(out_dir=tmp_path / "mp", progress=False)
    for ra, rb in zip(a.metrics, b.metrics, strict=True):
        assert ra["clients"] == rb["clients"]
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
    assert a.summary["test_accuracy"] == pytest.approx(b.summary["test_accuracy"], abs=0.02)


def test_dropouts_and_stragglers_are_injected_from_the_seed(tmp_path: Path) -> None:
    cfg = config_from_dict(
        tiny_config_dict(
            experiment={"rounds": 4, "eval_every": 0}, federation={"dropout_rate": 0.4, "straggler_rate": 0.2}
        ),
        base_dir=REPO,
    )
    plans = [plan_round(config=cfg, round_idx=r, num_stages=2) for r in range(1, 50)]
    assert plans == [plan_round(config=cfg, round_idx=r, num_stages=2) for r in range(1, 50)]
    drops = sum(len(p.drop_stage) for p in plans)
    assert 0.25 * 4 * 49 < drops < 0.55 * 4 * 49  # about 40 % of sampled sites drop
    assert {s for p in plans for s in p.drop_stage.values()} == {0, 1}  # both stages occur
    res = Experiment(config=cfg).run(out_dir=tmp_path / "d", progress=False)
    for row in res.metrics:
        assert set(row["clients"]).isdisjoint(row["dropped"])
        assert sorted(row["clients"] + row["dropped"]) == [0, 1, 2, 3]
    assert sum(len(r["dropped"]) for r in res.metrics) > 0


def test_poisson_sampling_and_fedadam(tmp_path: Path) -> None:
    cfg = config_from_dict(
        tiny_config_dict(
            experiment={"rounds": 3, "eval_every": 0},
            federation={
                "sampling": "poisson",
                "sample_rate": 0.5,
                "server_optimizer": "adam",
                "server_lr": 0.01,
            },
        ),
        base_dir=REPO,
    )
    sizes = [len(plan_round(config=cfg, round_idx=r, num_stages=2).sampled) for r in range(1, 200)]
    assert 1.6 < float(np.mean(sizes)) < 2.4
    res = Experiment(config=cfg).run(out_dir=tmp_path / "p", progress=False)
    assert len(res.metrics) == 3


@pytest.mark.parametrize("learner", ["maml", "fomaml", "reptile", "fedavg"])
def test_every_learner_runs_federated(tmp_path: Path, learner: str) -> None:
    cfg = config_from_dict(
        tiny_config_dict(
            experiment={"rounds": 2, "eval_every": 1},
            learner={"name": learner, "inner_steps": 1, "test_inner_steps": 1},
        ),
        base_dir=REPO,
    )
    res = Experiment(config=cfg).run(out_dir=tmp_path / learner, progress=False)
    assert np.isfinite(res.metrics[-1]["train_loss"])
    assert 0.0 <= res.summary["test_accuracy"] <= 1.0


@pytest.mark.parametrize(("mode", "backend"), [("secagg", "sequential"), ("secagg+", "multiprocess")])
def test_secure_aggregation_in_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, backend: str
) -> None:
    # sites drop out at every stage of the round, drawn from the seed; the protocol must see
    # exactly those dropouts, report its parameters per round, and (multi-process) every client
    # must run its side of the protocol in its own process, never in the server's
    import protocols.client
    from protocols import Stage
    from secfed.federation.secure import make_server_aggregator

    created: list[int] = []
    original = protocols.client.SecAggClientSession.__init__

    def recording(self: protocols.client.SecAggClientSession, **kwargs: object) -> None:
        created.append(int(kwargs["client_id"]))  # type: ignore[call-overload]
        original(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(protocols.client.SecAggClientSession, "__init__", recording)
    cfg = config_from_dict(
        tiny_config_dict(
            experiment={"rounds": 4, "eval_every": 0, "threads": 1, "backend": backend},
            partition={"num_sites": 6},
            federation={"aggregation": mode, "dropout_rate": 0.3},
        ),
        base_dir=REPO,
    )
    stages = make_server_aggregator(config=cfg).stages
    num_stages = 1 + len(stages)  # training is stage 0
    masked = 1 + stages.index(Stage.COLLECT_MASKED_INPUT.wire_name)
    res = Experiment(config=cfg).run(out_dir=tmp_path / "run", progress=False)
    dropped_in_protocol = 0
    for row in res.metrics:
        plan = plan_round(config=cfg, round_idx=row["round"], num_stages=num_stages)
        trained = [s for s in plan.sampled if plan.drop_stage.get(s, num_stages) > 0]
        # a site's input is in the sum iff its masked input arrived (dropping at unmasking is fine)
        summed = [s for s in trained if plan.drop_stage.get(s, num_stages) > masked]
        dropped_in_protocol += len(trained) - len(summed)
        assert row["agg_protocol"] == mode and row["agg_aborted"] == 0
        assert row["agg_n"] == len(trained)  # sites that dropped before training never entered
        assert row["clients"] == summed and row["agg_survivors"] == len(summed)
        if mode == "secagg":
            assert row["agg_k"] == len(trained) - 1  # complete graph
        assert 2 <= row["agg_t"] <= row["agg_k"] + 1 <= len(trained)
        assert row["agg_bytes_sent_per_client"] > 0 and row["agg_bytes_up_per_client"] > 0
    assert dropped_in_protocol > 0  # the seed makes some sites drop inside the protocol
    if backend == "multiprocess":
        assert created == []  # no client session was ever built in the server's process
    else:
        assert len(created) == sum(row["agg_n"] for row in res.metrics)
