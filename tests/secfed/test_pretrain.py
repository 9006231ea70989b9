"""Public pretraining (``secfed/pretrain.py``): a ProtoNet embedding always pretrains with Adam.

A ProtoNet run with local SGD (one plain step a round, as noise sharing under SecAgg needs) used to
pretrain its initial model with SGD at ``model.pretrain_lr``, a much weaker start than the Adam
pretraining of the ProtoNet examples (89.9 against 92.3 % on the Latin validation alphabet,
docs/private_training.md). The initial model must not depend on the run's own optimiser.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from secfed_config_dicts import omniglot_greek_public

from secfed.config import ExperimentConfig, config_from_dict

REPO = Path(__file__).resolve().parents[2]


def _config(*, optimizer: str, local_lr: float) -> ExperimentConfig:
    return config_from_dict(
        {
            "data": omniglot_greek_public(),
            "model": {"norm": "group", "hidden": 16, "pretrain_steps": 3, "pretrain_n_way": 5},
            "learner": {"name": "protonet", "local_optimizer": optimizer, "local_lr": local_lr},
        },
        base_dir=REPO,
    )


def test_a_protonet_run_pretrains_with_adam_whatever_its_own_optimiser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SGD run's initial model equals the Adam run's, bit for bit, and shares its cache entry;
    both moved from the random initialisation (the old code pretrained the SGD run with SGD)."""
    from secfed import components
    from secfed.experiment import initial_model
    from secfed.pretrain import pretrain_cache_path

    monkeypatch.setenv("SECFED_CACHE_DIR", str(tmp_path))
    adam = _config(optimizer="adam", local_lr=1e-3)
    sgd = _config(optimizer="sgd", local_lr=1e-3)
    assert pretrain_cache_path(config=sgd) == pretrain_cache_path(config=adam)
    val = components.load_validation(config=adam)
    states = []
    for cfg in (sgd, adam):
        for cached in (tmp_path / "pretrained").glob("*.safetensors"):
            cached.unlink()
        model = initial_model(config=cfg, input_shape=val.input_shape, num_classes=5)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for k, v in states[1].items():
        assert torch.equal(states[0][k], v), k
    reference = initial_model(
        config=dataclasses.replace(adam, model=dataclasses.replace(adam.model, pretrain_steps=0)),
        input_shape=val.input_shape,
        num_classes=5,
    )
    assert any(not torch.equal(v, reference.state_dict()[k]) for k, v in states[0].items())
    # the SGD run's own learner is unchanged: only its pretraining is Adam
    assert sgd.learner.local_optimizer == "sgd"
