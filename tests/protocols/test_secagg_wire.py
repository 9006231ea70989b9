"""Wire format and message handling: tampering (property 5), duplicates/replays/order (property 6)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secagg_harness import Harness, body_of, reframe

from protocols import (
    AuthenticationError,
    DuplicateEntryError,
    InvalidKeyError,
    MalformedMessageError,
    ProtocolError,
    ProtocolMessageError,
    ReplayError,
    SecAggConfig,
    SessionMismatchError,
    Stage,
    StageError,
    TruncatedMessageError,
    VersionError,
)
from protocols import messages as msg
from protocols.client import share_key
from protocols.crypto import aead_encrypt, agree
from protocols.wire import HEADER_BYTES, SERVER_ID, WIRE_VERSION, Header, Kind, pack_message, unpack_message

CFG = SecAggConfig(mode="secagg", bits=16, dropout_rate=0.3)


def at_stage(
    stage: Stage, *, ids: list[int] | None = None, config: SecAggConfig = CFG
) -> tuple[Harness, dict[int, bytes]]:
    h = Harness(config=config, ids=ids or list(range(6)), m=8)
    while h.server.stage != stage:
        h.step()
    return h, h.server.requests()


# ----------------------------------------------------------------------------- framing
def test_framing_rejects_truncation_trailing_bytes_version_magic_and_codes() -> None:
    h, reqs = at_stage(Stage.SHARE_KEYS)
    m = reqs[0]
    for cut in range(len(m)):
        with pytest.raises(TruncatedMessageError):
            unpack_message(m[:cut])
    with pytest.raises(MalformedMessageError, match="trailing"):
        unpack_message(m + b"\x00")
    for version in (WIRE_VERSION - 1, WIRE_VERSION + 1):  # version 1 had an unaligned masked input
        bad = bytearray(m)
        bad[4] = version
        with pytest.raises(VersionError):
            unpack_message(bytes(bad))
    bad = bytearray(m)
    bad[0] ^= 1
    with pytest.raises(MalformedMessageError, match="magic"):
        unpack_message(bytes(bad))
    bad = bytearray(m)
    bad[5] = 9
    with pytest.raises(StageError):
        unpack_message(bytes(bad))
    bad = bytearray(m)
    bad[6] = 3
    with pytest.raises(MalformedMessageError, match="kind"):
        unpack_message(bytes(bad))
    bad = bytearray(m)
    bad[7] = 1
    with pytest.raises(MalformedMessageError, match="flags"):
        unpack_message(bytes(bad))
    with pytest.raises(MalformedMessageError):
        unpack_message("not bytes")  # type: ignore[arg-type]


def test_every_truncated_body_is_rejected_by_the_client() -> None:
    for stage in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_INPUT, Stage.UNMASK):
        h, reqs = at_stage(stage)
        m = reqs[1]
        body = body_of(m)
        for cut in sorted({0, 1, 3, len(body) // 2, len(body) - 1}):
            forged = reframe(m, body=body[:cut])
            if stage == Stage.ADVERTISE_KEYS:
                # the pre-session id is the hash of the body, so the header no longer matches
                forged = reframe(forged, session=msg.setup_session_id(body[:cut]))
            with pytest.raises(ProtocolMessageError):
                h.clients[1].handle(forged, value=h.inputs[1])
            assert not h.clients[1].aborted
        # the untouched message still works afterwards
        h.clients[1].handle(m, value=h.inputs[1])


def test_server_rejects_malformed_responses() -> None:
    h, reqs = at_stage(Stage.COLLECT_MASKED_INPUT)
    good = h.answer(2, reqs[2])
    body = body_of(good)
    with pytest.raises(MalformedMessageError):
        h.server.ingest(client_id=2, message=reframe(good, body=body[:-4]))
    # the vector starts 12 bytes into the body, at offset 64 of the message (aligned words)
    assert body[1:4] == bytes(3)
    view = msg.decode_masked(unpack_message(good)[1], bits=body[0], length=(len(body) - 12) // 4)
    assert view.ctypes.data - np.frombuffer(good, dtype=np.uint8).ctypes.data == 64
    # values >= 2^bits are refused
    y = np.frombuffer(body[12:], dtype="<u4").copy()
    y[0] = 2**16
    with pytest.raises(MalformedMessageError, match="values"):
        h.server.ingest(client_id=2, message=reframe(good, body=body[:12] + y.tobytes()))
    # so is non-zero padding, and a prefix cut short
    with pytest.raises(MalformedMessageError, match="padding"):
        h.server.ingest(client_id=2, message=reframe(good, body=body[:2] + b"\x01" + body[3:]))
    with pytest.raises(TruncatedMessageError):
        h.server.ingest(client_id=2, message=reframe(good, body=body[:11]))
    with pytest.raises(MalformedMessageError, match="claims"):
        h.server.ingest(client_id=3, message=good)
    with pytest.raises(MalformedMessageError):
        h.server.ingest(client_id=2, message=reframe(good, kind=Kind.REQUEST))
    h.server.ingest(client_id=2, message=good)


_FUZZ_CACHE: dict[Stage, tuple[Harness, dict[int, bytes]]] = {}


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), stage=st.sampled_from([Stage.SHARE_KEYS, Stage.COLLECT_MASKED_INPUT, Stage.UNMASK]))
def test_fuzzed_requests_only_ever_raise_protocol_errors(data: st.DataObject, stage: Stage) -> None:
    """Random byte mutations and truncations never crash a client with a non-protocol exception.

    A message error (malformed, truncated, misrouted, other session) leaves the client's state as
    it was; any other protocol error (a failed security check) aborts the session. (Some mutations
    are legitimately accepted: e.g. in the passive variant a changed public key of another client
    just yields another, self-consistent session id.)
    """
    if stage not in _FUZZ_CACHE:
        _FUZZ_CACHE[stage] = at_stage(stage)
    h, reqs = _FUZZ_CACHE[stage]
    m = bytearray(reqs[0])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(m) - 1))
        m[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        m = m[: data.draw(st.integers(0, len(m)))]
    client = _fresh_copy_of_client(h, 0)
    before = client.state
    try:
        client.handle(bytes(m), value=h.inputs[0])
    except ProtocolMessageError:
        assert client.state == before and not client.aborted
    except ProtocolError:
        assert client.aborted


# ----------------------------------------------------------------------------- property 5
def test_any_bit_flip_in_an_encrypted_share_is_rejected() -> None:
    h, reqs = at_stage(Stage.COLLECT_MASKED_INPUT)
    rows = msg.decode_blobs(body_of(reqs[0]), limit=6)
    sender, blob = rows[0]
    for byte in range(0, len(blob), 7):
        for bit in (0, 7):
            flipped = bytearray(blob)
            flipped[byte] ^= 1 << bit
            forged_rows = [(sender, bytes(flipped)), *rows[1:]]
            forged = reframe(reqs[0], body=msg.encode_blobs(forged_rows))
            h2_client = _fresh_copy_of_client(h, 0)
            with pytest.raises(AuthenticationError):
                h2_client.handle(forged, value=h.inputs[0])
            assert h2_client.aborted


def _fresh_copy_of_client(h: Harness, u: int):  # noqa: ANN202 - test helper
    """A deep copy of client u's session state (so one harness serves many tamper attempts)."""
    import copy

    c = h.clients[u]
    clone = copy.copy(c)
    clone._handled = set(c._handled)
    return clone


