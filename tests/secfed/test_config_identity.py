"""The configuration's identity and public names survive a reorganisation of :mod:`secfed.config`.

``config_hash`` names a run (reports, sweeps, resumption): the same configuration must hash to the
same value whatever module the sections live in. The pinned values were computed on the
single-module ``secfed/config.py`` (before it became a package). A new key changes both hashes by
design (the hash covers every key, defaults included): re-pin them in the commit that adds the key.
"""

from __future__ import annotations

import hashlib

import pytest

import secfed.config as config_module
from secfed.config import ExperimentConfig, config_from_dict, config_hash, config_to_toml
from secfed.errors import ConfigError

PINNED = {
    "experiment": {"name": "pin", "seed": 7, "rounds": 3},
    "data": {
        "dataset": "omniglot",
        "root": "embedded",
        "val_alphabets": ["Latin"],
        "public_alphabets": ["Greek"],
    },
    "partition": {"num_sites": 5},
    "task": {"n_way": 5, "q_query": 1},
    "model": {"norm": "group", "pretrain_steps": 10, "trainable": "last"},
    "learner": {"name": "protonet", "local_steps": 1, "local_optimizer": "sgd"},
    "federation": {"aggregation": "secagg"},
    "privacy": {"mode": "record", "noise_multiplier": 1.1, "noise_sharing": True, "colluding_sites": 1},
}


def test_config_hash_is_pinned() -> None:
    cfg = config_from_dict(PINNED)
    assert config_hash(cfg) == "a86c50c2fa58f3fa4c1c7552223e362a0243f663c1cff0551ec98174030706f6"
    assert config_hash(ExperimentConfig()) == (
        "422d0653b1f6c2637b5deac4fe69d73d3a51d998ea3a5e6e3f4febfd3fcc254c"
    )


def test_resolved_toml_is_pinned() -> None:
    text = config_to_toml(config_from_dict(PINNED))
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "bc8ce1384a4e47cba882535146bc3e54377c33397a77be07b150d5800d8a0e03"
    )


@pytest.mark.parametrize("name", config_module.__all__)
def test_every_public_name_imports_from_the_package(name: str) -> None:
    assert getattr(config_module, name) is not None


def test_one_rule_of_each_kind_keeps_its_message() -> None:
    # a section's own range, a choice, and a cross-section rule: the exact old messages
    cases = {
        "federation.dropout_rate = 1.5 is invalid: must be in [0, 1)": {"federation": {"dropout_rate": 1.5}},
        "privacy.mode = 'x' is not allowed; choose one of: none, record, client, distributed": {
            "privacy": {"mode": "x"}
        },
        "model.norm = 'batch' is invalid: BatchNorm couples records and is refused under DP; use 'group'": {
            "privacy": {"mode": "record"}
        },
    }
    for message, data in cases.items():
        with pytest.raises(ConfigError) as info:
            config_from_dict(data)
        assert str(info.value) == message
