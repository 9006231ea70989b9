"""The secure-aggregation settings of a run are one typed value (:class:`SecAggOptions`, issue 20).

Old code: ``protocol_options`` returned ``dict[str, object]`` that reached the aggregators and the
protocol's parameter resolution through ``**`` behind ``# type: ignore``.
"""

from __future__ import annotations

import dataclasses

import pytest

from protocols.params import round_protocol_config
from secfed.config import SecAggOptions, config_from_dict, protocol_options, threshold_floor
from secfed.errors import ConfigError
from secfed.federation.secure import make_client_aggregator, make_server_aggregator


def _cfg(aggregation: str = "secagg+", **secagg: object):
    return config_from_dict(
        {
            "partition": {"num_sites": 6},
            "federation": {"aggregation": aggregation, "dropout_rate": 0.1, "straggler_rate": 0.05},
            "secagg": dict(secagg),
        }
    )


def test_options_are_a_typed_value_read_from_the_sections() -> None:
    opts = protocol_options(_cfg("secagg", t=4, clip=2.0))
    assert isinstance(opts, SecAggOptions)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.k = 3  # type: ignore[misc]
    assert (opts.mode, opts.k, opts.t, opts.clip) == ("secagg", None, 4, 2.0)
    assert opts.dropout_rate == pytest.approx(0.15)  # dropouts plus stragglers
    assert opts.aggregator_kwargs() == dataclasses.asdict(opts)


def test_round_config_is_the_protocol_s_own_resolution() -> None:
    opts = protocol_options(_cfg())
    want = round_protocol_config(
        mode="secagg+",
        n=6,
        k=None,
        t=None,
        bits=None,
        active=False,
        corrupt_fraction=0.05,
        dropout_rate=0.1 + 0.05,
    ).resolve()
    assert opts.round_config(n=6).resolve() == want
    assert threshold_floor(config=_cfg()) >= 2


def test_the_aggregators_are_built_from_the_value() -> None:
    cfg = _cfg("secagg", t=4)
    server, client = make_server_aggregator(config=cfg), make_client_aggregator(config=cfg, site_id=0)
    for agg in (server, client):
        assert agg.mode == "secagg" and agg.options.t == 4  # type: ignore[attr-defined]
        assert agg.options == protocol_options(cfg)  # the value handed down, held as it is


def test_plain_aggregation_has_no_protocol_options() -> None:
    with pytest.raises(ConfigError, match="federation.aggregation = 'plain'"):
        protocol_options(config_from_dict({}))
