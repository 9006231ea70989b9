"""The typed privacy parameters (secfed/dp/params.py): built once, validated, handed down.

A bad field raises a typed error (:class:`DPParamsError`, a ConfigError) naming the field; the mode
strategies and the noise-sharing and distributed-DP helpers take the value, never the configuration.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest

from secfed.config import ExperimentConfig, config_from_dict
from secfed.dp import distributed, sharing
from secfed.dp.params import DistributedParams, DPParams, DPParamsError, NoiseSharingParams, dp_params
from secfed.errors import ConfigError
from secfed.federation.server import sampled_sites

REPO = Path(__file__).resolve().parents[3]
SECAGG = {"aggregation": "secagg"}


def _config(sections: dict[str, dict[str, Any]]) -> ExperimentConfig:
    base: dict[str, Any] = {
        "experiment": {"rounds": 4, "eval_every": 0, "eval_episodes": 5, "final_eval_episodes": 5, "seed": 3},
        "data": {"dataset": "digits", "rotations": True},
        "partition": {"scheme": "class_disjoint", "num_sites": 4},
        "task": {"n_way": 3, "k_shot": 1, "q_query": 3, "test_n_way": 3, "test_q_query": 3},
        "model": {"arch": "mlp", "hidden": 16, "norm": "none", "layers": 1},
        "learner": {"name": "protonet", "local_steps": 1},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return config_from_dict(base, base_dir=REPO)


RECORD: dict[str, dict[str, Any]] = {
    "privacy": {"mode": "record", "noise_multiplier": 1.3, "epsilon_budget": 5.0}
}
SHARING: dict[str, dict[str, Any]] = {
    "privacy": {"mode": "record", "noise_sharing": True, "colluding_sites": 1},
    "federation": {**SECAGG, "dropout_rate": 0.1},
    "partition": {"num_sites": 6},
    "learner": {"local_steps": 1, "local_optimizer": "sgd"},
}
CLIENT: dict[str, dict[str, Any]] = {
    "privacy": {"mode": "client"},
    "federation": {"sampling": "poisson", "sample_rate": 0.5},
}
DISTRIBUTED: dict[str, dict[str, Any]] = {
    "privacy": {"mode": "distributed", "mechanism": "ddg", "bits": 16},
    "federation": SECAGG,
}


def test_the_value_is_read_once_from_the_configuration_and_frozen() -> None:
    cfg = _config(RECORD)
    params = dp_params(config=cfg)
    assert (params.mode, params.unit, params.noise_multiplier) == ("record", "record", 1.3)
    assert params.delta == cfg.privacy.delta and params.accountant == cfg.privacy.accountant
    assert params.epsilon_budget == 5.0 and params.target_epsilon is None
    assert params.noise_sharing is None and params.distributed is None
    assert [params.sampled_sites(round_idx=r) for r in range(1, 5)] == [
        sampled_sites(config=cfg, round_idx=r) for r in range(1, 5)
    ]
    with pytest.raises(ConfigError, match="rounds 1 .. 4"):
        params.sampled_sites(round_idx=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.delta = 0.5  # type: ignore[misc]
    assert dp_params(config=cfg) == params  # a pure function of the configuration


def test_each_mode_gets_its_own_parts() -> None:
    shared = dp_params(config=_config(SHARING))
    assert isinstance(shared.noise_sharing, NoiseSharingParams)
    assert shared.noise_sharing.colluding_sites == 1 and shared.noise_sharing.sites_per_round == 6
    assert sharing.threshold_floor(params=shared) == shared.noise_sharing.threshold_floor > 1
    client = dp_params(config=_config(CLIENT))
    assert client.unit == "client" and client.client_sample_rate == 0.5 and client.distributed is None
    dist = dp_params(config=_config(DISTRIBUTED))
    assert isinstance(dist.distributed, DistributedParams)
    assert (dist.distributed.mechanism, dist.distributed.bits, dist.distributed.rotation_seed) == (
        "ddg",
        16,
        3,
    )
    with pytest.raises(ConfigError, match="ServerPrivacy needs record, client or distributed"):
        dp_params(config=_config({"privacy": {"mode": "none"}}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "none"),
        ("unit", "client"),
        ("noise_multiplier", -1.0),
        ("noise_multiplier", float("nan")),
        ("max_grad_norm", 0.0),
        ("sample_rate", 1.5),
        ("delta", 1.0),
        ("accountant", "distributed-rdp"),
        ("epsilon_budget", 0.0),
        ("num_sites", True),
        ("client_sample_rate", 0.0),
        ("worst_case_survivors", 9),
        ("steps_per_round", -1),
        ("record_mechanism", "dp-fedavg"),
        ("schedule", ((0, 7),)),
        (
            "distributed",
            DistributedParams(
                mechanism="ddg", bits=16, expected_participants=4, max_participants=4, rotation_seed=0
            ),
        ),
    ],
)
def test_a_bad_field_gives_a_typed_error_naming_it(field: str, value: Any) -> None:
    params = dp_params(config=_config(RECORD))
    with pytest.raises(DPParamsError) as info:
        dataclasses.replace(params, **{field: value})
    assert info.value.field == field
    assert f"DPParams.{field} = " in str(info.value)
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    ("part", "field", "value"),
    [
        ("noise_sharing", "colluding_sites", 5),  # not below the threshold floor
        ("noise_sharing", "threshold_floor", 7),  # above the 6 sites a round can hold
        ("noise_sharing", "update_radius", float("inf")),
        ("distributed", "bits", 4),
        ("distributed", "mechanism", "gaussian"),
        ("distributed", "expected_participants", 0),
    ],
)
def test_a_bad_field_of_a_part_is_named_with_its_part(part: str, field: str, value: Any) -> None:
    params = dp_params(config=_config(SHARING if part == "noise_sharing" else DISTRIBUTED))
    with pytest.raises(DPParamsError) as info:
        dataclasses.replace(getattr(params, part), **{field: value})
    assert info.value.field == f"{part}.{field}"
    assert f"DPParams.{part}.{field} = {value!r}" in str(info.value)


def test_the_helpers_and_the_strategies_never_see_the_configuration() -> None:
    for module in (sharing, distributed):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) and obj.__module__ == module.__name__ and name != "model_dim":
                assert "config" not in inspect.signature(obj).parameters, f"{module.__name__}.{name}"
    for path in sorted((REPO / "secfed" / "dp" / "modes").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert "ExperimentConfig" not in imported, path.name
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            assert "config" not in {a.arg for a in fn.args.kwonlyargs}, f"{path.name}: {fn.name}"


def test_dpparams_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        DPParams("record")  # type: ignore[call-arg, misc]
