"""The run's shape (issue 20): what DP planning needs of the data and the model is a typed value
(:class:`secfed.builders.RunShape`) that ``Experiment.run`` builds from what it holds and hands
down, instead of the DP layer importing the assembly layer to reload the data and rebuild the
model."""

from __future__ import annotations

import pytest
import torch
from runtime_cfg import REPO, tiny_config_dict

from secfed import builders
from secfed.builders import RunShape, run_shape
from secfed.config import config_from_dict
from secfed.dp import planning as dp_planning
from secfed.dp.distributed import model_dim
from secfed.dp.server import ServerPrivacy, calibrated_config, planned_epsilon
from secfed.errors import ConfigError
from secfed.federation.state import state_spec


def _cfg(**privacy: object):
    return config_from_dict(
        tiny_config_dict(privacy={"mode": "record", "noise_multiplier": 1.0, **privacy}), base_dir=REPO
    )


def test_run_shape_is_the_layout_of_the_model_and_the_training_classes() -> None:
    cfg = _cfg()
    train, test = builders.load_splits(config=cfg)
    model = builders.build_model(
        config=cfg,
        input_shape=test.input_shape,
        num_classes=builders.model_num_classes(config=cfg, train=train),
    )
    want = RunShape.of(model=model, train=train)
    assert want.dim == sum(e.size for e in state_spec(model)) > 0
    assert want.train_classes == train.num_classes
    before = torch.random.get_rng_state()
    assert run_shape(config=cfg) == want
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's torch stream is untouched


@pytest.mark.parametrize("bad", [0, -3, True, 2.0, "8"])
def test_run_shape_refuses_what_is_not_a_positive_count(bad: object) -> None:
    with pytest.raises(ConfigError, match="RunShape.dim"):
        RunShape(dim=bad, train_classes=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="RunShape.train_classes"):
        RunShape(dim=8, train_classes=bad)  # type: ignore[arg-type]


def test_planning_with_the_shape_a_run_holds_reloads_no_data(monkeypatch, tmp_path) -> None:
    """Calibration, planned epsilon and the server's planning read the shape they are handed; the
    data is not loaded again (the old dp/ code reloaded it through secfed.components)."""
    cfg = _cfg(target_epsilon=3.0)
    shape = run_shape(config=cfg)
    want_cfg = calibrated_config(config=cfg)
    want_plan = planned_epsilon(config=want_cfg)

    def no_data(**_: object) -> None:
        raise AssertionError("the data was loaded again")

    monkeypatch.setattr(builders, "load_splits", no_data)
    monkeypatch.setattr(builders, "_SHAPE_CACHE", {})
    monkeypatch.setattr(dp_planning, "_CLASS_STEPS_CACHE", {})
    with pytest.raises(AssertionError, match="loaded again"):
        calibrated_config(config=cfg)  # without the shape the planner would have to load the data
    got_cfg = calibrated_config(config=cfg, shape=shape)
    assert got_cfg.privacy.noise_multiplier == want_cfg.privacy.noise_multiplier
    assert planned_epsilon(config=got_cfg, shape=shape) == want_plan
    assert model_dim(config=cfg, shape=shape) == shape.dim
    ServerPrivacy(config=got_cfg, run_dir=tmp_path / "run", key_dir=tmp_path / "keys", shape=shape)
