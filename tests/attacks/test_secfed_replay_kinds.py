"""The attack replays read learners' declarations, not their names (issue 20).

``message_kind``, ``task_local_head`` and ``global_head`` derive from ``Learner.episodic`` and
``Learner.head`` what the replays used to decide by learner name; these tests pin the derived
answers to the ones the name checks gave for every registered learner.
"""

from __future__ import annotations

import pytest

from attacks.secfed_inversion import applicable_scenarios
from attacks.secfed_replay import (
    MESSAGE_KINDS,
    global_head,
    is_metric_learner,
    message_kind,
    task_local_head,
)
from secfed.errors import ConfigError
from secfed.learners import LEARNERS

#: What the replays decided by name before the declarations were read.
EXPECTED = {
    "protonet": "episode_gradient",
    "matching": "episode_gradient",
    "siamese": "episode_gradient",
    "maml": "meta_gradient",
    "fomaml": "meta_gradient",
    "reptile": "task_update",
    "fedavg": "batch_update",
}


def test_every_registered_learner_has_its_former_message_kind() -> None:
    assert set(LEARNERS) == set(EXPECTED)
    for name, kind in EXPECTED.items():
        assert message_kind(name) == kind, name
        assert kind in MESSAGE_KINDS
        assert task_local_head(name) == (name in ("maml", "fomaml", "reptile")), name
        assert global_head(name) == (name == "fedavg"), name
        assert is_metric_learner(name) == (kind == "episode_gradient"), name


def test_first_order_is_read_from_the_maml_declaration() -> None:
    from attacks.secfed_replay import _first_order

    assert [n for n in EXPECTED if _first_order(n)] == ["fomaml"]


def test_scenarios_by_learner_are_unchanged() -> None:
    skipped = {
        name: sorted(k for k, v in applicable_scenarios(learner=name).items() if v) for name in EXPECTED
    }
    assert skipped["fedavg"] == ["episode"] and skipped["reptile"] == ["episode"]
    assert skipped["maml"] == ["update_b1", "update_b4"] == skipped["fomaml"]
    for name in ("protonet", "matching", "siamese"):
        assert skipped[name] == ["gradient_b1", "update_b1", "update_b4"], name


def test_unknown_learner_is_refused_and_the_kind_is_the_declared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="nosuch"):
        message_kind("nosuch")
    # the kind is read from the declaration (secfed.learners.declarations), not derived from
    # other flags: a declaration that says something else changes the answer
    from dataclasses import replace

    from secfed.learners import declarations

    odd = replace(declarations.DECLARATIONS["protonet"], message="task_update")
    monkeypatch.setitem(declarations.DECLARATIONS, "protonet", odd)
    assert message_kind("protonet") == "task_update"
    # and a declaration no replay models cannot be made
    with pytest.raises(ConfigError, match="message must be one of"):
        replace(odd, message="gradient_of_something")
