"""Privacy ledger: durable append / read-back, corruption and forgery detection, write-ahead, budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from privacy.accountants import DistributedDPAccountant, DistributedEvent, RDPAccountant
from privacy.errors import BudgetExceededError, InvalidPrivacyConfigError, LedgerCorruptedError, LedgerError
from privacy.ledger import (
    INTEGRITY_NO_KEY,
    INTEGRITY_UNAUTHENTICATED,
    INTEGRITY_VERIFIED,
    LedgerAuthenticationError,
    LedgerKeyError,
    LedgerTruncatedError,
    LedgerUnverifiableError,
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


def _record(
    eps: float, sigma: float, q: float, steps: int, unit: str = "record", **fields: Any
) -> MechanismRecord:
    """By default a DP-SGD (record) or DP-FedAvg (client) record under add/remove adjacency."""
    mechanism = "dp-sgd" if unit == "record" else "dp-fedavg"
    return MechanismRecord(
        **{
            "epsilon": eps,
            "mechanism": mechanism,
            "noise_multiplier": sigma,
            "sample_rate": q,
            "steps": steps,
            "privacy_unit": unit,
            "adjacency": "add/remove",
            **fields,
        }
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


def _distributed_event(
    mechanism: str, *, local_stddev: float, num_survivors: int, **kw: float
) -> DistributedEvent:
    """A distributed-DP round on 256 coordinates, sensitivities 100 (L2) and 1000 (L1)."""
    return DistributedEvent(
        mechanism=mechanism,
        l2_sensitivity=100.0,
        l1_sensitivity=1000.0,
        dim=256,
        local_stddev=local_stddev,
        num_survivors=num_survivors,
        **kw,
    )


def _fresh(path: Path, rounds: int) -> tuple[PrivacyLedger, dict[str, RDPAccountant], RDPAccountant]:
    ledger = PrivacyLedger.open(path=path, budget=BUDGET)
    accs = {n: RDPAccountant() for n in SITES}
    glob = RDPAccountant()
    _run_rounds(ledger, rounds, accs, glob)
    return ledger, accs, glob


def test_append_and_read_back(ledger_path: Path) -> None:
    ledger, accs, glob = _fresh(ledger_path, 3)
    lines = ledger_path.read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds == ["header"] + ["begin", "commit"] * 3  # write-ahead: begin, then commit, per round
    assert [json.loads(line)["seq"] for line in lines] == list(range(7))
    entry = json.loads(lines[4])
    assert entry["round"] == 2 and entry["begin"] == 3
    assert set(entry["sites"]) == set(SITES)
    rec = entry["sites"]["site-a"]
    assert (
        rec["privacy_unit"] == "record" and rec["adjacency"] == "add/remove" and rec["mechanism"] == "dp-sgd"
    )
    assert entry["global"]["privacy_unit"] == "client"
    reopened = PrivacyLedger.open(path=ledger_path)
    assert reopened.entries == ledger.entries and reopened.integrity == INTEGRITY_VERIFIED
    assert len(reopened) == 3 and [e.kind for e in reopened.releases()] == ["commit"] * 3
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
    ledger_path.write_text("\n".join([*lines[:3], *lines[5:]]) + "\n")  # round 2 removed
    with pytest.raises(LedgerCorruptedError, match="chain"):
        PrivacyLedger.open(path=ledger_path)
    ledger_path.write_text("\n".join([lines[0], lines[3], lines[4], lines[1], lines[2], *lines[5:]]) + "\n")
    with pytest.raises(LedgerCorruptedError):
        PrivacyLedger.open(path=ledger_path)
    ledger_path.write_text("\n".join(lines[1:]) + "\n")  # header missing
    with pytest.raises(LedgerCorruptedError):
        PrivacyLedger.open(path=ledger_path)


def _recompute_without_key(path: Path, mutate) -> None:
    """What a forger with write access to the run directory (but not to the key) can do: edit lines,
    then recompute every SHA-256 hash and the chain (the MACs cannot be recomputed)."""
    from privacy.ledger import _digest

    lines = path.read_text().splitlines()
    out = [lines[0]]
    prev = json.loads(lines[0])["hash"]
    for i, line in enumerate(lines[1:], start=1):
        obj = json.loads(line)
        obj.pop("hash")
        obj["prev"] = prev
        mutate(i, obj)
        body = {k: v for k, v in obj.items() if k != "mac"}
        obj["hash"] = _digest(body)
        prev = obj["hash"]
        out.append(json.dumps(obj, sort_keys=True, separators=(",", ":")))
    path.write_text("\n".join(out) + "\n")


def test_consistent_forgery_without_the_key_is_detected(ledger_path: Path) -> None:
    # The forgery: 30 steps per round instead of 50, epsilon recomputed from the forged
    # steps, hashes recomputed. Replay reproduces the forged epsilon, so only the MAC catches it.
    _fresh(ledger_path, 2)
    forged_acc = RDPAccountant()
    honest_eps = PrivacyLedger.open(path=ledger_path).latest().sites["site-a"].epsilon  # type: ignore[union-attr]

    def fewer_steps(i: int, obj: dict) -> None:
        rec = obj["sites"]["site-a"]
        if obj["kind"] == "begin":
            forged_acc.step(
                noise_multiplier=rec["noise_multiplier"], sample_rate=rec["sample_rate"], num_steps=30
            )
        rec["steps"] = 30
        rec["epsilon"] = forged_acc.get_epsilon(delta=DELTA)

    _recompute_without_key(ledger_path, fewer_steps)
    with pytest.raises(LedgerAuthenticationError, match="MAC"):
        PrivacyLedger.open(path=ledger_path)
    with pytest.raises(LedgerAuthenticationError):
        PrivacyLedger.read(path=ledger_path)
    # Without the MAC check (what version 1 relied on) the forgery is structurally valid and replays:
    from privacy.ledger.lines import parse_entry
    from privacy.ledger.state import LedgerState

    state = LedgerState("consecutive")
    for i, line in enumerate(ledger_path.read_text().splitlines()[1:], start=2):
        state.apply(
            parse_entry(
                obj=json.loads(line),
                line_number=i,
                prev_hash=json.loads(ledger_path.read_text().splitlines()[i - 2])["hash"],
                version=2,
                seq=i - 1,
            )
        )
    assert state.releases()[-1].sites["site-a"].epsilon < honest_eps


def test_recorded_epsilon_that_replay_does_not_reproduce_is_refused(ledger_path: Path) -> None:
    ledger = PrivacyLedger.open(path=ledger_path, budget=BUDGET)
    ledger.append(round=1, sites={"site-a": _record(0.01, 1.0, 0.02, 50)})  # far below the true epsilon
    with pytest.raises(LedgerCorruptedError, match="replayed"):
        PrivacyLedger.open(path=ledger_path).rebuild_accountants()


def test_missing_key_is_reported_as_unverifiable_never_verified(
    ledger_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    _fresh(ledger_path, 2)
    assert PrivacyLedger.read(path=ledger_path).integrity == INTEGRITY_VERIFIED
    other_keys = tmp_path_factory.mktemp("elsewhere")
    view = PrivacyLedger.read(path=ledger_path, key_dir=other_keys)
    assert view.integrity == INTEGRITY_NO_KEY and "cannot verify" in view.integrity
    with pytest.raises(LedgerUnverifiableError, match="key is missing"):
        PrivacyLedger.open(path=ledger_path, key_dir=other_keys)
    with pytest.raises(LedgerError):  # a read-only view cannot be appended to
        view.append(round=3, sites={})


def test_version_1_ledgers_are_read_as_unauthenticated(ledger_path: Path) -> None:
    from privacy.ledger.lines import canonical as _canonical
    from privacy.ledger.lines import digest as _digest

    header = {
        "kind": "header",
        "format": "secfed.privacy.ledger",
        "version": 1,
        "budget": BUDGET.to_dict(),
        "accountant": "rdp",
        "created_unix": 1.0,
    }
    header["hash"] = _digest(header)
    acc = RDPAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.02, num_steps=50)
    row = {
        "kind": "round",
        "round": 1,
        "time_unix": 2.0,
        "sites": {"site-a": _record(acc.get_epsilon(delta=DELTA), 1.0, 0.02, 50).to_dict()},
        "global": None,
        "prev": header["hash"],
    }
    row["hash"] = _digest(row)
    ledger_path.write_text(_canonical(header) + "\n" + _canonical(row) + "\n")
    old = PrivacyLedger.read(path=ledger_path)
    assert old.integrity == INTEGRITY_UNAUTHENTICATED and old.last_round == 1
    assert old.latest() is not None and old.latest().sites["site-a"].steps == 50  # type: ignore[union-attr]
    old.rebuild_accountants()
    with pytest.raises(LedgerUnverifiableError, match="unauthenticated"):
        PrivacyLedger.open(path=ledger_path)


def test_truncated_ledger_is_detected(ledger_path: Path) -> None:
    _fresh(ledger_path, 3)
    lines = ledger_path.read_text().splitlines()
    for keep in (5, 4, 1):  # the last round (commit, or begin and commit), or everything
        ledger_path.write_text("\n".join(lines[:keep]) + "\n")
        with pytest.raises(LedgerTruncatedError):
            PrivacyLedger.read(path=ledger_path)
        with pytest.raises(LedgerTruncatedError):
            PrivacyLedger.open(path=ledger_path, recover_torn_tail=True)


def test_key_is_private_and_outside_the_ledger_directory(ledger_path: Path, tmp_path: Path) -> None:
    import os
    import stat

    from privacy.ledger import default_key_dir

    ledger = PrivacyLedger.open(path=ledger_path, budget=BUDGET)
    key = default_key_dir() / f"{ledger.header.ledger_id}.key"
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key.read_text().strip())) == 32
    assert key.read_text().strip() not in ledger_path.read_text()
    os.chmod(key, 0o644)
    with pytest.raises(LedgerKeyError, match="other users"):
        PrivacyLedger.read(path=ledger_path)
    os.chmod(key, 0o600)
    with pytest.raises(LedgerKeyError, match="inside the ledger"):
        PrivacyLedger.open(path=tmp_path / "l2.jsonl", budget=BUDGET, key_dir=tmp_path / "keys")


def test_begin_without_commit_counts_fully_and_resume_keeps_it(ledger_path: Path) -> None:
    ledger = PrivacyLedger.open(path=ledger_path, budget=BUDGET)
    acc = RDPAccountant()
    acc.step(noise_multiplier=1.0, sample_rate=0.02, num_steps=50)
    planned = _record(acc.get_epsilon(delta=DELTA), 1.0, 0.02, 50)
    ledger.begin(round=1, sites={"site-a": planned})  # then the process dies
    crashed = PrivacyLedger.open(path=ledger_path, recover_torn_tail=True)
    assert crashed.pending is not None and len(crashed) == 1
    sites, _ = crashed.rebuild_accountants()
    assert sites["site-a"].get_epsilon(delta=DELTA) == pytest.approx(planned.epsilon)
    crashed.mark_resume(round=0)  # no checkpoint: round 1 runs again, and counts again
    assert crashed.pending is None and crashed.last_round == 0 and len(crashed) == 1
    acc.step(noise_multiplier=1.0, sample_rate=0.02, num_steps=20)
    crashed.begin(round=1, sites={"site-a": _record(acc.get_epsilon(delta=DELTA), 1.0, 0.02, 20)})
    crashed.commit(sites={"site-a": _record(acc.get_epsilon(delta=DELTA), 1.0, 0.02, 20)})
    again = PrivacyLedger.open(path=ledger_path)
    sites, _ = again.rebuild_accountants()
    assert sites["site-a"].history == [(1.0, 0.02, 70)]  # both runs of round 1 count
    assert [e.kind for e in again.entries] == ["begin", "resume", "begin", "commit"]
    with pytest.raises(LedgerError):  # resume cannot jump ahead of the ledger
        again.mark_resume(round=5)
    with pytest.raises(LedgerError):  # nothing to commit
        again.commit(sites={"site-a": planned})


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


def test_there_is_no_way_to_truncate(ledger_path: Path) -> None:
    ledger, _, _ = _fresh(ledger_path, 2)
    assert not hasattr(ledger, "truncate")


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
    assert len(ledger_path.read_text().splitlines()) == 5  # failed appends wrote nothing


def test_infinite_epsilon_and_distributed_records_round_trip(ledger_path: Path) -> None:
    ledger = PrivacyLedger.open(path=ledger_path, budget=PrivacyBudget(delta=DELTA))
    event = _distributed_event("skellam", local_stddev=20.0, num_survivors=9, sample_rate=1.0)
    acc = DistributedDPAccountant()
    acc.step(event=event)
    glob = _record(
        acc.get_epsilon(delta=DELTA),
        0.6,
        1.0,
        1,
        "client",
        mechanism="skellam",
        adjacency="zero-out",
        params={"event": event.to_dict()},
    )
    bad_site = _record(math.inf, 0.0, 1.0, 1, "record", mechanism="none", adjacency="add/remove")
    ledger.append(round=1, sites={"x": bad_site}, global_record=glob)
    back = PrivacyLedger.open(path=ledger_path)
    assert math.isinf(back.entries[0].sites["x"].epsilon)
    _, g = back.rebuild_accountants()
    assert isinstance(g, DistributedDPAccountant)
    assert g.get_epsilon(delta=DELTA) == pytest.approx(glob.epsilon)
    with pytest.raises(InvalidPrivacyConfigError):  # a DDG/Skellam record must carry its event
        _record(1.0, 1.0, 1.0, 1, "client", mechanism="ddg", adjacency="zero-out")


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
    event = _distributed_event("ddg", local_stddev=5.0, num_survivors=4)
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
