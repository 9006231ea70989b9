"""End-to-end protocol properties 1, 2, 3, 7 and the active variant."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secagg_harness import Harness, body_of, reframe

from protocols import (
    AuthenticationError,
    ClientState,
    DropoutBoundError,
    InconsistentViewError,
    ProtocolConfigError,
    ProtocolError,
    ReconstructionError,
    ReplayError,
    SecAggConfig,
    SessionAbortedError,
    SessionMismatchError,
    Stage,
    ThresholdError,
    run_local_round,
)
from protocols import messages as msg
from protocols.shamir import int_to_secret, reconstruct
from protocols.wire import Header, pack_message, unpack_message

CONFIGS = [
    pytest.param(SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3), 7, id="secagg"),
    pytest.param(SecAggConfig(mode="secagg+", bits=24, dropout_rate=0.2), 20, id="secagg+"),
    pytest.param(SecAggConfig(mode="secagg", bits=40, active=True, dropout_rate=0.2), 8, id="secagg-active"),
    pytest.param(
        SecAggConfig(mode="secagg+", bits=64, active=True, corrupt_fraction=0.0, dropout_rate=0.1),
        24,
        id="secagg+-active",
    ),
]


# ----------------------------------------------------------------------------- property 1
DROP_CASES = [
    pytest.param(p.values[0], p.values[1], stage, id=f"{p.id}-{stage.name.lower() if stage else 'none'}")
    for p in CONFIGS
    for stage in (None, *Stage)
    if stage != Stage.CONSISTENCY_CHECK or p.values[0].active
]


@pytest.mark.parametrize(("config", "n", "drop_stage"), DROP_CASES)
def test_sum_is_correct_with_dropouts_at_every_stage(
    config: SecAggConfig, n: int, drop_stage: Stage | None
) -> None:
    h = Harness(config=config, ids=[3 * i + 2 for i in range(n)], m=12)
    dropped = {h.ids[0], h.ids[-1]} if drop_stage is not None else set()
    h.run(drops={drop_stage: dropped} if drop_stage is not None else None)
    res = h.server.result()
    if drop_stage is None or drop_stage > Stage.COLLECT_MASKED_INPUT:
        assert res.survivors == h.ids  # late dropouts' inputs are still in the sum
    else:
        assert res.survivors == [u for u in h.ids if u not in dropped]
    assert np.array_equal(res.total, h.expected_sum(res.survivors))
    assert res.dropped == sorted(set(h.ids) - set(res.survivors))
    assert res.metrics["t"] == res.params.t and res.metrics["bytes_sent_per_client"] > 0


def _predict_abort(h: Harness, drops: dict[int, Stage]) -> bool:
    """Recompute, from the public sets and graph, whether a threshold must fail."""
    s = h.server
    t = s.params.t
    stages = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_INPUT]
    if s.params.active:
        stages.append(Stage.CONSISTENCY_CHECK)
    stages.append(Stage.UNMASK)
    alive = {st_: {u for u in h.ids if drops.get(u, Stage.UNMASK + 1) > st_} for st_ in Stage}
    if any(len(alive[st_]) < t for st_ in stages):
        return True
    g = s._graph
    assert g is not None
    u3, u2 = alive[Stage.COLLECT_MASKED_INPUT], alive[Stage.SHARE_KEYS]
    final = alive[Stage.UNMASK]
    if any(len(g.closed_neighbours(u) & final) < t for u in u3):
        return True
    return any(len(g.neighbours(v) & final) < t for v in u2 - u3)


def _predict_dropout_bound_abort(h: Harness, drops: dict[int, Stage]) -> bool:
    """SecAgg+ (issue 16, item 9): more dropouts before U3 than designed, or a split U3 graph."""
    g = h.server._graph
    assert g is not None
    if g.complete:
        return False
    u3 = {u for u in h.ids if drops.get(u, Stage.UNMASK + 1) > Stage.COLLECT_MASKED_INPUT}
    if len(h.ids) - len(u3) > h.server.params.n_dropout:
        return True
    return not g.induced_connected(u3)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(["secagg", "secagg+"]),
    active=st.booleans(),
    n=st.integers(min_value=3, max_value=9),
    data=st.data(),
)
def test_random_dropout_patterns(mode: str, active: bool, n: int, data: st.DataObject) -> None:
    # assumptions of 0 only pick small (k, t); the drawn dropout patterns then hit every path
    cfg = SecAggConfig(mode=mode, bits=12, active=active, corrupt_fraction=0.0, dropout_rate=0.0)  # type: ignore[arg-type]
    ids = list(range(n))
    stage_choices = [s for s in Stage if active or s != Stage.CONSISTENCY_CHECK]
    drops = data.draw(st.dictionaries(st.sampled_from(ids), st.sampled_from(stage_choices), max_size=n))
    h = Harness(config=cfg, ids=ids, m=5, seed=n)

    def effective() -> dict[int, Stage]:
        # a client that refuses (e.g. too few neighbours advertised keys) behaves as dropped there
        eff = dict(drops)
        for u, (stage, exc) in h.client_errors.items():
            assert isinstance(exc, ThresholdError), exc
            eff[u] = min(eff.get(u, stage), stage)
        return eff

    try:
        h.run(drops={s: {u for u, d in drops.items() if d == s} for s in Stage}, tolerate_client_errors=True)
    except (ThresholdError, DropoutBoundError) as exc:
        if isinstance(exc, DropoutBoundError):  # the server refuses before asking for any share
            assert _predict_dropout_bound_abort(h, effective())
            assert not any(stage == Stage.UNMASK for stage, _, _ in h.history)
        elif h.server._graph is not None:
            assert _predict_abort(h, effective())
        else:
            assert len([u for u in ids if drops.get(u, 99) > Stage.ADVERTISE_KEYS]) < h.server.params.t
        # no client released anything unless the server already asked for shares
        asked_unmask = any(stage == Stage.UNMASK for stage, _, _ in h.history)
        if not asked_unmask:
            assert all(c.state != ClientState.DONE for c in h.clients.values())
        with pytest.raises(SessionAbortedError):
            h.server.requests()
        return
    eff = effective()
    assert not _predict_abort(h, eff)
    assert not _predict_dropout_bound_abort(h, eff)
    res = h.server.result()
    expected_survivors = [u for u in ids if eff.get(u, 99) > Stage.COLLECT_MASKED_INPUT]
    assert res.survivors == expected_survivors
    assert np.array_equal(res.total, h.expected_sum(res.survivors))
    # property 3 along the way: no client revealed both share kinds for the same peer
    for stage, _, responses in h.history:
        if stage == Stage.UNMASK:
            for resp in responses.values():
                b_rows, s_rows = msg.decode_unmask_response(body_of(resp), limit=n)
                assert not {v for v, _ in b_rows} & {v for v, _ in s_rows}


def test_run_local_round_simulation_helper() -> None:
    rng = np.random.default_rng(0)
    inputs = {u: rng.integers(0, 2**20, size=100, dtype=np.uint64) for u in range(12)}
    rec = run_local_round(
        config=SecAggConfig(mode="secagg+", bits=20, dropout_rate=0.2),
        inputs=inputs,
        dropouts={0: Stage.COLLECT_MASKED_INPUT, 5: Stage.UNMASK},
    )
    expected = sum(inputs[u] for u in rec.result.survivors) % 2**20
    assert 0 not in rec.result.survivors and 5 in rec.result.survivors
    assert np.array_equal(rec.result.total, expected)
    assert rec.wall_seconds > 0 and set(rec.client_seconds) >= {"advertise_keys", "unmask"}


# ----------------------------------------------------------------------------- property 2
_EARLY = [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_INPUT]


@pytest.mark.parametrize(
    ("mode", "active", "stage"),
    [(mode, False, stage) for mode in ("secagg", "secagg+") for stage in _EARLY]
    + [("secagg", True, stage) for stage in [*_EARLY, Stage.CONSISTENCY_CHECK]],
)
def test_too_few_survivors_abort_before_any_share_is_released(mode: str, active: bool, stage: Stage) -> None:
    cfg = SecAggConfig(mode=mode, bits=16, dropout_rate=0.3, active=active)  # type: ignore[arg-type]
    h = Harness(config=cfg, ids=list(range(10)), m=4)
    t = h.server.params.t
    gone = set(range(10 - t + 1))  # leaves t - 1
    with pytest.raises(ThresholdError):
        h.run(drops={stage: gone})
    assert all(c.state != ClientState.DONE for c in h.clients.values())
    assert not any(s == Stage.UNMASK for s, _, _ in h.history)
    with pytest.raises(SessionAbortedError):
        h.server.requests()
    with pytest.raises(SessionAbortedError):
        h.server.result()


def test_too_few_unmask_responses_abort_with_fewer_than_t_shares_per_secret() -> None:
    cfg = SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3)
    h = Harness(config=cfg, ids=list(range(10)), m=4)
    t = h.server.params.t
    with pytest.raises(ThresholdError):
        h.run(drops={Stage.UNMASK: set(range(10 - t + 1))})
    (stage, _, responses) = h.history[-1]
    assert stage == Stage.UNMASK and len(responses) == t - 1


def test_secagg_plus_aborts_when_a_dropped_clients_neighbours_are_gone() -> None:
    cfg = SecAggConfig(mode="secagg+", bits=16, k=4, t=3, corrupt_fraction=0.0, dropout_rate=0.0)
    h = Harness(config=cfg, ids=list(range(12)), m=4)
    h.step()
    h.step()
    g = h.server._graph
    assert g is not None
    victim = 0
    nb = sorted(g.neighbours(victim))
    # the victim and two of its four neighbours drop before masking: only 2 < t holders remain
    with pytest.raises(ThresholdError, match="share holders"):
        h.step(drop={victim, nb[0], nb[1]})
    assert all(c.state != ClientState.DONE for c in h.clients.values())


def test_client_refuses_key_table_below_t() -> None:
    cfg = SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3)
    h = Harness(config=cfg, ids=list(range(10)), m=4)
    h.step()
    t = h.server.params.t
    requests = h.server.requests()
    table = msg.decode_key_table(body_of(requests[0]), active=False, limit=10)
    entries = [table.entry(int(u)) for u in table.ids[: t - 1]]
    forged = reframe(requests[0], body=msg.encode_key_table(entries, active=False))
    with pytest.raises(ThresholdError):
        h.clients[0].handle(forged)
    assert h.clients[0].aborted
    with pytest.raises(SessionAbortedError):
        h.clients[0].handle(requests[0])


# ----------------------------------------------------------------------------- property 3
def _to_unmask(h: Harness, *, drop_before_mask: set[int]) -> dict[int, bytes]:
    h.step()
    h.step()
    h.step(drop=drop_before_mask)
    return h.server.requests()


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
def test_client_never_reveals_both_share_kinds(mode: str) -> None:
    cfg = SecAggConfig(mode=mode, bits=16, dropout_rate=0.3)  # type: ignore[arg-type]
    ids = list(range(12))
    h = Harness(config=cfg, ids=ids, m=4)
    reqs = _to_unmask(h, drop_before_mask={0})
    u = next(iter(reqs))
    req = msg.decode_unmask_request(body_of(reqs[u]), limit=12)
    assert 0 in req.dropped
    # a malicious server lists client 0 as both survivor and dropped: refused, nothing released
    both = msg.UnmaskRequest(tuple(sorted({*req.survivors, 0})), req.dropped, ())
    with pytest.raises(InconsistentViewError, match="both"):
        h.clients[u].handle(reframe(reqs[u], body=msg.encode_unmask_request(both)))
    assert h.clients[u].aborted
    # an honest request to another client yields only one kind per peer
    v = sorted(reqs)[1]
    b_rows, s_rows = msg.decode_unmask_response(body_of(h.clients[v].handle(reqs[v])), limit=12)
    assert not {x for x, _ in b_rows} & {x for x, _ in s_rows}
    # and asking the same client again (e.g. with the other classification) is refused
    flipped = msg.UnmaskRequest(tuple(sorted({*req.survivors, 0})), (), ())
    with pytest.raises(ReplayError):
        h.clients[v].handle(reframe(reqs[v], body=msg.encode_unmask_request(flipped)))


@pytest.mark.parametrize(
    ("tamper", "error", "match"),
    [
        ("survivor_not_in_u2", InconsistentViewError, "not a subset of U2"),
        ("unclassified_neighbour", InconsistentViewError, "neither survivors nor dropped"),
        ("dropped_never_shared", InconsistentViewError, "never shared"),
        ("self_missing", InconsistentViewError, "omits this client"),
        ("below_t", ThresholdError, "survivors"),
        ("unknown_client", InconsistentViewError, "did not advertise"),
    ],
)
def test_client_refuses_inconsistent_unmask_lists(tamper: str, error: type, match: str) -> None:
    cfg = SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3)
    ids = list(range(10))
    h = Harness(config=cfg, ids=ids, m=4)
    h.step()
    h.step(drop={9})  # 9 advertised keys (in U1) but never shared (not in U2)
    h.step(drop={0})  # 0 shared but sent no masked input
    reqs = h.server.requests()
    u = 5
    req = msg.decode_unmask_request(body_of(reqs[u]), limit=10)
    assert req.dropped == (0,)
    s, d = set(req.survivors), set(req.dropped)
    if tamper == "survivor_not_in_u2":
        s.add(9)
    elif tamper == "unclassified_neighbour":
        d.discard(0)
    elif tamper == "dropped_never_shared":
        d.add(9)
    elif tamper == "self_missing":
        s.discard(u)
        d.add(u)
    elif tamper == "below_t":
        s = set(sorted(s)[: h.server.params.t - 1]) | {u}
        s = set(sorted(s)[: h.server.params.t - 1])
        if u not in s:
            s = set(sorted(s)[:-1]) | {u}
        d = set(ids) - s - {9}
    elif tamper == "unknown_client":
        s.add(77)
    forged = msg.UnmaskRequest(tuple(sorted(s)), tuple(sorted(d)), ())
    with pytest.raises(error, match=match):
        h.clients[u].handle(reframe(reqs[u], body=msg.encode_unmask_request(forged)))
    assert h.clients[u].aborted and h.clients[u].state != ClientState.DONE


def test_tampered_s_share_is_caught_by_the_public_key_check() -> None:
    cfg = SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3)
    h = Harness(config=cfg, ids=list(range(8)), m=4)
    reqs = _to_unmask(h, drop_before_mask={0})
    responses = {u: h.clients[u].handle(r) for u, r in reqs.items()}
    # every holder corrupts its share of client 0's s_sk: a wrong key is reconstructed
    for u in list(responses):
        b_rows, s_rows = msg.decode_unmask_response(body_of(responses[u]), limit=8)
        s_rows = [(v, (val + 1) % (2**256)) for v, val in s_rows]
        responses[u] = reframe(
            responses[u], body=msg.encode_unmask_response(b_shares=b_rows, s_shares=s_rows)
        )
    with pytest.raises(ReconstructionError, match="s_pk"):
        h.server.receive(responses=responses)


# ----------------------------------------------------------------------------- property 7
def test_fresh_keys_seeds_and_session_ids_every_round() -> None:
    cfg = SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3)
    ids = list(range(6))
    inputs = {u: np.full(4, u, dtype=np.uint64) for u in ids}
    rounds = []
    for _ in range(2):
        h = Harness(config=cfg, ids=ids, m=4, round_idx=7, inputs=inputs)  # same round number on purpose
        h.run(drops={Stage.COLLECT_MASKED_INPUT: {0}})
        rounds.append(h)
    a, b = rounds
    assert a.server.session_id != b.server.session_id
    assert a.server.pre_session_id != b.server.pre_session_id
    keys_a = {k for rec in a.server._keys.values() for k in rec[:2]}
    keys_b = {k for rec in b.server._keys.values() for k in rec[:2]}
    assert len(keys_a) == 12 and not keys_a & keys_b

    def secrets_of(h: Harness) -> tuple[dict[int, bytes], bytes]:
        _, _, responses = h.history[-1]
        b_sh: dict[int, dict[int, int]] = {}
        s_sh: dict[int, int] = {}
        for holder, resp in responses.items():
            b_rows, s_rows = msg.decode_unmask_response(body_of(resp), limit=6)
            for v, val in b_rows:
                b_sh.setdefault(v, {})[holder + 1] = val
            for _, val in s_rows:
                s_sh[holder + 1] = val
        t = h.server.params.t
        bs = {v: int_to_secret(reconstruct(shares=sh, t=t)) for v, sh in b_sh.items()}
        return bs, int_to_secret(reconstruct(shares=s_sh, t=t))

    b_a, s_a = secrets_of(a)
    b_b, s_b = secrets_of(b)
    assert set(b_a.values()).isdisjoint(b_b.values()) and s_a != s_b
    # masked vectors of identical inputs differ between rounds
    ya = a.history[2][2][1]
    yb = b.history[2][2][1]
    assert body_of(ya) != body_of(yb)
    # round a's shares are refused by round b's server (other session) ...
    b2 = Harness(config=cfg, ids=ids, m=4, round_idx=7, inputs=inputs)
    b2.step()
    b2.step()
    b2.step(drop={0})
    b2.server.requests()
    _, _, old_responses = a.history[-1]
    with pytest.raises(SessionMismatchError):
        b2.server.ingest(client_id=1, message=old_responses[1])
    # ... and a client of the next round refuses the previous round's setup message
    nxt = Harness(config=cfg, ids=ids, m=4, round_idx=8)
    with pytest.raises(SessionMismatchError, match="round"):
        nxt.clients[1].handle(reframe(a.history[0][1][1]))


def test_finished_session_refuses_further_messages() -> None:
    cfg = SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3)
    h = Harness(config=cfg, ids=list(range(5)), m=4)
    h.run()
    assert all(c.state == ClientState.DONE for c in h.clients.values())
    with pytest.raises(ReplayError):
        h.clients[0].handle(h.history[0][1][0])


# ----------------------------------------------------------------------------- active variant
def test_active_forged_advertisement_is_rejected() -> None:
    cfg = SecAggConfig(mode="secagg", bits=16, active=True, dropout_rate=0.2)
    h = Harness(config=cfg, ids=list(range(6)), m=4)
    h.step()
    reqs = h.server.requests()
    table = msg.decode_key_table(body_of(reqs[0]), active=True, limit=6)
    entries = [table.entry(int(u)) for u in table.ids]
    entries[3] = dataclasses.replace(entries[3], signature=bytes(64))
    forged = reframe(reqs[0], body=msg.encode_key_table(entries, active=True))
    with pytest.raises(AuthenticationError):
        h.clients[0].handle(forged)
    # the server checks advertisements too
    h2 = Harness(config=cfg, ids=list(range(6)), m=4)
    reqs2 = h2.server.requests()
    resp = h2.clients[2].handle(reqs2[2])
    c_pk, s_pk, sig = msg.decode_advertise(body_of(resp), active=True)
    bad = reframe(resp, body=msg.encode_advertise(c_pk=c_pk, s_pk=s_pk, signature=bytes(64)))
    with pytest.raises(AuthenticationError):
        h2.server.ingest(client_id=2, message=bad)


def test_active_unmask_requires_the_signed_u3_and_t_signatures() -> None:
    cfg = SecAggConfig(mode="secagg", bits=16, active=True, dropout_rate=0.2)
    ids = list(range(8))
    h = Harness(config=cfg, ids=ids, m=4)
    h.step()
    h.step()
    h.step(drop={0})
    h.step()  # consistency check
    reqs = h.server.requests()
    req = msg.decode_unmask_request(body_of(reqs[1]), limit=8)
    t = h.server.params.t
    # a survivor list other than the signed U3
    other = msg.UnmaskRequest(tuple(u for u in req.survivors if u != 7), (0, 7), req.signatures)
    with pytest.raises(InconsistentViewError, match="signed"):
        h.clients[1].handle(reframe(reqs[1], body=msg.encode_unmask_request(other)))
    # too few signatures
    few = msg.UnmaskRequest(req.survivors, req.dropped, req.signatures[: t - 1])
    with pytest.raises(ThresholdError, match="signatures"):
        h.clients[2].handle(reframe(reqs[2], body=msg.encode_unmask_request(few)))
    # a forged signature
    sigs = list(req.signatures)
    sigs[0] = (sigs[0][0], bytes(64))
    forged = msg.UnmaskRequest(req.survivors, req.dropped, tuple(sigs))
    with pytest.raises(AuthenticationError):
        h.clients[3].handle(reframe(reqs[3], body=msg.encode_unmask_request(forged)))
    # the honest request works
    assert h.clients[4].handle(reqs[4])


def test_active_consistency_refuses_u3_not_subset_of_u2() -> None:
    cfg = SecAggConfig(mode="secagg", bits=16, active=True, dropout_rate=0.2)
    ids = list(range(8))
    h = Harness(config=cfg, ids=ids, m=4)
    h.step()
    h.step(drop={7})
    h.step()
    reqs = h.server.requests()
    u3 = msg.decode_id_list(body_of(reqs[1]), limit=8, what="U3")
    forged = reframe(reqs[1], body=msg.encode_id_list(tuple(sorted({*u3, 7}))))
    with pytest.raises(InconsistentViewError, match="U2"):
        h.clients[1].handle(forged)


def test_client_checks_the_servers_parameters() -> None:
    server_cfg = SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3)
    h = Harness(config=server_cfg, ids=list(range(6)), m=4)
    reqs = h.server.requests()
    from protocols import SecAggClientSession

    for client_cfg, kwargs in (
        (SecAggConfig(mode="secagg+", bits=16, dropout_rate=0.3), {}),
        (SecAggConfig(mode="secagg", bits=32, dropout_rate=0.3), {}),
        (SecAggConfig(mode="secagg", bits=16, dropout_rate=0.1), {}),
        (SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3, t=5), {}),
        (SecAggConfig(mode="secagg", bits=None, dropout_rate=0.3), {"min_bits": 20}),
        (SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3), {"vector_length": 5}),
        (SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3), {"context": b"other"}),
    ):
        c = SecAggClientSession(client_id=1, config=client_cfg, round_idx=0, **kwargs)
        with pytest.raises(ProtocolConfigError):
            c.handle(reqs[1])
        assert c.aborted
    ok = SecAggClientSession(
        client_id=1, config=SecAggConfig(mode="secagg", bits=None, dropout_rate=0.3), round_idx=0
    )
    ok.handle(reqs[1])
    assert ok.params is not None and ok.params.bits == 16


def test_server_and_client_constructor_validation() -> None:
    from protocols import SecAggClientSession, SecAggServerSession

    cfg = SecAggConfig(mode="secagg", bits=16)
    with pytest.raises(ProtocolConfigError):
        SecAggServerSession(config=cfg, round_idx=0, participants=[1, 1, 2], vector_length=4)
    with pytest.raises(ProtocolConfigError):
        SecAggServerSession(config=cfg, round_idx=0, participants=[1, 2, 2**32 - 1], vector_length=4)
    with pytest.raises(ProtocolConfigError):
        SecAggServerSession(config=cfg, round_idx=0, participants=[1, 2, 3], vector_length=0)
    with pytest.raises(ProtocolConfigError):
        SecAggServerSession(
            config=dataclasses.replace(cfg, bits=None), round_idx=0, participants=[1, 2], vector_length=4
        )
    with pytest.raises(ProtocolConfigError):
        SecAggServerSession(
            config=dataclasses.replace(cfg, active=True), round_idx=0, participants=[1, 2, 3], vector_length=4
        )
    with pytest.raises(ProtocolConfigError):
        SecAggClientSession(client_id=-1, config=cfg, round_idx=0)
    with pytest.raises(ProtocolConfigError):
        SecAggClientSession(client_id=1, config=dataclasses.replace(cfg, active=True), round_idx=0)


def test_client_value_is_validated_before_masking() -> None:
    cfg = SecAggConfig(mode="secagg", bits=8, dropout_rate=0.3)
    h = Harness(config=cfg, ids=list(range(5)), m=4)
    h.step()
    h.step()
    reqs = h.server.requests()
    for bad in (None, np.zeros(3, dtype=np.uint64), np.full(4, 256, dtype=np.uint64), np.zeros(4)):
        with pytest.raises(ProtocolError):
            h.clients[0].handle(reqs[0], value=bad)
        assert not h.clients[0].aborted  # bad local input does not burn the session
    assert h.clients[0].handle(reqs[0], value=np.zeros(4, dtype=np.uint64))


def test_unused_header_helper_round_trips() -> None:
    hd = Header(Stage.UNMASK, msg_kind(), 1, 2, bytes(32))
    assert unpack_message(pack_message(header=hd, body=b"xy"))[0] == hd


def msg_kind():  # noqa: ANN201 - tiny helper
    from protocols.wire import Kind

    return Kind.REQUEST
