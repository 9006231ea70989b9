"""The adjacency relations as one enum (issue 20): the serialised sentences stay what ledgers and
reports already hold, and the server refuses a site report whose adjacency is not one of them or
does not fit the run's mode (it used to write any non-empty string into its ledger)."""

from __future__ import annotations

import json

import pytest

from privacy.adjacency import Adjacency
from privacy.errors import PrivacyError
from secfed.dp.reports import parse_site_report
from secfed.errors import MessageError


def test_the_serialised_sentences_are_unchanged() -> None:
    assert Adjacency.RECORD.value == "add/remove one record"
    assert Adjacency.CLIENT.value == "add/remove one client's entire dataset"
    assert Adjacency.DISTRIBUTED.value == (
        "zero-out: one client's update replaced by zero (its noise share kept)"
    )
    for member in Adjacency:
        assert Adjacency.parse(member.value) is member
        assert str(member) == f"{member}" == member.value
        assert json.loads(json.dumps({"a": member.value}))["a"] == member.value
    with pytest.raises(PrivacyError, match="unknown adjacency"):
        Adjacency.parse("add/remove one sentence")


def _report(**changes: object) -> dict[str, object]:
    report: dict[str, object] = {
        "mode": "record",
        "unit": "record",
        "adjacency": Adjacency.RECORD.value,
        "mechanism": "episodic-gaussian",
        "noise_multiplier": 1.0,
        "sample_rate": 0.1,
        "steps": 2,
    }
    report.update(changes)
    return report


def test_the_server_keeps_a_well_formed_report() -> None:
    assert parse_site_report(sid=0, report=_report(), mode="record").adjacency == Adjacency.RECORD.value


@pytest.mark.parametrize(
    "adjacency",
    ["replace one record", "", 3, Adjacency.CLIENT.value, Adjacency.DISTRIBUTED.value],
)
def test_the_server_refuses_an_adjacency_that_is_unknown_or_does_not_fit(adjacency: object) -> None:
    with pytest.raises(MessageError, match="adjacency"):
        parse_site_report(sid=0, report=_report(adjacency=adjacency), mode="record")
