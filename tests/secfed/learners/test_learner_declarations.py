"""DP planning and the noise-sharing rule read what each learner class declares, never its name.

A learner says how many record-level DP steps a local step takes (``dp_steps_per_local_step``),
how the planner replays its public plan (``dp_plan``) and whether noise sharing supports it
(``noise_sharing``); :mod:`secfed.dp.planning`, :mod:`secfed.dp.params`, :mod:`secfed.dp.sharing`,
:mod:`secfed.dp.site` and :func:`secfed.config.check_noise_sharing_config` read those attributes.
Old code: the planner, the site hook and the rule listed learner names, so changing a class's
declaration changed nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from secfed.config import config_from_dict
from secfed.dp import planning
from secfed.dp.params import record_steps_per_round
from secfed.errors import ConfigError
from secfed.learners import LEARNERS, ProtoNet, Reptile, sharing_learner_names

REPO = Path(__file__).resolve().parents[3]
READERS = (
    "secfed/dp/planning.py",
    "secfed/dp/params.py",
    "secfed/dp/sharing.py",
    "secfed/dp/site.py",
    "secfed/components.py",
)


def _record(**learner: Any) -> Any:
    return config_from_dict(
        {
            "experiment": {"rounds": 2, "seed": 3},
            "partition": {"num_sites": 3, "scheme": "iid"},
            "task": {"n_way": 2},
            "model": {"norm": "group", "hidden": 8, "groups": 4},
            "learner": {"local_steps": 2, **learner},
            "privacy": {"mode": "record", "episodes_per_step": 1},
        }
    )


@pytest.mark.parametrize("path", READERS)
def test_the_dp_planning_modules_name_no_learner(path: str) -> None:
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    named = sorted(
        {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in LEARNERS
        }
    )
    assert named == [], f"{path} names learners {named}: read a class attribute instead"


def test_steps_per_round_follow_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _record(name="reptile", meta_batch=2, inner_steps=3)
    assert record_steps_per_round(config=cfg) == 2 * 2 * 3
    monkeypatch.setattr(Reptile, "dp_steps_per_local_step", classmethod(lambda cls, **_: 5))
    assert record_steps_per_round(config=cfg) == 2 * 5


def test_class_aware_replay_follows_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _record(name="protonet")
    every = planning.record_rounds(config=cfg) * record_steps_per_round(config=cfg)
    assert planning.record_class_aware_steps(config=cfg) < every  # slots: the worst class only
    planning._CLASS_STEPS_CACHE.clear()
    monkeypatch.setattr(ProtoNet, "dp_plan", "every_step")
    assert planning.record_class_aware_steps(config=cfg) == every
    planning._CLASS_STEPS_CACHE.clear()


def test_noise_sharing_follows_the_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sharing_learner_names() == ("protonet", "maml", "fomaml", "fedavg")
    data = {
        "partition": {"num_sites": 4},
        "model": {"norm": "group", "hidden": 8, "groups": 4},
        "learner": {"name": "protonet", "local_steps": 1, "local_optimizer": "sgd"},
        "federation": {"aggregation": "secagg"},
        "privacy": {"mode": "record", "noise_sharing": True},
    }
    config_from_dict(data)
    monkeypatch.setattr(ProtoNet, "noise_sharing", False)
    with pytest.raises(ConfigError, match=r"learner.name = 'protonet' \(supported: maml, fomaml, fedavg;"):
        config_from_dict(data)
