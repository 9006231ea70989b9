"""The adjacency relations as one enum (issue 20): the serialised sentences stay what ledgers and
reports already hold, and the server refuses a site report whose adjacency is not one of them or
does not fit the run's mode (it used to write any non-empty string into its ledger)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

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


TESTS = Path(__file__).resolve().parents[2]


def _fixture_sentences() -> set[str]:
    """Every adjacency written in the golden ledgers/summaries and the report fixtures' run dirs."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "adjacency":
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(
        json.loads(
            (TESTS / "secfed" / "dp" / "data" / "server_modes_golden.json").read_text(encoding="utf-8")
        )
    )
    tree = ast.parse((TESTS / "evaluations" / "eval_rundirs.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        pairs: list[tuple[Any, Any]] = []
        if isinstance(node, ast.Dict):
            pairs = [(getattr(k, "value", None), v) for k, v in zip(node.keys, node.values, strict=True)]
        elif isinstance(node, ast.Call):
            pairs = [(kw.arg, kw.value) for kw in node.keywords]
        found.update(v.value for k, v in pairs if k == "adjacency" and isinstance(v, ast.Constant))
    return found


def test_every_sentence_in_the_fixtures_round_trips() -> None:
    sentences = _fixture_sentences()
    assert {m.value for m in Adjacency} <= sentences  # the fixtures hold all three relations
    for text in sentences:
        member = Adjacency.parse(text)
        assert member.value == text and str(member) == text
        # written as before: the member serialises to the same JSON bytes as the sentence
        assert json.dumps({"adjacency": member}, sort_keys=True) == json.dumps(
            {"adjacency": text}, sort_keys=True
        )


@pytest.mark.parametrize(
    "text", ["add/remove one sentence", "zero-out", "ADD/REMOVE ONE RECORD", "", None, 3]
)
def test_an_unknown_adjacency_is_a_typed_error_naming_it(text: object) -> None:
    with pytest.raises(PrivacyError, match=re.escape(f"unknown adjacency {text!r}")):
        Adjacency.parse(text)


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
