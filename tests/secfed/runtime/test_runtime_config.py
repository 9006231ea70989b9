"""Configuration loading and validation: errors name the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from secfed.config import config_from_dict, config_to_toml, load_config
from secfed.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def test_examples_validate() -> None:
    for path in sorted((REPO / "examples").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.experiment.rounds >= 1, path


def test_unknown_key_names_key_and_allowed(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[learner]\nnmae = 'maml'\n")
    with pytest.raises(ConfigError, match=r"learner\.nmae.*allowed keys.*name"):
        load_config(p)


def test_unknown_section() -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[lerner\]"):
        config_from_dict({"lerner": {}})


def test_bad_choice_lists_allowed() -> None:
    with pytest.raises(
        ConfigError,
        match=r"learner\.name = 'mamll'.*protonet, matching, siamese, maml, fomaml, reptile, fedavg",
    ):
        config_from_dict({"learner": {"name": "mamll"}})


def test_wrong_type() -> None:
    with pytest.raises(ConfigError, match=r"experiment\.rounds: expected an integer"):
        config_from_dict({"experiment": {"rounds": "ten"}})
    with pytest.raises(ConfigError, match=r"data\.rotations: expected true or false"):
        config_from_dict({"data": {"rotations": 1}})


def test_bad_range_and_cross_field() -> None:
    with pytest.raises(ConfigError, match=r"federation\.dropout_rate"):
        config_from_dict({"federation": {"dropout_rate": 1.5}})
    with pytest.raises(ConfigError, match=r"clients_per_round"):
        config_from_dict({"partition": {"num_sites": 2}, "federation": {"clients_per_round": 3}})
    # secure aggregation over one or two sampled sites per round: refused, naming the key
    with pytest.raises(ConfigError, match=r"federation\.clients_per_round.*>= 3 sites per round"):
        config_from_dict(
            {"partition": {"num_sites": 5}, "federation": {"clients_per_round": 1, "aggregation": "secagg"}}
        )
    ok = config_from_dict(
        {"partition": {"num_sites": 5}, "federation": {"clients_per_round": 3, "aggregation": "secagg+"}}
    )
    assert ok.federation.clients_per_round == 3
    # the protocol's (k, t) are resolved for a full round when the configuration is read, so a bad
    # setting is refused before any work instead of aborting every round
    five = {"partition": {"num_sites": 5}, "federation": {"aggregation": "secagg+"}}
    with pytest.raises(ConfigError, match=r"5 sites per round and secagg\.k = 3.*must be even"):
        config_from_dict({**five, "secagg": {"k": 3}})
    with pytest.raises(ConfigError, match=r"secagg\.t = 1"):
        config_from_dict({**five, "secagg": {"t": 1}})
    with pytest.raises(ConfigError, match=r"'secagg' with 4 sites per round"):
        config_from_dict(
            {
                "partition": {"num_sites": 4},
                "federation": {"aggregation": "secagg", "dropout_rate": 0.5},
                "secagg": {"corrupt_fraction": 0.4},
            }
        )
    assert config_from_dict({**five, "secagg": {"k": 4, "t": 3, "corrupt_fraction": 0.0}}).secagg.k == 4
    with pytest.raises(ConfigError, match=r"BatchNorm"):
        config_from_dict({"privacy": {"mode": "record"}, "model": {"norm": "batch"}})
    with pytest.raises(ConfigError, match=r"data\.root"):
        config_from_dict({"data": {"dataset": "medmnist"}})  # omniglot without a root: embedded


def test_overrides_and_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[experiment]\nrounds = 4\n")
    cfg = load_config(
        p, overrides=["experiment.rounds=7", "learner.name=maml", "data.test_classes=[1, 2, 3]"]
    )
    assert cfg.experiment.rounds == 7 and cfg.learner.name == "maml" and cfg.data.test_classes == [1, 2, 3]
    (tmp_path / "resolved.toml").write_text(config_to_toml(cfg))
    again = load_config(tmp_path / "resolved.toml")
    assert again == cfg
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(p, overrides=["rounds=3"])


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_test_rotations_only_for_datasets_with_rotations() -> None:
    assert config_from_dict({"data": {"test_rotations": True}}).data.test_rotations
    with pytest.raises(ConfigError, match=r"data\.test_rotations.*digits and omniglot"):
        config_from_dict({"data": {"dataset": "medmnist", "root": "x.npz", "test_rotations": True}})


def test_zero_head_init_rules() -> None:
    """head_init = 'zero': only for linear-head meta-learners; lets the training way differ."""
    from secfed.components import model_num_classes

    with pytest.raises(ConfigError, match=r"learner\.head_init = 'zeros'.*learned, zero"):
        config_from_dict({"learner": {"name": "maml", "head_init": "zeros"}})
    with pytest.raises(ConfigError, match=r"learner\.head_init.*maml, fomaml and reptile"):
        config_from_dict({"learner": {"name": "protonet", "head_init": "zero"}})
    with pytest.raises(ConfigError, match=r"learner\.test_inner_steps"):
        config_from_dict({"learner": {"name": "maml", "head_init": "zero", "test_inner_steps": 0}})
    with pytest.raises(ConfigError, match=r"learner\.inner_steps.*reptile"):
        config_from_dict({"learner": {"name": "reptile", "head_init": "zero", "inner_steps": 1}})
    wide = {"task": {"n_way": 20, "test_n_way": 5}}
    with pytest.raises(ConfigError, match=r"task\.n_way \(20\) must equal task\.test_n_way \(5\).*head_init"):
        model_num_classes(config=config_from_dict({**wide, "learner": {"name": "maml"}}))
    cfg = config_from_dict({**wide, "learner": {"name": "maml", "head_init": "zero"}})
    assert model_num_classes(config=cfg) == 20
