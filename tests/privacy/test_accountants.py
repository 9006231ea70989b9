"""Stateful accountants: grouping, agreement with Opacus / dp_accounting, JSON state, distributed events."""

from __future__ import annotations

import json
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from opacus.accountants import PRVAccountant as OpacusPRV
from opacus.accountants import RDPAccountant as OpacusRDP

from privacy.accountants import (
    DistributedDPAccountant,
    DistributedEvent,
    PLDAccountant,
    PRVAccountant,
    RDPAccountant,
    accountant_from_json,
    accountant_from_state,
    create_accountant,
)
from privacy.analysis import OPACUS_RDP_ORDERS, poisson_subsampled_gaussian_rdp, rdp_to_epsilon
from privacy.errors import AccountantStateError, InvalidPrivacyConfigError

DELTA = 1e-5
A = (1.0, 0.01)
B = (1.3, 0.02)


def _alternate(acc, n: int) -> None:
    for i in range(n):
        sigma, q = A if i % 2 == 0 else B
        acc.step(noise_multiplier=sigma, sample_rate=q)


def test_rdp_grouped_equals_opacus_ungrouped_small_case() -> None:
    ours = RDPAccountant(orders=OPACUS_RDP_ORDERS)
    theirs = OpacusRDP()
    _alternate(ours, 40)
    _alternate(theirs, 40)
    assert len(theirs.history) == 40  # Opacus merges only consecutive identical steps
    assert ours.history == [(A[0], A[1], 20), (B[0], B[1], 20)]
    assert ours.get_epsilon(delta=DELTA) == pytest.approx(theirs.get_epsilon(delta=DELTA), rel=1e-10)


def test_rdp_1000_alternating_steps_match_per_step_composition() -> None:
    acc = RDPAccountant()
    _alternate(acc, 1000)
    assert len(acc) == 1000 and len(acc.history) == 2
    orders = acc.orders
    curve_a = poisson_subsampled_gaussian_rdp(noise_multiplier=A[0], sample_rate=A[1], orders=orders)
    curve_b = poisson_subsampled_gaussian_rdp(noise_multiplier=B[0], sample_rate=B[1], orders=orders)
    total = np.zeros_like(orders)
    for i in range(1000):  # ungrouped: one RDP addition per step, in order
        total = total + (curve_a if i % 2 == 0 else curve_b)
    expected, _ = rdp_to_epsilon(orders=orders, rdp=total, delta=DELTA)
    assert acc.get_epsilon(delta=DELTA) == pytest.approx(expected, rel=1e-10)


def test_prv_grouped_equals_opacus_ungrouped_within_error() -> None:
    ours = PRVAccountant(eps_error=0.01)
    theirs = OpacusPRV()
    _alternate(ours, 16)
    _alternate(theirs, 16)
    assert len(ours.history) == 2 and len(theirs.history) == 16
    assert abs(ours.get_epsilon(delta=DELTA) - theirs.get_epsilon(DELTA, eps_error=0.01)) <= 0.02


def test_pld_grouped_equals_dp_accounting_ungrouped() -> None:
    interval = 1e-2  # coarse grid keeps the ungrouped reference fast
    ours = PLDAccountant(value_discretization_interval=interval)
    theirs = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
    for i in range(12):
        sigma, q = A if i % 2 == 0 else B
        ours.step(noise_multiplier=sigma, sample_rate=q)
        theirs.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)))
    assert ours.get_epsilon(delta=DELTA) == pytest.approx(theirs.get_epsilon(DELTA), abs=5e-3)


@pytest.mark.parametrize(
    "cls,params",
    [
        (RDPAccountant, {}),
        (PRVAccountant, {"eps_error": 0.05}),
        (PLDAccountant, {"value_discretization_interval": 1e-3}),
    ],
)
def test_json_round_trip(cls, params) -> None:
    acc = cls(**params)
    acc.step(noise_multiplier=1.1, sample_rate=0.05, num_steps=30)
    acc.step(noise_multiplier=0.9, sample_rate=0.05, num_steps=10)
    text = acc.to_json()
    state = json.loads(text)
    assert (
        state["format"] == "secfed.privacy.accountant" and state["version"] == 1 and state["kind"] == cls.kind
    )
    back = cls.from_json(text=text)
    assert back.history == acc.history
    assert back.get_epsilon(delta=DELTA) == acc.get_epsilon(delta=DELTA)
    generic = accountant_from_json(text=text)
    assert type(generic) is cls
    other = cls()
    other.load_state_dict(state=acc.state_dict())
    assert other.state_dict() == acc.state_dict()
    assert other.history == acc.history


def test_state_validation_errors() -> None:
    acc = RDPAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.1, num_steps=3)
    state = acc.state_dict()
    with pytest.raises(AccountantStateError):
        PRVAccountant.from_json(text=acc.to_json())  # other kind
    with pytest.raises(AccountantStateError):
        RDPAccountant.from_json(text="{not json")
    with pytest.raises(AccountantStateError):
        RDPAccountant.from_json(text=json.dumps({**state, "version": 99}))
    with pytest.raises(AccountantStateError):
        RDPAccountant.from_json(text=json.dumps({**state, "history": [[1.0, 0.1, -3]]}))
    with pytest.raises(AccountantStateError):
        RDPAccountant.from_json(text=json.dumps({**state, "history": [[1.0, 2.0, 3]]}))
    with pytest.raises(AccountantStateError):
        RDPAccountant.from_json(text=json.dumps({**state, "params": {"orders": [0.5]}}))
    with pytest.raises(AccountantStateError):
        accountant_from_state(state={"kind": "moments"})
    # a failed load leaves the accountant untouched
    with pytest.raises(AccountantStateError):
        acc.load_state_dict(state={**state, "history": [[1.0, 0.1, 2], [1.0, 0.1, "x"]]})
    assert acc.history == [(1.0, 0.1, 3)]