def test_ciphertext_reflected_back_to_its_author_fails_on_the_aad() -> None:
    """u's share for v uses the pair key k_uv; sending it back to u as 'from v' must fail (AAD)."""
    h = Harness(config=CFG, ids=list(range(6)), m=8)
    h.step()
    _, _, responses = h.step()
    own_for_1 = dict(msg.decode_share_keys_response(body_of(responses[0]), limit=6)[1])[1]
    reqs = h.server.requests()
    rows = dict(msg.decode_blobs(body_of(reqs[0]), limit=6))
    rows[1] = own_for_1
    forged = reframe(reqs[0], body=msg.encode_blobs(sorted(rows.items())))
    with pytest.raises(AuthenticationError):
        h.clients[0].handle(forged, value=h.inputs[0])


def test_share_relabelled_to_another_sender_is_rejected() -> None:
    h, reqs = at_stage(Stage.COLLECT_MASKED_INPUT)
    rows = dict(msg.decode_blobs(body_of(reqs[0]), limit=6))
    rows[1], rows[2] = rows[2], rows[1]
    with pytest.raises(AuthenticationError):
        h.clients[0].handle(reframe(reqs[0], body=msg.encode_blobs(sorted(rows.items()))), value=h.inputs[0])


def test_ciphertext_from_another_session_is_rejected() -> None:
    a, reqs_a = at_stage(Stage.COLLECT_MASKED_INPUT)
    b, reqs_b = at_stage(Stage.COLLECT_MASKED_INPUT)
    # whole message from the other session: header check
    with pytest.raises(SessionMismatchError):
        b.clients[0].handle(reqs_a[0], value=b.inputs[0])
    # the other session's blobs inside a correctly framed message: AEAD check
    forged = reframe(reqs_b[0], body=body_of(reqs_a[0]))
    with pytest.raises(AuthenticationError):
        b.clients[0].handle(forged, value=b.inputs[0])


