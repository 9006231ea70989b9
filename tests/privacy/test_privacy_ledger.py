"""Privacy ledger: durable append / read-back, corruption detection, resume, budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from privacy.accountants import DistributedDPAccountant, DistributedEvent, RDPAccountant
from privacy.errors import BudgetExceededError, InvalidPrivacyConfigError, LedgerCorruptedError, LedgerError
from privacy.ledger import (
    MechanismRecord,
    PlannedSteps,
    PrivacyBudget,
    PrivacyLedger,
    check_budget,
)

DELTA = 1e-5
BUDGET = PrivacyBudget(delta=DELTA, site_epsilon=3.0, global_epsilon=5.0)
SITES = ("site-a", "site-b")
PLAN = {"site-a": (1.0, 0.02, 50), "site-b": (1.3, 0.05, 30)}
GLOBAL = (1.2, 0.5, 1)


def _record(eps: float, sigma: float, q: float, steps: int, unit: str = "record") -> MechanismRecord:
    return MechanismRecord(
        epsilon=eps,
        mechanism="dp-sgd" if unit == "record" else "dp-fedavg",
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
        privacy_unit=unit,
        adjacency="add/remove",
    )


def _run_rounds(
    ledger: PrivacyLedger, rounds: int, accs: dict[str, RDPAccountant], glob: RDPAccountant
) -> None:
    for _ in range(rounds):
        sites = {}
        for name in SITES:
            sigma, q, steps = PLAN[name]
            accs[name].step(noise_multiplier=sigma, sample_rate=q, num_steps=steps)
            sites[name] = _record(accs[name].get_epsilon(delta=DELTA), sigma, q, steps)
        glob.step(noise_multiplier=GLOBAL[0], sample_rate=GLOBAL[1])
        g = _record(glob.get_epsilon(delta=DELTA), GLOBAL[0], GLOBAL[1], 1, unit="client")
        ledger.append(round=ledger.last_round + 1, sites=sites, global_record=g)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "privacy_ledger.jsonl"


def _fresh(path: Path, rounds: int) -> tuple[PrivacyLedger, dict[str, RDPAccountant], RDPAccountant]:
    ledger = PrivacyLedger.open(path=path, budget=BUDGET)
    accs = {n: RDPAccountant() for n in SITES}
    glob = RDPAccountant()
    _run_rounds(ledger, rounds, accs, glob)
    return ledger, accs, glob


def test_append_and_read_back(ledger_path: Path) -> None:
    ledger, accs, glob = _fresh(ledger_path, 3)
    lines = ledger_path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["kind"] == "header"
    entry = json.loads(lines[2])
    assert entry["round"] == 2
    assert set(entry["sites"]) == set(SITES)
    rec = entry["sites"]["site-a"]
    assert (
        rec["privacy_unit"] == "record" and rec["adjacency"] == "add/remove" and rec["mechanism"] == "dp-sgd"
    )
    assert entry["global"]["privacy_unit"] == "client"
    reopened = PrivacyLedger.open(path=ledger_path)
    assert reopened.entries == ledger.entries
    assert reopened.last_round == 3 and reopened.delta == DELTA and reopened.budget == BUDGET
    last = reopened.latest()
    assert last is not None
    assert last.sites["site-b"].epsilon == pytest.approx(accs["site-b"].get_epsilon(delta=DELTA))
    assert last.global_record is not None and last.global_record.epsilon == glob.get_epsilon(delta=DELTA)
    # opening again never resets, and appending continues the chain
    again = PrivacyLedger.open(path=ledger_path, budget=BUDGET)
    _run_rounds(again, 1, accs, glob)
    assert PrivacyLedger.open(path=ledger_path).last_round == 4


def test_empty_file_is_initialised(ledger_path: Path) -> None:
    ledger_path.write_text("")  # crash before the header was written
    ledger = PrivacyLedger.open(path=ledger_path, budget=BUDGET)
    assert ledger.last_round == 0
    assert PrivacyLedger.open(path=ledger_path).budget == BUDGET


def test_open_validates_configuration(ledger_path: Path) -> None:
    with pytest.raises(InvalidPrivacyConfigError):
        PrivacyLedger.open(path=ledger_path)  # creating needs a budget
    PrivacyLedger.open(path=ledger_path, budget=BUDGET)
    with pytest.raises(InvalidPrivacyConfigError):
        PrivacyLedger.open(
            path=ledger_path, budget=PrivacyBudget(delta=1e-6, site_epsilon=3.0, global_epsilon=5.0)
        )
    with pytest.raises(InvalidPrivacyConfigError):
        PrivacyLedger.open(path=ledger_path, accountant="prv")
    with pytest.raises(LedgerError):
        PrivacyLedger.open(path=ledger_path.parent / "missing" / "l.jsonl", budget=BUDGET)
    with pytest.raises(InvalidPrivacyConfigError):
        PrivacyBudget(delta=0.0)


def _rewrite_line(path: Path, index: int, mutate) -> None:
    lines = path.read_text().splitlines()
    lines[index] = mutate(lines[index])
    path.write_text("\n".join(lines) + "\n")


def test_edited_value_is_detected(ledger_path: Path) -> None:
    _fresh(ledger_path, 3)

    def lower_epsilon(line: str) -> str:
        obj = json.loads(line)
        obj["sites"]["site-a"]["epsilon"] = 0.001
        return json.dumps(obj)

    _rewrite_line(ledger_path, 2, lower_epsilon)
    with pytest.raises(LedgerCorruptedError) as info:
        PrivacyLedger.open(path=ledger_path)
    assert info.value.line_number == 3


def test_garbage_removed_and_reordered_lines_are_detected(ledger_path: Path) -> None:
    _fresh(ledger_path, 3)
    good = ledger_path.read_text()
    _rewrite_line(ledger_path, 1, lambda line: line[:-5] + "xx}")
    with pytest.raises(LedgerCorruptedError):
        PrivacyLedger.open(path=ledger_path)
    lines = good.splitlines()
    ledger_path.write_text("\n".join([lines[0], lines[1], lines[3]]) + "\n")  # round 2 removed
    with pytest.raises(LedgerCorruptedError, match="chain"):
        PrivacyLedger.open(path=ledger_path)
    ledger_path.write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")
    with pytest.raises(LedgerCorruptedError):
        PrivacyLedger.open(path=ledger_path)
    ledger_path.write_text("\n".join(lines[1:]) + "\n")  # header missing
    with pytest.raises(LedgerCorruptedError):
        PrivacyLedger.open(path=ledger_path)


def test_consistent_forgery_is_caught_by_replay(ledger_path: Path) -> None:
    # Someone recomputes the hash chain after lowering an epsilon: the chain is fine, but replaying the
    # recorded (sigma, q, steps) does not reproduce the recorded epsilon.
    _fresh(ledger_path, 2)
    from privacy.ledger import _digest

    lines = ledger_path.read_text().splitlines()
    prev = json.loads(lines[0])["hash"]
    out = [lines[0]]
    first_eps = json.loads(lines[1])["sites"]["site-a"]["epsilon"]
    for i, line in enumerate(lines[1:]):
        obj = json.loads(line)
        obj.pop("hash")
        obj["prev"] = prev
        if i == 1:  # claim round 2 cost nothing (still non-decreasing, so structurally plausible)
            obj["sites"]["site-a"]["epsilon"] = first_eps
        obj["hash"] = _digest(obj)
        prev = obj["hash"]
        out.append(json.dumps(obj, sort_keys=True, separators=(",", ":")))
    ledger_path.write_text("\n".join(out) + "\n")
    forged = PrivacyLedger.open(path=ledger_path)  # structurally valid
    with pytest.raises(LedgerCorruptedError, match="replayed"):
        forged.rebuild_accountants()


def test_torn_tail_and_recovery(ledger_path: Path) -> None:
    ledger, accs, glob = _fresh(ledger_path, 2)
    with open(ledger_path, "a") as fh:
        fh.write('{"kind":"round","round":3,"sit')  # crash mid-write
    with pytest.raises(LedgerCorruptedError, match="recover_torn_tail"):
        PrivacyLedger.open(path=ledger_path)
    recovered = PrivacyLedger.open(path=ledger_path, recover_torn_tail=True)
    assert recovered.last_round == 2
    assert ledger_path.read_text().endswith("}\n")
    _run_rounds(recovered, 1, accs, glob)
    assert PrivacyLedger.open(path=ledger_path).last_round == 3


def test_complete_last_line_without_newline_is_kept(ledger_path: Path) -> None:
    _, accs, glob = _fresh(ledger_path, 2)
    ledger_path.write_text(ledger_path.read_text().rstrip("\n"))
    ledger = PrivacyLedger.open(path=ledger_path)
    assert ledger.last_round == 2
    _run_rounds(ledger, 1, accs, glob)
    assert PrivacyLedger.open(path=ledger_path).last_round == 3


def test_truncate_for_resume(ledger_path: Path) -> None:
    ledger, _, _ = _fresh(ledger_path, 5)
    third = ledger.entries[2]
    ledger.truncate(last_round=3)
    assert ledger.last_round == 3
    reopened = PrivacyLedger.open(path=ledger_path)
    assert reopened.last_round == 3 and reopened.entries[-1] == third
    # replaying the kept entries gives accountants to continue with
    sites, glob = reopened.rebuild_accountants()
    assert sites["site-a"].history == [(1.0, 0.02, 150)]
    assert glob is not None and len(glob) == 3
    accs = {n: a for n, a in sites.items() if isinstance(a, RDPAccountant)}
    assert isinstance(glob, RDPAccountant)
    _run_rounds(reopened, 1, accs, glob)
    assert PrivacyLedger.open(path=ledger_path).last_round == 4
    with pytest.raises(LedgerError):
        reopened.truncate(last_round=9)
    reopened.truncate(last_round=0)
    assert PrivacyLedger.open(path=ledger_path).last_round == 0


def test_append_rules(ledger_path: Path) -> None:
    ledger, _, _ = _fresh(ledger_path, 1)
    prev = ledger.latest()
    assert prev is not None
    with pytest.raises(LedgerError):  # skipping a round
        ledger.append(round=3, sites=dict(prev.sites), global_record=prev.global_record)
    with pytest.raises(LedgerError):  # a site disappears
        ledger.append(round=2, sites={"site-a": prev.sites["site-a"]}, global_record=prev.global_record)
    lowered = dict(prev.sites)
    lowered["site-a"] = _record(prev.sites["site-a"].epsilon / 2, 1.0, 0.02, 50)
    with pytest.raises(LedgerError):  # cumulative epsilon cannot decrease
        ledger.append(round=2, sites=lowered, global_record=prev.global_record)
    with pytest.raises(LedgerError):  # the global record cannot vanish
        ledger.append(round=2, sites=dict(prev.sites))
    with pytest.raises(InvalidPrivacyConfigError):
        ledger.append(round=2, sites={"site-a": {"epsilon": 1.0}})  # type: ignore[dict-item]
    # a site that did not train appears with steps=0 and unchanged epsilon; new sites may join
    idle = dict(prev.sites)
    idle["site-b"] = _record(prev.sites["site-b"].epsilon, 1.3, 0.05, 0)
    idle["site-c"] = _record(0.5, 1.0, 0.01, 10)
    ledger.append(round=2, sites=idle, global_record=prev.global_record)
    assert PrivacyLedger.open(path=ledger_path).last_round == 2
    assert len(ledger_path.read_text().splitlines()) == 3  # failed appends wrote nothing


def test_infinite_epsilon_and_distributed_records_round_trip(ledger_path: Path) -> None:
    ledger = PrivacyLedger.open(path=ledger_path, budget=PrivacyBudget(delta=DELTA))
    event = DistributedEvent(
        mechanism="skellam",
        l2_sensitivity=100.0,
        l1_sensitivity=1000.0,
        dim=256,
        local_stddev=20.0,
        num_survivors=9,
        sample_rate=1.0,
    )
    acc = DistributedDPAccountant()
    acc.step(event=event)
    glob = MechanismRecord(
        epsilon=acc.get_epsilon(delta=DELTA),
        mechanism="skellam",
        noise_multiplier=0.6,
        sample_rate=1.0,
        steps=1,
        privacy_unit="client",
        adjacency="zero-out",
        params={"event": event.to_dict()},
    )
    bad_site = MechanismRecord(
        epsilon=math.inf,
        mechanism="none",
        noise_multiplier=0.0,
        sample_rate=1.0,
        steps=1,
        privacy_unit="record",
        adjacency="add/remove",
    )
    ledger.append(round=1, sites={"x": bad_site}, global_record=glob)
    back = PrivacyLedger.open(path=ledger_path)
    assert math.isinf(back.entries[0].sites["x"].epsilon)
    _, g = back.rebuild_accountants()
    assert isinstance(g, DistributedDPAccountant)
    assert g.get_epsilon(delta=DELTA) == pytest.approx(glob.epsilon)
    with pytest.raises(InvalidPrivacyConfigError):  # a DDG/Skellam record must carry its event
        MechanismRecord(
            epsilon=1.0,
            mechanism="ddg",
            noise_multiplier=1.0,
            sample_rate=1.0,
            steps=1,
            privacy_unit="client",
            adjacency="zero-out",
        )


def test_budget_checks(ledger_path: Path) -> None:
    ledger, accs, glob = _fresh(ledger_path, 1)
    plans = {
        n: PlannedSteps(noise_multiplier=PLAN[n][0], sample_rate=PLAN[n][1], steps=PLAN[n][2]) for n in SITES
    }
    gplan = PlannedSteps(noise_multiplier=GLOBAL[0], sample_rate=GLOBAL[1], steps=1)
    ok = ledger.check_budget(
        site_accountants=accs, site_plans=plans, global_accountant=glob, global_plan=gplan
    )
    assert ok.allowed and ok.reasons == ()
    ok.raise_if_exceeded()
    assert ok.projected_site_epsilon["site-a"] > accs["site-a"].get_epsilon(delta=DELTA)
    # a plan with little noise would exceed site-b's budget
    greedy = dict(plans)
    greedy["site-b"] = PlannedSteps(noise_multiplier=0.5, sample_rate=0.5, steps=500)
    decision = ledger.check_budget(
        site_accountants=accs, site_plans=greedy, global_accountant=glob, global_plan=gplan
    )
    assert not decision.allowed and len(decision.reasons) == 1
    assert "site-b" in decision.reasons[0] and "budget 3" in decision.reasons[0]
    with pytest.raises(BudgetExceededError) as info:
        decision.raise_if_exceeded()
    assert info.value.reasons == decision.reasons
    # global budget
    tight = PrivacyBudget(delta=DELTA, global_epsilon=glob.get_epsilon(delta=DELTA) * 1.0001)
    gdec = check_budget(
        budget=tight, site_accountants=accs, site_plans={}, global_accountant=glob, global_plan=gplan
    )
    assert not gdec.allowed and gdec.reasons[0].startswith("global")
    # nothing was recorded by the checks
    assert accs["site-a"].history == [(1.0, 0.02, 50)] and len(glob) == 1
    # distributed plan against a distributed accountant
    dacc = DistributedDPAccountant()
    event = DistributedEvent(
        mechanism="ddg",
        l2_sensitivity=100.0,
        l1_sensitivity=1000.0,
        dim=256,
        local_stddev=5.0,
        num_survivors=4,
    )
    ddec = check_budget(
        budget=PrivacyBudget(delta=DELTA, global_epsilon=1.0),
        site_accountants={},
        site_plans={},
        global_accountant=dacc,
        global_plan=event,
    )
    assert not ddec.allowed and "ddg" in ddec.reasons[0]
    with pytest.raises(InvalidPrivacyConfigError):
        check_budget(budget=BUDGET, site_accountants={}, site_plans=plans)
    with pytest.raises(InvalidPrivacyConfigError):
        check_budget(
            budget=BUDGET, site_accountants={}, site_plans={}, global_accountant=glob, global_plan=event
        )
