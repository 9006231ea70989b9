"""The canary audits' shared checks, bounds and statement (attacks.audit_common)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from attacks import audit_common as common
from attacks.audit import one_run_audit
from attacks.errors import AttackConfigError
from attacks.fdp import gdp_audit, gdp_ceiling


@dataclass
class _Cfg:
    z: object = 1.0
    steps: object = 3


def test_checks_name_the_field_and_refuse_bools() -> None:
    common.check_positive_numbers(config=_Cfg(), names=("z",))
    common.check_ints(config=_Cfg(), minimums=(("steps", 1),))
    for bad in (0.0, -1.0, math.inf, True, "1"):
        with pytest.raises(AttackConfigError, match="z must be a finite number > 0"):
            common.check_positive_numbers(config=_Cfg(z=bad), names=("z",))
    for bad_int in (0, True, 2.0):
        with pytest.raises(AttackConfigError, match="steps must be an int >= 1"):
            common.check_ints(config=_Cfg(steps=bad_int), minimums=(("steps", 1),))
    with pytest.raises(AttackConfigError, match=r"sample_rate must lie in \(0, 1\]"):
        common.check_sample_rate(sample_rate=0.0)
    with pytest.raises(AttackConfigError, match="delta and significance"):
        common.check_probabilities(delta=1e-5, significance=1.0)
    with pytest.raises(AttackConfigError, match="accountant must be 'rdp', 'prv' or 'pld', got 'x'"):
        common.check_choice(name="accountant", value="x", choices=("rdp", "prv", "pld"))
    with pytest.raises(AttackConfigError, match="init must be 'worst_case' or 'random', got 'x'"):
        common.check_choice(name="init", value="x", choices=("worst_case", "random"))


def test_canary_bounds_are_the_audits_own_with_their_ceilings() -> None:
    rng = np.random.default_rng(0)
    inc = rng.random(200) < 0.5
    scores = inc * 2.0 + rng.standard_normal(200)
    b = common.canary_bounds(scores=scores, included=inc, delta=1e-5, significance=0.05)
    assert b.one_run == one_run_audit(scores=scores, included=inc, delta=1e-5)
    assert b.one_run_ceiling == one_run_audit(scores=inc.astype(float), included=inc, delta=1e-5)
    assert b.gdp == gdp_audit(scores=scores, included=inc, delta=1e-5)
    assert b.gdp_ceiling == gdp_ceiling(included=inc, delta=1e-5)
    entry = b.gdp_entry()
    assert entry["ceiling"] == b.gdp_ceiling.epsilon and entry["ceiling_mu"] == b.gdp_ceiling.mu
    assert entry["mu"] == b.gdp.mu


def test_statement_states_weak_ceilings_and_the_verdict() -> None:
    text = common.audit_statement(
        accountant_epsilon=4.0, ceilings=[("a", 3.0), ("b", 9.0)], sample="these canaries", violation=False
    )
    assert text == (
        "a: cannot detect leakage below 4.00 (the accountant's epsilon): its ceiling with these canaries "
        "is 3.00; no violation detected"
    )
    hit = common.audit_statement(
        accountant_epsilon=4.0,
        ceilings=[],
        sample="x",
        violation=True,
        findings=["f"],
        exceeded="the estimate",
    )
    assert hit == "f; VIOLATION: the estimate exceeds the accountant's epsilon"
    none = common.audit_statement(
        accountant_epsilon=math.inf, ceilings=[("a", 3.0)], sample="x", violation=False
    )
    assert none == "no DP claimed: the bounds show how much one run reveals"


def test_participation_and_the_distributed_sum() -> None:
    from privacy.distributed import plan_distributed_dp
    from privacy.noise import fixed_noise_source

    assert common.participation(sample_rate=1.0, count=4).tolist() == [True] * 4
    with fixed_noise_source(seed=1):
        first = common.participation(sample_rate=0.5, count=64)
    with fixed_noise_source(seed=1):
        again = common.participation(sample_rate=0.5, count=64)
    assert first.dtype == np.bool_ and first.tolist() == again.tolist() and 0 < first.sum() < 64
    rows = np.random.default_rng(0).normal(size=(5, 16)) * 0.1
    clients = {"expected_clients": 5, "max_clients": 5}
    plan = plan_distributed_dp(
        mechanism="ddg", dim=16, clip_norm=1.0, noise_multiplier=0.01, bits=32, **clients
    )
    with fixed_noise_source(seed=2):
        got = common.distributed_sum(
            plan=plan, bits=32, rows=rows, take=np.array([0, 2, 4]), rotation_seed=b"s" * 32
        )
    np.testing.assert_allclose(got, rows[[0, 2, 4]].sum(axis=0), atol=0.05)


@dataclass
class _AuditCfg:
    z: object = 1.0
    steps: object = 3
    sample_rate: float = 1.0
    delta: float = 1e-5
    significance: float = 0.05
    accountant: str = "rdp"
    init: str = "random"

    def to_dict(self) -> dict[str, object]:
        return {"z": self.z}


def test_check_audit_config_makes_every_shared_check() -> None:
    def check(cfg: _AuditCfg) -> None:
        common.check_audit_config(
            config=cfg,
            positive=("z",),
            minimums=(("steps", 1),),
            choices=(("init", ("worst_case", "random")),),
        )

    check(_AuditCfg())
    for bad, match in (
        (_AuditCfg(z=0.0), "z must be a finite number > 0"),
        (_AuditCfg(steps=0), "steps must be an int >= 1"),
        (_AuditCfg(sample_rate=1.5), "sample_rate must lie in"),
        (_AuditCfg(delta=0.0), "delta and significance"),
        (_AuditCfg(accountant="x"), "accountant must be 'rdp', 'prv' or 'pld', got 'x'"),
        (_AuditCfg(init="x"), "init must be 'worst_case' or 'random', got 'x'"),
    ):
        with pytest.raises(AttackConfigError, match=match):
            check(bad)


def test_dp_fedavg_sums_are_the_aggregators_noisy_sums() -> None:
    from privacy.client_dp import DPFedAvgAggregator, DPFedAvgConfig
    from privacy.noise import fixed_noise_source

    rows = np.random.default_rng(0).normal(size=(4, 8))
    lines: list[str] = []
    with fixed_noise_source(seed=3):
        got = common.dp_fedavg_sums(
            rows=rows, clip_norm=1.0, noise_multiplier=0.5, sample_rate=1.0, rounds=2, progress=lines.append
        )
    config = DPFedAvgConfig(clip_norm=1.0, noise_multiplier=0.5, sample_rate=1.0, num_clients=4)
    with fixed_noise_source(seed=3):  # the aggregator takes its source when built
        agg = DPFedAvgAggregator(config=config)
        want = [np.asarray(agg.noisy_sum(updates=list(rows), dim=8), dtype=np.float64) for _ in range(2)]
    np.testing.assert_array_equal(got, np.stack(want))
    assert lines == ["DP-FedAvg round 1/2 (4 clients)", "DP-FedAvg round 2/2 (4 clients)"]


@dataclass
class _Report(common.AuditReport):
    finding: int

    @property
    def violation(self) -> bool:
        return self.finding > self.accountant_epsilon

    def findings(self) -> dict[str, object]:
        return {"finding": self.finding}


def test_audit_report_layout() -> None:
    report = _Report(config=_AuditCfg(), accountant_epsilon=1.0, finding=2, statement="s", timings={"t": 0.5})
    assert list(report.to_dict()) == [
        "config",
        "accountant_epsilon",
        "finding",
        "violation",
        "statement",
        "timings_s",
    ]
    d = report.to_dict()
    assert d["config"] == {"z": 1.0} and d["violation"] is True and d["timings_s"] == {"t": 0.5}