def test_shares_from_a_non_neighbour_are_rejected() -> None:
    cfg = SecAggConfig(mode="secagg+", bits=16, k=2, t=2, corrupt_fraction=0.0, dropout_rate=0.0)
    h, reqs = at_stage(Stage.COLLECT_MASKED_INPUT, ids=list(range(8)), config=cfg)
    g = h.server._graph
    assert g is not None
    stranger = next(v for v in range(8) if v != 0 and v not in g.neighbours(0))
    rows = dict(msg.decode_blobs(body_of(reqs[0]), limit=8))
    rows[stranger] = next(iter(rows.values()))
    from protocols import InconsistentViewError

    with pytest.raises(InconsistentViewError, match="not a neighbour"):
        h.clients[0].handle(reframe(reqs[0], body=msg.encode_blobs(sorted(rows.items()))), value=h.inputs[0])


# ----------------------------------------------------------------------------- property 6
def test_replayed_and_duplicated_requests_are_refused_without_harm() -> None:
    h = Harness(config=CFG, ids=list(range(6)), m=8)
    _, reqs0, _ = h.step()
    with pytest.raises(ReplayError):
        h.clients[0].handle(reqs0[0])
    _, reqs1, _ = h.step()
    with pytest.raises(ReplayError):
        h.clients[0].handle(reqs1[0])
    assert not h.clients[0].aborted
    h.run()  # the round still completes correctly
    res = h.server.result()
    assert np.array_equal(res.total, h.expected_sum(res.survivors))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), active=st.booleans())
def test_random_replays_duplicates_and_misroutes_are_refused_without_harm(
    data: st.DataObject, active: bool
) -> None:
    """Before and after every genuine delivery, replay random earlier or misrouted messages.

    Every one of them is refused with a message error (replay, stage, addressing or session) and
    leaves both sides unchanged: the round completes with the right sum and nobody aborts.
    """
    cfg = dataclasses.replace(CFG, active=active, dropout_rate=0.0, corrupt_fraction=0.0)
    h = Harness(config=cfg, ids=list(range(5)), m=6, seed=1)
    seen_requests: list[bytes] = []
    seen_responses: list[tuple[int, bytes]] = []
    refused = 0

    def noise_to_client(u: int) -> None:
        nonlocal refused
        if seen_requests and data.draw(st.booleans()):
            old = data.draw(st.sampled_from(seen_requests))
            state = h.clients[u].state
            with pytest.raises(ProtocolMessageError):
                h.clients[u].handle(old, value=h.inputs[u])
            assert h.clients[u].state == state
            refused += 1

    def noise_to_server() -> None:
        nonlocal refused
        if seen_responses and data.draw(st.booleans()):
            v, old = data.draw(st.sampled_from(seen_responses))
            with pytest.raises(ProtocolMessageError):
                h.server.ingest(client_id=v, message=old)
            refused += 1

    while not h.server.done:
        stage = h.server.stage
        requests = h.server.requests()
        for u, req in requests.items():
            noise_to_client(u)
            value = h.inputs[u] if stage == Stage.COLLECT_MASKED_INPUT else None
            resp = h.clients[u].handle(req, value=value)
            seen_requests.append(req)
            noise_to_client(u)  # now the same request again is a duplicate
            noise_to_server()
            h.server.ingest(client_id=u, message=resp)
            seen_responses.append((u, resp))
            noise_to_server()  # now the same response again is a duplicate
        h.server.close_stage()
    res = h.server.result()
    assert res.survivors == h.ids and np.array_equal(res.total, h.expected_sum(res.survivors))
    assert not any(c.aborted for c in h.clients.values())


