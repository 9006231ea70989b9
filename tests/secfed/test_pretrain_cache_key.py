"""The public-pretraining cache key holds what pretraining reads, and nothing else.

Before (key version 1) a run's own ``learner.local_lr`` / ``local_steps``, ``model.trainable`` and
the task section were in the key although pretraining replaces or ignores them: a validation run
with other training settings pretrained the very same state again (25 minutes on the loaded 2-core
machine; the two cached states of this session were bit-identical). The second test trains both
configurations and checks that sharing the key is right: the states are equal bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from secfed_config_dicts import omniglot_greek_public

from secfed.config import ExperimentConfig, config_from_dict

REPO = Path(__file__).resolve().parents[2]


def _config(**sections: dict[str, Any]) -> ExperimentConfig:
    model = {"norm": "group", "hidden": 16, "pretrain_steps": 3, "pretrain_n_way": 5}
    learner: dict[str, Any] = {"name": "protonet"}
    model.update(sections.pop("model", {}))
    learner.update(sections.pop("learner", {}))
    return config_from_dict(
        {"data": omniglot_greek_public(), "model": model, "learner": learner, **sections}, base_dir=REPO
    )


#: Settings a ProtoNet pretraining replaces or does not read (the run's own training).
IGNORED = [
    {"learner": {"local_lr": 0.001}},
    {"learner": {"local_steps": 5}},
    {"learner": {"local_optimizer": "sgd"}},  # a ProtoNet embedding always pretrains with Adam
    {"task": {"n_way": 20}},  # the public episodes are model.pretrain_n_way-way
    {"model": {"trainable": "last"}},  # every parameter pretrains
    {"privacy": {"mode": "record", "target_epsilon": 8.0, "delta": 1e-5}},
    {"experiment": {"rounds": 10}},
]
#: Settings pretraining does read.
READ = [
    {"model": {"pretrain_steps": 4}},
    {"model": {"pretrain_lr": 0.003}},
    {"model": {"pretrain_n_way": 10}},
    {"model": {"pretrain_shift": 2}},
    {"model": {"hidden": 32}},
    {"learner": {"meta_batch": 2}},
    {"experiment": {"seed": 1}},
    {"data": omniglot_greek_public(public_alphabets=["Latin"], val_alphabets=["Greek"])},
]


def test_the_key_ignores_the_runs_own_training_settings() -> None:
    from secfed.pretrain import pretrain_cache_path

    base = pretrain_cache_path(config=_config())
    for change in IGNORED:
        assert pretrain_cache_path(config=_config(**change)) == base, change


def test_the_key_follows_every_setting_pretraining_reads() -> None:
    from secfed.pretrain import pretrain_cache_path

    base = pretrain_cache_path(config=_config())
    paths = [pretrain_cache_path(config=_config(**change)) for change in READ]
    assert base not in paths
    assert len(set(paths)) == len(paths)


def test_configs_that_share_a_key_pretrain_the_same_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from secfed import components
    from secfed.experiment import initial_model

    monkeypatch.setenv("SECFED_CACHE_DIR", str(tmp_path))
    states = []
    for cfg in (
        _config(),
        _config(learner={"local_lr": 0.001, "local_steps": 5}, model={"trainable": "last"}),
    ):
        for cached in (tmp_path / "pretrained").glob("*.safetensors"):
            cached.unlink()  # train each time: what is compared is the training, not the cache
        val = components.load_validation(config=cfg)
        model = initial_model(config=cfg, input_shape=val.input_shape, num_classes=None)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