def test_step_validation_and_noop() -> None:
    acc = RDPAccountant()
    for bad in (
        dict(noise_multiplier=-1.0, sample_rate=0.1),
        dict(noise_multiplier=1.0, sample_rate=1.1),
        dict(noise_multiplier=math.nan, sample_rate=0.1),
    ):
        with pytest.raises(InvalidPrivacyConfigError):
            acc.step(**bad)
    with pytest.raises(InvalidPrivacyConfigError):
        acc.step(noise_multiplier=1.0, sample_rate=0.1, num_steps=-1)
    with pytest.raises(InvalidPrivacyConfigError):
        acc.step(noise_multiplier=1.0, sample_rate=0.1, num_steps=True)
    acc.step(noise_multiplier=1.0, sample_rate=0.1, num_steps=0)
    assert acc.history == [] and acc.get_epsilon(delta=DELTA) == 0.0
    with pytest.raises(InvalidPrivacyConfigError):
        acc.get_epsilon(delta=1.0)
    with pytest.raises(InvalidPrivacyConfigError):
        create_accountant(kind="gdp")


def test_projected_epsilon_does_not_mutate() -> None:
    acc = RDPAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.01, num_steps=100)
    before = acc.get_epsilon(delta=DELTA)
    projected = acc.projected_epsilon(delta=DELTA, noise_multiplier=1.0, sample_rate=0.01, num_steps=100)
    assert acc.get_epsilon(delta=DELTA) == before
    acc.step(noise_multiplier=1.0, sample_rate=0.01, num_steps=100)
    assert acc.get_epsilon(delta=DELTA) == pytest.approx(projected)
    assert projected > before


def test_non_private_step_gives_infinite_epsilon() -> None:
    for cls in (RDPAccountant, PRVAccountant, PLDAccountant):
        acc = cls()
        acc.step(noise_multiplier=1.0, sample_rate=0.01, num_steps=10)
        acc.step(noise_multiplier=0.0, sample_rate=0.01)
        assert math.isinf(acc.get_epsilon(delta=DELTA))


def _event(n: int, q: float = 1.0, mechanism: str = "ddg") -> DistributedEvent:
    return DistributedEvent(
        mechanism=mechanism,
        l2_sensitivity=300.0,
        l1_sensitivity=300.0 * 32,
        dim=1024,
        local_stddev=40.0,
        num_survivors=n,
        sample_rate=q,
    )


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_distributed_accountant_survivors_and_grouping(mechanism: str) -> None:
    full, dropped = DistributedDPAccountant(), DistributedDPAccountant()
    for r in range(100):
        full.step(event=_event(50, mechanism=mechanism))
        dropped.step(event=_event(50 if r % 2 else 30, mechanism=mechanism))
    assert len(full.history) == 1 and len(dropped.history) == 2 and len(dropped) == 100
    assert dropped.get_epsilon(delta=DELTA) > full.get_epsilon(delta=DELTA)
    # grouped equals per-round sum
    total = sum(
        _event(50 if r % 2 else 30, mechanism=mechanism).rdp(orders=np.array(full._orders))
        for r in range(100)
    )
    expected, _ = rdp_to_epsilon(orders=full._orders, rdp=total, delta=DELTA)
    assert dropped.get_epsilon(delta=DELTA) == pytest.approx(expected, rel=1e-10)
    sampled = DistributedDPAccountant()
    sampled.step(event=_event(50, q=0.1, mechanism=mechanism), num_rounds=100)
    assert sampled.get_epsilon(delta=DELTA) < full.get_epsilon(delta=DELTA)


def test_distributed_accountant_json_round_trip_and_errors() -> None:
    acc = DistributedDPAccountant()
    acc.step(event=_event(40, q=0.2), num_rounds=7)
    acc.step(event=_event(35, q=0.2, mechanism="skellam"), num_rounds=2)
    back = DistributedDPAccountant.from_json(text=acc.to_json())
    assert back.history == acc.history
    assert back.get_epsilon(delta=DELTA) == acc.get_epsilon(delta=DELTA)
    assert type(accountant_from_json(text=acc.to_json())) is DistributedDPAccountant
    state = acc.state_dict()
    broken = json.loads(json.dumps(state))
    broken["history"][0]["event"]["num_survivors"] = 0
    with pytest.raises(AccountantStateError):
        DistributedDPAccountant.from_json(text=json.dumps(broken))
    with pytest.raises(InvalidPrivacyConfigError):
        DistributedEvent(
            mechanism="ddg", l2_sensitivity=1.0, l1_sensitivity=1.0, dim=4, local_stddev=0.2, num_survivors=3
        )
    with pytest.raises(InvalidPrivacyConfigError):
        acc.step(event=(1, 2, 3))  # type: ignore[arg-type]
    before = acc.get_epsilon(delta=DELTA)
    assert acc.projected_epsilon(delta=DELTA, event=_event(10, q=0.2)) > before
    assert acc.get_epsilon(delta=DELTA) == before
