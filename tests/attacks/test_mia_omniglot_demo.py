"""Membership inference on the demo's runs (issue 18): embedded Omniglot with rotated test classes.

Both failed before the fix: the replica configuration kept ``data.test_rotations = true`` for its
array dataset and was refused, and ``plan_query_episodes`` ran out of support records when a class
of the held-out population had fewer than ``2 * shots`` records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attacks.replicas import ReplicaSpec, _replica_config
from attacks.secfed_mia import support_shots
from attacks.secfed_scores import plan_query_episodes
from secfed.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_replica_of_the_demo_configuration_is_valid(tmp_path: Path) -> None:
    cfg = load_config(REPO / "examples" / "omniglot_demo_dp.toml")
    assert cfg.data.test_rotations  # the demo uses the rotated test protocol
    spec = ReplicaSpec(
        images=np.zeros((6, 1, 28, 28), np.float32),
        labels=np.arange(6) % 3,
        site_records=[np.arange(2), np.arange(2, 4), np.arange(4, 6)],
        site_origin=[0, 1, 2],
    )
    replica = _replica_config(config=cfg, data_path=tmp_path / "r.npz", spec=spec, rounds=1, name="r")
    assert replica.data.dataset == "medmnist" and not replica.data.test_rotations
    assert replica.experiment.untrained_baseline is False  # replicas skip the baseline evaluation


def test_support_shots_leave_a_replacement_for_every_clash() -> None:
    # 3 records per class in the support pool, each also a query (the held-out population of a
    # small Omniglot site); the old choice (smallest class - 1 = 2 shots) ran out of records
    labels = np.repeat(np.arange(6), 3)
    shots = support_shots(wanted=5, smallest_class=3)
    assert shots == 1
    for passes in (1, 3):
        episodes = plan_query_episodes(
            query_labels=labels,
            support_labels=labels,
            query_in_support=np.arange(labels.size),
            n_way=5,
            shots=shots,
            passes=passes,
            seed=0,
        )
        assert episodes
        for e in episodes:  # a query is never scored against its own record
            assert not set(e.support.tolist()) & set(e.queries.tolist())
        assert sorted(int(q) for e in episodes for q in e.queries) == sorted(
            list(range(labels.size)) * passes
        )