def test_session_ids_bind_the_round_parameters_participants_and_keys() -> None:
    h, reqs = at_stage(Stage.SHARE_KEYS)
    setup = msg.decode_setup(body_of(h.history[0][1][0]))
    base = msg.setup_session_id(msg.encode_setup(setup))
    assert base == h.server.pre_session_id
    changed = [
        dataclasses.replace(setup, round_idx=setup.round_idx + 1),
        dataclasses.replace(setup, config=dataclasses.replace(setup.config, t=setup.config.t + 1)),
        dataclasses.replace(setup, config=dataclasses.replace(setup.config, bits=setup.config.bits - 1)),
        dataclasses.replace(setup, participants=setup.participants[:-1] + (99,)),
        dataclasses.replace(setup, vector_length=setup.vector_length + 1),
        dataclasses.replace(setup, context=b"other"),
    ]
    assert len({msg.setup_session_id(msg.encode_setup(c)) for c in changed} | {base}) == len(changed) + 1
    # the session id also hashes every advertised key: a client shown one altered peer key ends
    # up in another session, and the server refuses its answer
    body = bytearray(body_of(reqs[0]))
    peer_s_pk = 4 + 3 * msg.KEY_ROW_BYTES + 4 + 32  # count, three rows, id, c_pk
    body[peer_s_pk : peer_s_pk + 32] = X25519PrivateKey.generate().public_key().public_bytes_raw()
    answer = h.clients[0].handle(reframe(reqs[0], body=bytes(body)))
    assert h.clients[0].session_id != h.server.session_id
    with pytest.raises(SessionMismatchError):
        h.server.ingest(client_id=0, message=answer)


@pytest.mark.parametrize("stage", [Stage.SHARE_KEYS, Stage.UNMASK])
def test_share_ciphertexts_are_bound_to_their_stage(stage: Stage) -> None:
    """A share encrypted under the right pair key but for another stage fails authentication."""
    h, reqs = at_stage(Stage.COLLECT_MASKED_INPUT)
    sid = h.server.session_id
    assert sid is not None
    c0, c1 = h.clients[0]._c, h.clients[1]._c
    assert c0 is not None and c1 is not None
    key = share_key(shared_secret=agree(private=c1.private, public=c0.public_bytes), session_id=sid, u=1, v=0)
    pt = msg.share_plaintext(sender=1, receiver=0, s_share=12345, b_share=67890)
    aad = msg.share_aad(session_id=sid, sender=1, receiver=0, stage=stage)
    blob = aead_encrypt(key=key, plaintext=pt, aad=aad)
    rows = dict(msg.decode_blobs(body_of(reqs[0]), limit=6))
    rows[1] = blob
    forged = reframe(reqs[0], body=msg.encode_blobs(sorted(rows.items())))
    if stage == Stage.SHARE_KEYS:  # the stage the shares are sent in: accepted (control)
        h.clients[0].handle(forged, value=h.inputs[0])
        assert h.clients[0]._received[1] == (12345, 67890)
    else:
        with pytest.raises(AuthenticationError):
            h.clients[0].handle(forged, value=h.inputs[0])
        assert h.clients[0].aborted


def test_out_of_order_requests_are_refused() -> None:
    h = Harness(config=CFG, ids=list(range(6)), m=8)
    reqs = h.server.requests()
    forged = reframe(reqs[0], stage=Stage.UNMASK)
    with pytest.raises(StageError):
        h.clients[0].handle(forged)
    h2, reqs2 = at_stage(Stage.SHARE_KEYS)
    with pytest.raises(StageError):
        h2.clients[0].handle(reframe(reqs2[0], stage=Stage.COLLECT_MASKED_INPUT))
    assert not h2.clients[0].aborted


