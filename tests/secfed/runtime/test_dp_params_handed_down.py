"""``Experiment.run`` reads the privacy parameters once (issue 20): the :class:`DPParams` it builds
from the calibrated configuration is the value the server's privacy, its planning and the
server's aggregator use. Old code: each of them called ``dp_params(config=...)`` again."""

from __future__ import annotations

from typing import Any

import pytest
from runtime_cfg import REPO, tiny_config_dict

import secfed.dp
from secfed import components
from secfed.config import config_from_dict
from secfed.dp import server as dp_server
from secfed.dp.params import DPParams, dp_params, given_or_built
from secfed.errors import ConfigError
from secfed.experiment import Experiment


def _sharing() -> Any:
    """Record-level DP with noise sharing under SecAgg: the server plans the target's epsilon and
    its aggregator decodes with the noise-sharing encoder, both from the run's parameters."""
    return config_from_dict(
        tiny_config_dict(
            experiment={"rounds": 1, "eval_every": 0, "final_eval_episodes": 5, "untrained_baseline": False},
            learner={"local_steps": 1, "local_optimizer": "sgd"},
            federation={"aggregation": "secagg"},
            privacy={"mode": "record", "noise_sharing": True, "target_epsilon": 8.0},
        ),
        base_dir=REPO,
    )


def test_one_dp_params_value_reaches_server_planning_and_aggregator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    seen: dict[str, list[Any]] = {"server": [], "planned": [], "aggregator": []}

    class Spy(dp_server.ServerPrivacy):
        def __init__(self, **kwargs: Any) -> None:
            seen["server"].append(kwargs.get("params"))
            super().__init__(**kwargs)

    planned, build = dp_server.planned_epsilon, components.build_server_aggregator

    def planned_spy(**kwargs: Any) -> Any:
        seen["planned"].append(kwargs.get("params"))
        return planned(**kwargs)

    def build_spy(**kwargs: Any) -> Any:
        seen["aggregator"].append(kwargs.get("params"))
        return build(**kwargs)

    monkeypatch.setattr(secfed.dp, "ServerPrivacy", Spy)
    monkeypatch.setattr(dp_server, "planned_epsilon", planned_spy)
    monkeypatch.setattr(components, "build_server_aggregator", build_spy)
    monkeypatch.setenv("SECFED_KEY_DIR", str(tmp_path / "keys"))
    exp = Experiment(config=_sharing())
    exp.run(out_dir=tmp_path / "run", progress=False)
    (value,) = seen["server"]
    assert isinstance(value, DPParams)
    assert seen["planned"] == [value] and seen["aggregator"] == [value]
    assert value == dp_params(config=exp.config)  # built from the calibrated configuration
    assert value.noise_multiplier != 1.0  # calibrated, not the configured default


def test_params_of_another_configuration_are_refused() -> None:
    cfg = _sharing()
    other = dp_params(config=cfg.replace(privacy=cfg.privacy.__class__(mode="client")))
    assert given_or_built(config=cfg, params=None) == dp_params(config=cfg)
    with pytest.raises(ConfigError, match="another configuration"):
        given_or_built(config=cfg, params=other)
    with pytest.raises(ConfigError, match="must be a DPParams"):
        given_or_built(config=cfg, params={"mode": "distributed"})  # type: ignore[arg-type]
