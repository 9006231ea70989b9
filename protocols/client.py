"""Client side of SecAgg / SecAgg+ as an explicit state machine (one object per client per round).

Stages follow Bonawitz et al. (CCS 2017, section 4 / figure 4) with the SecAgg+ neighbourhoods of
Bell et al. (CCS 2020):

0. ADVERTISE_KEYS: check the server's parameters against this client's expectations, draw fresh
   X25519 key pairs (c, s) and a 32-byte self-mask seed b from the OS RNG; send c_pk, s_pk
   (Ed25519-signed in the active variant).
1. SHARE_KEYS: check the key table (own keys present, no duplicates, no low-order keys, valid
   signatures, at least t keys), derive the session id and the graph, Shamir-share s_sk and b
   t-of-(k+1) over the closed neighbourhood, encrypt each neighbour's pair of shares with
   AES-256-GCM under HKDF(X25519(c_sk, c_pk_v)), AAD = (session, sender, receiver, stage).
2. COLLECT_MASKED_INPUT: decrypt and check the shares received, then send
   ``y = x + PRG(b) + sum_v sign(u - v) PRG(s_uv) mod 2^bits`` over the neighbours that shared.
3. CONSISTENCY_CHECK (active only): check U3 and sign it.
4. UNMASK: check that the survivor and dropped lists are disjoint and match what this client
   saw (and, in the active variant, carry t valid signatures on the U3 it signed); in a SecAgg+
   graph also that at most n_D selected clients are missing from U3 and that U3's induced graph
   is connected (else the server could unmask a component's sum); reveal b-shares of survivors
   and s_sk-shares of dropped neighbours -- never both for one client.

The SHARE_KEYS response carries a hash commitment to b (bound to the session id), which the
server checks every reconstructed b against. The server's n and k are checked against this
client's caps (``config.max_n``, ``config.max_k``) before any parameter computation.

A message for another stage raises :class:`StageError` (or :class:`ReplayError` if that stage was
already handled) and leaves the state unchanged. Any security or threshold failure aborts the
session: secrets are wiped and every later message is refused.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from protocols import messages as msg
from protocols.crypto import (
    KeyPair,
    aead_decrypt,
    aead_encrypt,
    agree,
    generate_key_pair,
    hkdf_sha256,
    label,
    pack_ids,
    parse_x25519_public,
    sign,
    verify_signature,
)
from protocols.errors import (
    AuthenticationError,
    InconsistentViewError,
    InvalidKeyError,
    MalformedMessageError,
    ProtocolConfigError,
    ProtocolError,
    ProtocolMessageError,
    ReplayError,
    SessionAbortedError,
    SessionMismatchError,
    StageError,
    ThresholdError,
)
from protocols.graph import Graph, build_graph, check_survivor_graph, graph_seed
from protocols.params import MAX_CLIENT_ID, SecAggConfig, SecAggParams, check_config_fields, check_limits
from protocols.prg import MaskExpander, derive_mask_key
from protocols.scratch import scratch
from protocols.shamir import secret_to_int, split_many
from protocols.stages import ClientState, Stage
from protocols.wire import SERVER_ID, Header, Kind, pack_message, unpack_message

__all__ = ["SecAggClientSession", "share_key"]

_ACCEPTS: dict[ClientState, Stage] = {
    ClientState.AWAIT_SETUP: Stage.ADVERTISE_KEYS,
    ClientState.ADVERTISED: Stage.SHARE_KEYS,
    ClientState.SHARED: Stage.COLLECT_MASKED_INPUT,
    ClientState.CHECKED: Stage.UNMASK,
}
_AFTER: dict[Stage, ClientState] = {
    Stage.ADVERTISE_KEYS: ClientState.ADVERTISED,
    Stage.SHARE_KEYS: ClientState.SHARED,
    Stage.COLLECT_MASKED_INPUT: ClientState.MASKED,
    Stage.CONSISTENCY_CHECK: ClientState.CHECKED,
    Stage.UNMASK: ClientState.DONE,
}
_SHARE_ENC_LABEL = label("share-enc")
_PAIR = struct.Struct(">II")


def share_key(*, shared_secret: bytes, session_id: bytes, u: int, v: int) -> bytes:
    """AES-256-GCM key for the shares exchanged between ``u`` and ``v`` (both directions).

    Each direction carries one message under a fresh random nonce, and the AAD names sender and
    receiver, so one key per pair suffices.

    Args:
        shared_secret: X25519(c_sk_u, c_pk_v) (= X25519(c_sk_v, c_pk_u)).
        session_id: Session id (HKDF salt).
        u: One client.
        v: The other client.

    Returns:
        32-byte key.
    """
    lo, hi = (u, v) if u < v else (v, u)
    return hkdf_sha256(
        ikm=shared_secret, salt=session_id, info=_SHARE_ENC_LABEL + _PAIR.pack(lo, hi), length=32
    )


class SecAggClientSession:
    """One client's side of one aggregation round.

    Args:
        client_id: This client's id (``0 <= id <= 2**32 - 2``).
        config: What this client expects: mode, assumptions (corrupt fraction, dropout rate,
            targets) and active flag must equal the server's; ``n``, ``k``, ``t``, ``bits`` are
            checked when set, otherwise the server's values are accepted if they validate under
            this client's assumptions.
        round_idx: The round this session is for.
        vector_length: Expected input length ``m`` (checked against the server's) or ``None``.
        context: Expected application context bytes (checked) or ``None`` to accept any.
        signing_key: Long-term Ed25519 key (active variant).
        pki: Ed25519 verification key of every client id (active variant).
        min_bits: Smallest acceptable bit width when ``config.bits`` is ``None``.

    Raises:
        ProtocolConfigError: On invalid arguments (before any message is processed).
    """

    def __init__(
        self,
        *,
        client_id: int,
        config: SecAggConfig,
        round_idx: int,
        vector_length: int | None = None,
        context: bytes | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        pki: Mapping[int, bytes] | None = None,
        min_bits: int = 1,
    ) -> None:
        if (
            isinstance(client_id, bool)
            or not isinstance(client_id, int)
            or not 0 <= client_id <= MAX_CLIENT_ID
        ):
            raise ProtocolConfigError(
                f"client_id must be an integer in [0, {MAX_CLIENT_ID}], got {client_id!r}"
            )
        if not isinstance(round_idx, int) or not 0 <= round_idx < 2**64:
            raise ProtocolConfigError(f"round_idx must be an integer in [0, 2^64), got {round_idx!r}")
        check_config_fields(config)
        if vector_length is not None and vector_length < 1:
            raise ProtocolConfigError(f"vector_length must be >= 1, got {vector_length}")
        if config.active and (signing_key is None or pki is None):
            raise ProtocolConfigError("the active variant needs signing_key and pki")
        if not 1 <= min_bits <= 64:
            raise ProtocolConfigError(f"min_bits must be in [1, 64], got {min_bits}")
        self.client_id = client_id
        self.round_idx = round_idx
        self.expected = config
        self.state = ClientState.AWAIT_SETUP
        self.params: SecAggParams | None = None
        self.vector_length: int | None = vector_length
        self.session_id: bytes | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._context = context
        self._signing_key = signing_key
        self._pki = dict(pki) if pki is not None else None
        self._min_bits = min_bits
        self._handled: set[Stage] = set()
        # secrets and per-session state (wiped on completion or abort)
        self._c: KeyPair | None = None
        self._s: KeyPair | None = None
        self._b: bytes | None = None
        self._pre_session: bytes | None = None
        self._participants: tuple[int, ...] = ()
        self._participant_set: frozenset[int] = frozenset()
        self._u1: frozenset[int] = frozenset()
        self._graph: Graph | None = None
        self._peers: dict[int, X25519PublicKey] = {}  # neighbour -> its parsed s public key
        self._inbound_keys: dict[int, bytes] = {}
        self._own_shares: tuple[int, int] | None = None
        self._received: dict[int, tuple[int, int]] = {}
        self._signed_u3: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ public
    @property
    def expected_stage(self) -> Stage | None:
        """The only stage whose request is accepted now (``None`` when done or aborted)."""
        if self.state == ClientState.MASKED:
            assert self.params is not None
            return Stage.CONSISTENCY_CHECK if self.params.active else Stage.UNMASK
        return _ACCEPTS.get(self.state)

    def handle(self, message: bytes, *, value: np.ndarray | None = None) -> bytes:
        """Process one server request and return the response.

        Args:
            message: Request bytes from the server.
            value: This client's encoded input (uint values in ``[0, 2**bits)``, length m);
                required for the COLLECT_MASKED_INPUT stage and ignored otherwise.

        Returns:
            Response bytes for the server.

        Raises:
            SessionAbortedError: If the session already failed.
            ProtocolMessageError: If the message is malformed, for another session, out of order or
                replayed (state unchanged).
            SecurityError, AbortError, ProtocolConfigError: On failed checks; the session is aborted.
        """
        if self.state == ClientState.ABORTED:
            raise SessionAbortedError(f"client {self.client_id}: session aborted earlier; refusing messages")
        if self.state == ClientState.DONE:
            raise ReplayError(f"client {self.client_id}: session finished; refusing further messages")
        header, body = unpack_message(message)
        if header.kind != Kind.REQUEST or header.sender != SERVER_ID:
            raise MalformedMessageError("clients only accept requests from the server")
        if header.receiver != self.client_id:
            raise MalformedMessageError(
                f"request addressed to client {header.receiver}, not {self.client_id}"
            )
        expected = self.expected_stage
        if header.stage != expected:
            if header.stage in self._handled:
                raise ReplayError(f"stage {header.stage.name} was already handled (replay or duplicate)")
            raise StageError(
                f"expected a {expected.name if expected else 'no'} request, got {header.stage.name}"
            )
        self._check_session(header, body)
        if header.stage == Stage.COLLECT_MASKED_INPUT:
            value = self._check_value(value)
        body_out: bytes | list[bytes | memoryview]
        try:
            if header.stage == Stage.ADVERTISE_KEYS:
                body_out = self._advertise(body)
            elif header.stage == Stage.SHARE_KEYS:
                body_out = self._share_keys(body)
            elif header.stage == Stage.COLLECT_MASKED_INPUT:
                assert value is not None
                body_out = self._masked_input(body, value)
            elif header.stage == Stage.CONSISTENCY_CHECK:
                body_out = self._consistency(body)
            else:
                body_out = self._unmask(body)
        except ProtocolMessageError:
            raise
        except ProtocolError:
            self._abort()
            raise
        self._handled.add(header.stage)
        self._advance(header.stage)
        session = self._pre_session if header.stage == Stage.ADVERTISE_KEYS else self.session_id
        assert session is not None
        out = pack_message(
            header=Header(header.stage, Kind.RESPONSE, self.client_id, SERVER_ID, session), body=body_out
        )
        self.bytes_in += len(message)
        self.bytes_out += len(out)
        return out

    # ------------------------------------------------------------------ checks
    def _check_session(self, header: Header, body: memoryview) -> None:
        if header.stage == Stage.ADVERTISE_KEYS:
            expected = msg.setup_session_id(body)
        elif header.stage == Stage.SHARE_KEYS:
            expected = self._pre_session  # type: ignore[assignment]
        else:
            expected = self.session_id  # type: ignore[assignment]
        if header.session != expected:
            raise SessionMismatchError(f"{header.stage.name} request belongs to another session")

    def _check_value(self, value: np.ndarray | None) -> np.ndarray:
        assert self.params is not None and self.vector_length is not None
        if value is None:
            raise ProtocolConfigError("the COLLECT_MASKED_INPUT stage needs this client's encoded value")
        v = np.asarray(value)
        if v.ndim != 1 or v.shape[0] != self.vector_length:
            raise ProtocolConfigError(
                f"value must be a flat vector of length {self.vector_length}, got shape {v.shape}"
            )
        if not np.issubdtype(v.dtype, np.integer):
            raise ProtocolConfigError(f"value must be an integer array (an encoder's output), got {v.dtype}")
        signed_below_zero = v.dtype.kind == "i" and v.size and int(v.min()) < 0
        if signed_below_zero or (v.size and int(v.max()) >= (1 << self.params.bits)):
            raise ProtocolConfigError(f"value entries must lie in [0, 2^{self.params.bits})")
        return v

    # ------------------------------------------------------------------ stages
    def _advertise(self, body: memoryview) -> bytes:
        setup = msg.decode_setup(body)
        if setup.round_idx != self.round_idx:
            raise SessionMismatchError(
                f"setup is for round {setup.round_idx}, this session is round {self.round_idx}"
            )
        srv, exp = setup.config, self.expected
        # before anything that costs more than parsing: the server chooses n and k
        check_limits(srv, max_n=exp.max_n, max_k=exp.max_k)
        if self.client_id not in setup.participants:
            raise MalformedMessageError(f"setup does not list client {self.client_id}")
        for name in (
            "mode",
            "active",
            "corrupt_fraction",
            "dropout_rate",
            "security_bits",
            "correctness_bits",
        ):
            if getattr(srv, name) != getattr(exp, name):
                raise ProtocolConfigError(
                    f"server's {name}={getattr(srv, name)!r} differs from expected {getattr(exp, name)!r}"
                )
        for name in ("n", "k", "t", "bits"):
            if getattr(exp, name) is not None and getattr(srv, name) != getattr(exp, name):
                raise ProtocolConfigError(
                    f"server's {name}={getattr(srv, name)!r} differs from expected {getattr(exp, name)!r}"
                )
        assert srv.bits is not None
        if srv.bits < self._min_bits:
            raise ProtocolConfigError(
                f"server's bits={srv.bits} is below this client's minimum {self._min_bits}"
            )
        if self.vector_length is not None and setup.vector_length != self.vector_length:
            raise ProtocolConfigError(
                f"server's vector_length={setup.vector_length} differs from {self.vector_length}"
            )
        if self._context is not None and setup.context != self._context:
            raise ProtocolConfigError("server's context differs from the expected one")
        # validates the server's (k, t) against the shared assumptions, under this client's caps
        params = replace(srv, max_n=exp.max_n, max_k=exp.max_k).resolve()
        # commit
        self.params = params
        self.vector_length = setup.vector_length
        self._participants = setup.participants
        self._participant_set = frozenset(setup.participants)
        self._pre_session = msg.setup_session_id(body)
        self._c = generate_key_pair()
        self._s = generate_key_pair()
        self._b = os.urandom(32)
        sig = None
        if params.active:
            assert self._signing_key is not None
            sig = sign(
                key=self._signing_key,
                message=msg.advertise_statement(
                    pre_session=self._pre_session,
                    client_id=self.client_id,
                    c_pk=self._c.public_bytes,
                    s_pk=self._s.public_bytes,
                ),
            )
        return msg.encode_advertise(c_pk=self._c.public_bytes, s_pk=self._s.public_bytes, signature=sig)

    def _share_keys(self, body: memoryview) -> bytes:
        p = self.params
        assert p is not None and self._c is not None and self._s is not None and self._b is not None
        assert self._pre_session is not None
        table = msg.decode_key_table(body, active=p.active, limit=p.n)
        u1 = frozenset(table.ids.tolist())
        if not u1 <= self._participant_set:
            raise InconsistentViewError("key table lists clients that were not selected")
        own_row = table.index_of(self.client_id)
        own = table.entry_at(own_row) if own_row is not None else None
        if own is None or own.c_pk != self._c.public_bytes or own.s_pk != self._s.public_bytes:
            raise InconsistentViewError("key table does not carry this client's own keys")
        if len(table) < p.t:
            raise ThresholdError(f"only {len(table)} clients advertised keys; t={p.t}")
        if table.has_duplicate_keys():
            raise InvalidKeyError("key table contains duplicate public keys")
        session_id = msg.session_id_from_rows(pre_session=self._pre_session, rows=table.rows)
        graph = build_graph(nodes=self._participants, k=p.k, seed=graph_seed(session_id=session_id))
        rows_of = table.rows_of(sorted(graph.neighbours(self.client_id)))
        neighbours = sorted(rows_of)
        if len(neighbours) + 1 < p.t:
            raise ThresholdError(
                f"only {len(neighbours)} neighbours advertised keys; t={p.t} needs {p.t - 1}"
            )
        peer_c_keys: dict[int, X25519PublicKey] = {}
        peer_s_keys: dict[int, X25519PublicKey] = {}
        for v in neighbours:
            row = rows_of[v]
            c_pk, s_pk = table.keys_at(row)
            peer_c_keys[v] = parse_x25519_public(c_pk)  # checked once, parsed once
            peer_s_keys[v] = parse_x25519_public(s_pk)
            if p.active:
                sig = table.signature_at(row)
                assert self._pki is not None and sig is not None
                vk = self._pki.get(v)
                if vk is None:
                    raise AuthenticationError(f"no verification key for client {v}")
                verify_signature(
                    public=vk,
                    message=msg.advertise_statement(
                        pre_session=self._pre_session, client_id=v, c_pk=c_pk, s_pk=s_pk
                    ),
                    signature=sig,
                )
        holders = sorted([*neighbours, self.client_id])
        xs = [h + 1 for h in holders]
        s_shares, b_shares = split_many(
            secrets=[secret_to_int(self._s.private_bytes), secret_to_int(self._b)], t=p.t, xs=xs
        )
        blobs = []
        inbound_keys: dict[int, bytes] = {}
        own_shares = None
        for h, s_sh, b_sh in zip(holders, s_shares, b_shares, strict=True):
            if h == self.client_id:
                own_shares = (s_sh, b_sh)
                continue
            secret = agree(private=self._c.private, public=peer_c_keys[h])
            key = share_key(shared_secret=secret, session_id=session_id, u=self.client_id, v=h)
            inbound_keys[h] = key
            pt = msg.share_plaintext(sender=self.client_id, receiver=h, s_share=s_sh, b_share=b_sh)
            aad = msg.share_aad(
                session_id=session_id, sender=self.client_id, receiver=h, stage=Stage.SHARE_KEYS
            )
            blobs.append((h, aead_encrypt(key=key, plaintext=pt, aad=aad)))
        commitment = msg.b_commitment(session_id=session_id, client_id=self.client_id, seed=self._b)
        # commit
        self.session_id = session_id
        self._graph = graph
        self._u1 = u1
        self._peers = peer_s_keys
        self._inbound_keys = inbound_keys
        self._own_shares = own_shares
        return msg.encode_share_keys_response(commitment=commitment, blobs=blobs)

    def _masked_input(self, body: memoryview, value: np.ndarray) -> bytes | list[bytes | memoryview]:
        p = self.params
        sid = self.session_id
        assert p is not None and sid is not None and self._c is not None and self._s is not None
        assert self._b is not None and self.vector_length is not None
        rows = msg.decode_blobs(body, limit=p.n)
        received: dict[int, tuple[int, int]] = {}
        for v, blob in rows:
            if v not in self._peers:
                raise InconsistentViewError(
                    f"received shares from client {v}, which is not a neighbour in U1"
                )
            aad = msg.share_aad(session_id=sid, sender=v, receiver=self.client_id, stage=Stage.SHARE_KEYS)
            pt = aead_decrypt(key=self._inbound_keys[v], blob=blob, aad=aad)
            try:
                sender, receiver, s_sh, b_sh = msg.parse_share_plaintext(pt)
            except ProtocolMessageError as exc:
                raise AuthenticationError(f"authenticated share from {v} is malformed") from exc
            if sender != v or receiver != self.client_id:
                raise AuthenticationError(f"share from {v} names sender {sender} and receiver {receiver}")
            received[v] = (s_sh, b_sh)
        if len(received) + 1 < p.t:
            raise ThresholdError(f"only {len(received)} neighbours shared keys; t={p.t} needs {p.t - 1}")
        y = self._mask(value=value, peers=sorted(received), session_id=sid)
        # commit
        self._received = received
        self._inbound_keys = {}
        return msg.encode_masked(y=y, bits=p.bits)

    def _mask(self, *, value: np.ndarray, peers: list[int], session_id: bytes) -> np.ndarray:
        p = self.params
        assert (
            p is not None and self._s is not None and self._b is not None and self.vector_length is not None
        )
        expander = MaskExpander(length=self.vector_length, bits=p.bits)
        u = self.client_id
        masks = [
            (derive_mask_key(seed=self._b, session_id=session_id, purpose="self-mask", ids=pack_ids([u])), 1)
        ]
        for v in peers:
            seed = agree(private=self._s.private, public=self._peers[v])
            key = derive_mask_key(
                seed=seed, session_id=session_id, purpose="pair-mask", ids=pack_ids([min(u, v), max(u, v)])
            )
            masks.append((key, 1 if u > v else -1))
        # the masked vector only lives until handle() has framed it (one copy into the message),
        # so it is written into this thread's scratch buffer rather than a fresh array
        out = scratch(name="masked-vector", nbytes=self.vector_length * expander.dtype.itemsize)
        return expander.mask_vector(
            value=np.asarray(value), masks=masks, bits=p.bits, out=out.view(expander.dtype.newbyteorder("="))
        )

    def _check_survivor_list(self, survivors: tuple[int, ...]) -> None:
        p = self.params
        assert p is not None and self._graph is not None
        s = set(survivors)
        if self.client_id not in s:
            raise InconsistentViewError("survivor list omits this client although it sent its masked input")
        if not s <= self._u1:
            raise InconsistentViewError("survivor list names clients that did not advertise keys")
        shared_with_me = set(self._received)
        nbr_survivors = s & set(self._peers)
        if not nbr_survivors <= shared_with_me:
            missing = sorted(nbr_survivors - shared_with_me)
            raise InconsistentViewError(f"U3 is not a subset of U2: neighbours {missing} never shared keys")
        if len(s) < p.t:
            raise ThresholdError(f"only {len(s)} survivors; t={p.t}")
        if len(nbr_survivors) + 1 < p.t:
            raise ThresholdError(f"only {len(nbr_survivors)} surviving neighbours; t={p.t} needs {p.t - 1}")
        # SecAgg+: more dropouts than designed, or a split survivor graph, would let the server
        # rebuild the sum of a component; this client knows the graph and U3 and refuses
        check_survivor_graph(graph=self._graph, survivors=s, max_dropouts=p.n_dropout)

    def _consistency(self, body: memoryview) -> bytes:
        p = self.params
        assert p is not None and self.session_id is not None and self._signing_key is not None
        u3 = msg.decode_id_list(body, limit=p.n, what="U3")
        self._check_survivor_list(u3)
        sig = sign(
            key=self._signing_key, message=msg.consistency_statement(session_id=self.session_id, survivors=u3)
        )
        self._signed_u3 = u3
        return msg.encode_signature(sig)

    def _unmask(self, body: memoryview) -> bytes:
        p = self.params
        assert p is not None and self.session_id is not None and self._own_shares is not None
        req = msg.decode_unmask_request(body, limit=p.n)
        survivors, dropped = set(req.survivors), set(req.dropped)
        overlap = survivors & dropped
        if overlap:
            raise InconsistentViewError(f"clients {sorted(overlap)} are listed as both survivors and dropped")
        if p.active and req.survivors != self._signed_u3:
            raise InconsistentViewError("survivor list differs from the U3 this client signed")
        self._check_survivor_list(req.survivors)
        if not dropped <= self._u1:
            raise InconsistentViewError("dropped list names clients that did not advertise keys")
        shared_with_me = set(self._received)
        neighbours = set(self._peers)
        nbr_dropped = dropped & neighbours
        if not nbr_dropped <= shared_with_me:
            raise InconsistentViewError(
                f"dropped neighbours {sorted(nbr_dropped - shared_with_me)} never shared keys"
            )
        unclassified = shared_with_me - survivors - dropped
        if unclassified:
            raise InconsistentViewError(
                f"neighbours {sorted(unclassified)} are neither survivors nor dropped"
            )
        if p.active:
            assert self._pki is not None and self._signed_u3 is not None
            closed = neighbours | {self.client_id}
            statement = msg.consistency_statement(session_id=self.session_id, survivors=self._signed_u3)
            valid = 0
            for signer, sig in req.signatures:
                if signer not in closed or signer not in survivors:
                    raise InconsistentViewError(f"signature from {signer}, who is not a surviving neighbour")
                vk = self._pki.get(signer)
                if vk is None:
                    raise AuthenticationError(f"no verification key for client {signer}")
                verify_signature(public=vk, message=statement, signature=sig)
                valid += 1
            if valid < p.t:
                raise ThresholdError(f"only {valid} consistency signatures; t={p.t}")
        b_out = sorted([(v, self._received[v][1]) for v in survivors & shared_with_me])
        b_out.append((self.client_id, self._own_shares[1]))
        b_out.sort()
        s_out = sorted((v, self._received[v][0]) for v in nbr_dropped)
        body_out = msg.encode_unmask_response(b_shares=b_out, s_shares=s_out)
        self.state = ClientState.DONE
        self._wipe()
        return body_out

    # ------------------------------------------------------------------ lifecycle
    def _advance(self, stage: Stage) -> None:
        self.state = _AFTER[stage]

    def _wipe(self) -> None:
        self._c = None
        self._s = None
        self._b = None
        self._own_shares = None
        self._received = {}
        self._inbound_keys = {}

    def _abort(self) -> None:
        self.state = ClientState.ABORTED
        self._wipe()

    @property
    def aborted(self) -> bool:
        """Whether the session failed."""
        return self.state == ClientState.ABORTED