def test_misaddressed_requests_are_refused() -> None:
    h = Harness(config=CFG, ids=list(range(6)), m=8)
    reqs = h.server.requests()
    with pytest.raises(MalformedMessageError, match="addressed"):
        h.clients[0].handle(reqs[1])
    with pytest.raises(MalformedMessageError):
        h.clients[0].handle(reframe(reqs[0], kind=Kind.RESPONSE))
    with pytest.raises(MalformedMessageError):
        h.clients[0].handle(reframe(reqs[0], sender=3))
    with pytest.raises(SessionMismatchError):
        h.clients[0].handle(reframe(reqs[0], session=bytes(32)))


def test_server_refuses_duplicate_late_and_unsolicited_responses() -> None:
    h = Harness(config=CFG, ids=list(range(6)), m=8)
    h.step()
    h.step()
    reqs = h.server.requests()
    y1 = h.answer(1, reqs[1])
    y5 = h.answer(5, reqs[5])
    h.server.ingest(client_id=1, message=y1)
    with pytest.raises(ReplayError):
        h.server.ingest(client_id=1, message=y1)
    for u in (0, 2, 3, 4):
        h.server.ingest(client_id=u, message=h.answer(u, reqs[u]))
    h.server.close_stage()  # client 5 is now declared dropped
    assert 5 not in h.server.u3
    h.server.requests()
    with pytest.raises(StageError):
        h.server.ingest(client_id=5, message=y5)  # a late masked input is not accepted
    with pytest.raises(StageError):
        h.server.ingest(client_id=5, message=reframe(y5, stage=Stage.UNMASK, body=b""))


def test_duplicate_ids_in_lists_are_rejected() -> None:
    h, reqs = at_stage(Stage.SHARE_KEYS)
    table = msg.decode_key_table(body_of(reqs[0]), active=False, limit=6)
    entries = [table.entry(int(u)) for u in table.ids]
    dup = [*entries[:3], entries[2], *entries[3:5]]
    with pytest.raises(DuplicateEntryError):
        h.clients[0].handle(reframe(reqs[0], body=msg.encode_key_table(dup, active=False)))
    unsorted = [entries[1], entries[0], *entries[2:]]
    with pytest.raises(MalformedMessageError, match="sorted"):
        h.clients[0].handle(reframe(reqs[0], body=msg.encode_key_table(unsorted, active=False)))
    with pytest.raises(DuplicateEntryError):
        msg.decode_id_list(msg.encode_id_list([1, 2, 2]), limit=10, what="U3")
    h4, reqs4 = at_stage(Stage.UNMASK)
    req = msg.decode_unmask_request(body_of(reqs4[0]), limit=6)
    dup_survivors = [req.survivors[0], *req.survivors[:-1]]  # same length, first id twice
    body = msg.encode_id_list(dup_survivors) + body_of(reqs4[0])[4 + 4 * len(req.survivors) :]
    with pytest.raises(DuplicateEntryError):
        h4.clients[0].handle(reframe(reqs4[0], body=body))


def test_duplicate_public_keys_are_rejected() -> None:
    h, reqs = at_stage(Stage.SHARE_KEYS)
    table = msg.decode_key_table(body_of(reqs[0]), active=False, limit=6)
    entries = [table.entry(int(u)) for u in table.ids]
    entries[3] = dataclasses.replace(entries[3], s_pk=entries[4].s_pk)
    with pytest.raises(InvalidKeyError, match="duplicate"):
        h.clients[0].handle(reframe(reqs[0], body=msg.encode_key_table(entries, active=False)))
    # the server refuses a client that copies another's key
    h2 = Harness(config=CFG, ids=list(range(6)), m=8)
    reqs2 = h2.server.requests()
    r1 = h2.answer(1, reqs2[1])
    r2 = h2.answer(2, reqs2[2])
    h2.server.ingest(client_id=1, message=r1)
    c1, s1, _ = msg.decode_advertise(body_of(r1), active=False)
    c2, _, _ = msg.decode_advertise(body_of(r2), active=False)
    copied = reframe(r2, body=msg.encode_advertise(c_pk=c2, s_pk=s1, signature=None))
    with pytest.raises(InvalidKeyError):
        h2.server.ingest(client_id=2, message=copied)


