"""'Distributed DP needs secure aggregation' is written once (issue 20):
secfed.config.check_distributed_dp_aggregation. Loading refuses such a configuration, and the
aggregator builders refuse one built without validation, with the same message (the server must
never see an update whose only noise is one site's share)."""

from __future__ import annotations

import dataclasses

import pytest
from runtime_cfg import REPO, tiny_config_dict

from secfed import components
from secfed.config import check_distributed_dp_aggregation, config_from_dict
from secfed.errors import ConfigError

MESSAGE = (
    r"federation.aggregation = 'plain' is invalid: privacy.mode = 'distributed' needs secure aggregation"
)


def _distributed(aggregation: str) -> dict:
    return tiny_config_dict(
        federation={"aggregation": aggregation},
        privacy={"mode": "distributed", "mechanism": "skellam", "noise_multiplier": 1.0},
    )


def test_loading_refuses_distributed_dp_without_secure_aggregation() -> None:
    with pytest.raises(ConfigError, match=MESSAGE):
        config_from_dict(_distributed("plain"), base_dir=REPO)


def test_builders_refuse_an_unvalidated_configuration_with_the_same_message() -> None:
    good = config_from_dict(_distributed("secagg"), base_dir=REPO)
    check_distributed_dp_aggregation(config=good)
    bad = dataclasses.replace(good, federation=dataclasses.replace(good.federation, aggregation="plain"))
    with pytest.raises(ConfigError, match=MESSAGE):
        check_distributed_dp_aggregation(config=bad)
    with pytest.raises(ConfigError, match=MESSAGE):
        components.build_client_aggregator(config=bad, site_id=0)
    with pytest.raises(ConfigError, match=MESSAGE):
        components.build_server_aggregator(config=bad)