def test_low_order_key_in_the_table_is_rejected_by_the_client() -> None:
    h, reqs = at_stage(Stage.SHARE_KEYS)
    table = msg.decode_key_table(body_of(reqs[0]), active=False, limit=6)
    entries = [table.entry(int(u)) for u in table.ids]
    entries[2] = dataclasses.replace(entries[2], s_pk=(1).to_bytes(32, "little"))
    with pytest.raises(InvalidKeyError):
        h.clients[0].handle(reframe(reqs[0], body=msg.encode_key_table(entries, active=False)))
    # and the server refuses to accept one in an advertisement
    h2 = Harness(config=CFG, ids=list(range(6)), m=8)
    reqs2 = h2.server.requests()
    r = h2.answer(1, reqs2[1])
    c, _, _ = msg.decode_advertise(body_of(r), active=False)
    with pytest.raises(InvalidKeyError):
        h2.server.ingest(
            client_id=1, message=reframe(r, body=msg.encode_advertise(c_pk=c, s_pk=bytes(32), signature=None))
        )


def test_table_without_own_keys_or_with_strangers_is_rejected() -> None:
    from protocols import InconsistentViewError

    h, reqs = at_stage(Stage.SHARE_KEYS)
    table = msg.decode_key_table(body_of(reqs[0]), active=False, limit=6)
    entries = [table.entry(int(u)) for u in table.ids]
    swapped = [dataclasses.replace(entries[0], c_pk=entries[1].c_pk), *entries[1:]]
    with pytest.raises(InconsistentViewError, match="own keys"):
        h.clients[0].handle(reframe(reqs[0], body=msg.encode_key_table(swapped, active=False)))
    h, reqs = at_stage(Stage.SHARE_KEYS)
    stranger = msg.KeyEntry(99, entries[5].c_pk, entries[5].s_pk, None)
    with pytest.raises(InconsistentViewError, match="not selected"):
        h.clients[0].handle(
            reframe(reqs[0], body=msg.encode_key_table([*entries[:5], stranger], active=False))
        )


def test_header_helper_roundtrip() -> None:
    hd = Header(Stage.UNMASK, Kind.REQUEST, SERVER_ID, 7, bytes(range(32)))
    data = pack_message(header=hd, body=[b"ab", memoryview(b"cd")])
    got, body = unpack_message(data)
    assert got == hd and bytes(body) == b"abcd" and len(data) == HEADER_BYTES + 4


@pytest.mark.parametrize("n", [10, 300])
def test_key_table_duplicate_detection_small_and_large(n: int) -> None:
    import os

    rows = b"".join(i.to_bytes(4, "big") + os.urandom(64) for i in range(n))
    assert not msg.KeyTable(rows=rows, signatures=None).has_duplicate_keys()
    r = 3 * msg.KEY_ROW_BYTES
    for dst, src in ((4, r + 36), (r + 36, 36)):  # a c_pk equal to an s_pk; an s_pk equal to another
        forged = bytearray(rows)
        forged[dst : dst + 32] = rows[src : src + 32]
        assert msg.KeyTable(rows=bytes(forged), signatures=None).has_duplicate_keys()


@pytest.mark.parametrize("n", [20, 2000])
def test_id_list_checks_small_and_large(n: int) -> None:
    ids = list(range(0, 3 * n, 3))
    assert msg.decode_id_list(msg.encode_id_list(ids), limit=n, what="U3") == tuple(ids)
    dup = [*ids[:-1], ids[-2]]
    with pytest.raises(DuplicateEntryError):
        msg.decode_id_list(msg.encode_id_list(sorted(dup)), limit=n, what="U3")
    swapped = [ids[1], ids[0], *ids[2:]]
    with pytest.raises(MalformedMessageError, match="sorted"):
        msg.decode_id_list(msg.encode_id_list(swapped), limit=n, what="U3")
