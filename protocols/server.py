"""Server side of SecAgg / SecAgg+: drives the stages, tracks U1..U5 and unmasks the sum.

The server never sees an input in the clear: it keeps a running sum of masked vectors, and at
the end reconstructs the self-mask seed b_u of every survivor (checked against the commitment
u sent with its shares) and the mask key s_sk_v of every client that shared keys but sent no
masked input (checked against the advertised s_pk_v), removes the masks and returns
``sum_{u in U3} x_u mod 2**bits``. When the t shares with the smallest x fail the check, other
t-subsets of the shares received are tried and the holders of shares off the polynomial are
reported (:attr:`SecAggResult.bad_share_holders`); if none passes, the round aborts with
:class:`ReconstructionError`. A bad share never yields a wrong sum.

In a SecAgg+ graph the server aborts before the unmasking stage when more than ``n_D`` selected
clients are missing from U3 or U3's induced graph is disconnected
(:func:`protocols.graph.check_survivor_graph`).

Use::

    server = SecAggServerSession(config=cfg, round_idx=r, participants=ids, vector_length=m)
    while not server.done:
        requests = server.requests()           # client id -> request bytes for server.stage
        server.receive(responses=transport(server.stage, requests))  # absent = dropped
    result = server.result()

Before every stage the survivor count is checked against t; the unmasking stage is only started
when every needed secret can be reconstructed from the clients still present, so a round that
cannot finish aborts (:class:`ThresholdError`) without asking anyone for a share.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocols import messages as msg
from protocols.crypto import (
    agree,
    check_x25519_public_key,
    derive_x25519_public,
    pack_ids,
    verify_signature,
)
from protocols.errors import (
    InvalidKeyError,
    MalformedMessageError,
    ProtocolConfigError,
    ProtocolError,
    ReconstructionError,
    ReplayError,
    SessionAbortedError,
    SessionMismatchError,
    StageError,
    ThresholdError,
)
from protocols.graph import Graph, build_graph, check_survivor_graph, graph_seed
from protocols.params import MAX_CLIENT_ID, SecAggConfig, SecAggParams
from protocols.prg import MaskExpander, derive_mask_key, word_dtype
from protocols.shamir import int_to_secret, reconstruct_verified
from protocols.stages import ServerState, Stage, stage_sequence
from protocols.wire import SERVER_ID, Header, Kind, pack_message, unpack_message

__all__ = ["SecAggServerSession", "SecAggResult"]


@dataclass
class SecAggResult:
    """Outcome of one secure aggregation.

    Attributes:
        total: ``sum_{u in survivors} x_u mod 2**bits`` as uint64.
        survivors: U3, the clients whose inputs are in ``total`` (sorted).
        dropped: Selected clients whose inputs are not in ``total`` (sorted).
        params: The parameters used.
        metrics: Byte counts, set sizes and timings.
        bad_share_holders: Clients that returned a share off its polynomial (detected through
            the commitment check; their shares were left out and the total is still exact).
    """

    total: np.ndarray
    survivors: list[int]
    dropped: list[int]
    params: SecAggParams
    metrics: dict[str, float | int | str] = field(default_factory=dict)
    bad_share_holders: list[int] = field(default_factory=list)


class SecAggServerSession:
    """Server state machine for one round.

    Args:
        config: Configuration; ``n`` may be ``None`` (taken from ``participants``), ``bits`` must be set.
        round_idx: Round number (part of the session id).
        participants: Distinct ids of the selected clients.
        vector_length: Number of words ``m`` per input.
        context: Opaque application bytes bound into the session id (e.g. encoder parameters).
        pki: Ed25519 verification key per client id (required in the active variant).

    Raises:
        ProtocolConfigError: On invalid arguments or parameters (before any message is produced).
    """

    def __init__(
        self,
        *,
        config: SecAggConfig,
        round_idx: int,
        participants: Sequence[int],
        vector_length: int,
        context: bytes = b"",
        pki: Mapping[int, bytes] | None = None,
    ) -> None:
        ids = sorted(participants)
        if len(set(ids)) != len(ids):
            raise ProtocolConfigError("participants must be distinct")
        for cid in ids:
            if isinstance(cid, bool) or not isinstance(cid, int) or not 0 <= cid <= MAX_CLIENT_ID:
                raise ProtocolConfigError(f"client ids must be integers in [0, {MAX_CLIENT_ID}], got {cid!r}")
        if config.bits is None:
            raise ProtocolConfigError("the server's config must set bits")
        if not isinstance(round_idx, int) or not 0 <= round_idx < 2**64:
            raise ProtocolConfigError(f"round_idx must be an integer in [0, 2^64), got {round_idx!r}")
        if not isinstance(vector_length, int) or vector_length < 1:
            raise ProtocolConfigError(f"vector_length must be an integer >= 1, got {vector_length!r}")
        if len(context) > msg.MAX_CONTEXT_BYTES:
            raise ProtocolConfigError("context must be at most 64 KiB")
        params = config.resolve(n=len(ids))
        if params.active:
            if pki is None or not set(ids) <= set(pki):
                raise ProtocolConfigError(
                    "the active variant needs a verification key (pki) for every participant"
                )
        self.params = params
        self.round_idx = round_idx
        self.participants: tuple[int, ...] = tuple(ids)
        self.vector_length = vector_length
        self._pki = dict(pki) if pki is not None else None
        full = SecAggConfig(
            mode=params.mode,
            n=params.n,
            k=params.k,
            t=params.t,
            bits=params.bits,
            active=params.active,
            corrupt_fraction=params.corrupt_fraction,
            dropout_rate=params.dropout_rate,
            security_bits=config.security_bits,
            correctness_bits=config.correctness_bits,
        )
        setup = msg.Setup(round_idx, full, vector_length, os.urandom(32), self.participants, bytes(context))
        self._setup_body = msg.encode_setup(setup)
        self.pre_session_id = msg.setup_session_id(self._setup_body)
        self.session_id: bytes | None = None
        self.state = ServerState.RUNNING
        self._stages = stage_sequence(active=params.active)
        self._stage_idx = 0
        self._asked: set[int] = set()
        self._answered: dict[int, object] = {}
        # sets U1..U5 (client ids)
        self.u1: tuple[int, ...] = ()
        self.u2: tuple[int, ...] = ()
        self.u3: tuple[int, ...] = ()
        self.u4: tuple[int, ...] = ()
        self.u5: tuple[int, ...] = ()
        self._keys: dict[int, tuple[bytes, bytes, bytes | None]] = {}
        self._seen_keys: set[bytes] = set()
        self._table_body = b""
        self._u1_set: frozenset[int] = frozenset()
        self._u3_set: frozenset[int] = frozenset()
        self._dropped_set: frozenset[int] = frozenset()
        self._graph: Graph | None = None
        self._blobs: dict[int, list[tuple[int, bytes]]] = {}
        self._commitments: dict[int, bytes] = {}
        self._sum: np.ndarray | None = None
        self._u3_sigs: dict[int, bytes] = {}
        self._result: SecAggResult | None = None
        self.bytes_in: dict[int, int] = {cid: 0 for cid in ids}
        self.bytes_out: dict[int, int] = {cid: 0 for cid in ids}
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ driving
    @property
    def stage(self) -> Stage:
        """The current stage.

        Raises:
            SessionAbortedError: If the session aborted.
            StageError: If the session is done.
        """
        self._require_running()
        return self._stages[self._stage_idx]

    @property
    def done(self) -> bool:
        """Whether the sum is available."""
        return self.state == ServerState.DONE

    def _require_running(self) -> None:
        if self.state == ServerState.ABORTED:
            raise SessionAbortedError("server session aborted")
        if self.state == ServerState.DONE:
            raise StageError("server session already finished")

    def requests(self) -> dict[int, bytes]:
        """Produce the request of the current stage for every client still taking part.

        Returns:
            Request bytes by client id.

        Raises:
            SessionAbortedError: If the session aborted.
        """
        stage = self.stage
        t0 = time.perf_counter()
        if stage == Stage.ADVERTISE_KEYS:
            out = {u: self._frame(stage, u, self.pre_session_id, self._setup_body) for u in self.participants}
        elif stage == Stage.SHARE_KEYS:
            body = self._table_body
            out = {u: self._frame(stage, u, self.pre_session_id, body) for u in self.u1}
        elif stage == Stage.COLLECT_MASKED_INPUT:
            assert self.session_id is not None
            inbox: dict[int, list[tuple[int, bytes]]] = {u: [] for u in self.u2}
            for sender in self.u2:
                for receiver, blob in self._blobs[sender]:
                    if receiver in inbox:
                        inbox[receiver].append((sender, blob))
            out = {
                u: self._frame(stage, u, self.session_id, msg.encode_blobs(sorted(inbox[u]))) for u in self.u2
            }
        elif stage == Stage.CONSISTENCY_CHECK:
            assert self.session_id is not None
            body = msg.encode_id_list(self.u3)
            out = {u: self._frame(stage, u, self.session_id, body) for u in self.u3}
        else:
            assert self.session_id is not None and self._graph is not None
            dropped = tuple(sorted(set(self.u2) - set(self.u3)))
            targets = self.u4 if self.params.active else self.u3
            out = {}
            for u in targets:
                sigs: tuple[tuple[int, bytes], ...] = ()
                if self.params.active:
                    closed = self._graph.closed_neighbours(u)
                    sigs = tuple(sorted((v, s) for v, s in self._u3_sigs.items() if v in closed))
                req = msg.UnmaskRequest(self.u3, dropped, sigs)
                out[u] = self._frame(stage, u, self.session_id, msg.encode_unmask_request(req))
        self._asked = set(out)
        self._answered = {}
        self.timings[f"requests/{stage.name.lower()}"] = time.perf_counter() - t0
        return out

    def _frame(self, stage: Stage, receiver: int, session: bytes, body: bytes) -> bytes:
        data = pack_message(header=Header(stage, Kind.REQUEST, SERVER_ID, receiver, session), body=body)
        self.bytes_out[receiver] += len(data)
        return data

    def receive(self, *, responses: Mapping[int, bytes], drop_invalid: bool = False) -> None:
        """Ingest all responses of the current stage and close it (absent clients dropped).

        Args:
            responses: Response bytes by the id the transport received them from.
            drop_invalid: Treat a client whose response is rejected as dropped instead of raising.

        Raises:
            ProtocolMessageError, SecurityError: On a rejected response (unless ``drop_invalid``).
            ThresholdError: If fewer than ``t`` clients remain; the session aborts.
        """
        for cid in sorted(responses):
            try:
                self.ingest(client_id=cid, message=responses[cid])
            except ProtocolError:
                if not drop_invalid:
                    raise
        self.close_stage()

    def ingest(self, *, client_id: int, message: bytes) -> None:
        """Validate and store one client's response to the current stage.

        Args:
            client_id: The id the transport received the message from.
            message: Response bytes.

        Raises:
            SessionAbortedError: If the session aborted.
            MalformedMessageError, TruncatedMessageError, VersionError: On framing errors.
            StageError: If the response is for another stage (e.g. a masked input arriving after
                its sender was declared dropped) or from a client not asked in this stage.
            ReplayError: If this client already answered this stage.
            SessionMismatchError: If the response belongs to another session.
            SecurityError: On invalid keys or signatures.
        """
        stage = self.stage
        header, body = unpack_message(message)
        if header.kind != Kind.RESPONSE or header.receiver != SERVER_ID:
            raise MalformedMessageError("the server only accepts responses addressed to it")
        if header.sender != client_id:
            raise MalformedMessageError(f"response from {client_id} claims to be from {header.sender}")
        if header.stage != stage:
            raise StageError(f"response for {header.stage.name} while the server is in {stage.name}")
        if client_id not in self._asked:
            raise StageError(f"client {client_id} was not asked in stage {stage.name}")
        if client_id in self._answered:
            raise ReplayError(f"client {client_id} already answered stage {stage.name}")
        expected = self.pre_session_id if stage == Stage.ADVERTISE_KEYS else self.session_id
        if header.session != expected:
            raise SessionMismatchError(f"response from {client_id} belongs to another session")
        p = self.params
        if stage == Stage.ADVERTISE_KEYS:
            c_pk, s_pk, sig = msg.decode_advertise(body, active=p.active)
            check_x25519_public_key(c_pk)
            check_x25519_public_key(s_pk)
            if p.active:
                assert self._pki is not None and sig is not None
                verify_signature(
                    public=self._pki[client_id],
                    message=msg.advertise_statement(
                        pre_session=self.pre_session_id, client_id=client_id, c_pk=c_pk, s_pk=s_pk
                    ),
                    signature=sig,
                )
            if c_pk == s_pk or c_pk in self._seen_keys or s_pk in self._seen_keys:
                raise InvalidKeyError(f"client {client_id} advertised a duplicate public key")
            self._seen_keys.update((c_pk, s_pk))
            record: object = (c_pk, s_pk, sig)
        elif stage == Stage.SHARE_KEYS:
            assert self._graph is not None
            commitment, rows = msg.decode_share_keys_response(body, limit=p.n)
            expected_to = sorted(self._graph.neighbours(client_id) & self._u1_set)
            if [r for r, _ in rows] != expected_to:
                raise MalformedMessageError(
                    f"client {client_id} must send shares to exactly its neighbours in U1"
                )
            record = (commitment, rows)
        elif stage == Stage.COLLECT_MASKED_INPUT:
            y = msg.decode_masked(body, bits=p.bits, length=self.vector_length)
            if self._sum is None:
                self._sum = np.zeros(self.vector_length, dtype=word_dtype(p.bits).newbyteorder("="))
            np.add(self._sum, y, out=self._sum)
            record = True
        elif stage == Stage.CONSISTENCY_CHECK:
            assert self.session_id is not None and self._pki is not None
            sig = msg.decode_signature(body)
            verify_signature(
                public=self._pki[client_id],
                message=msg.consistency_statement(session_id=self.session_id, survivors=self.u3),
                signature=sig,
            )
            record = sig
        else:
            assert self._graph is not None
            b_rows, s_rows = msg.decode_unmask_response(body, limit=p.n)
            want_b = sorted(self._graph.closed_neighbours(client_id) & self._u3_set)
            want_s = sorted(self._graph.neighbours(client_id) & self._dropped_set)
            if [v for v, _ in b_rows] != want_b or [v for v, _ in s_rows] != want_s:
                raise MalformedMessageError(f"client {client_id} returned shares for the wrong clients")
            record = (b_rows, s_rows)
        self._answered[client_id] = record
        self.bytes_in[client_id] += len(message)

    def close_stage(self) -> None:
        """Close the current stage: fix its responder set, check thresholds, advance.

        Raises:
            ThresholdError: If fewer than ``t`` clients (or neighbours) remain; the session aborts
                and no unmasking request will be produced.
            ReconstructionError: If a reconstructed key is inconsistent (the session aborts).
        """
        stage = self.stage
        t0 = time.perf_counter()
        try:
            self._close(stage)
        except ProtocolError:
            self.state = ServerState.ABORTED
            self._sum = None
            raise
        self.timings[f"close/{stage.name.lower()}"] = time.perf_counter() - t0
        self._asked = set()
        self._answered = {}
        if stage == Stage.UNMASK:
            self.state = ServerState.DONE
        else:
            self._stage_idx += 1

    def _need(self, what: str, count: int) -> None:
        if count < self.params.t:
            raise ThresholdError(f"{what}: {count} < t={self.params.t}; aborting")

    def _close(self, stage: Stage) -> None:
        p = self.params
        responders = tuple(sorted(self._answered))
        if stage == Stage.ADVERTISE_KEYS:
            self._need("clients that advertised keys (U1)", len(responders))
            self.u1 = responders
            self._u1_set = frozenset(responders)
            self._keys = {u: self._answered[u] for u in responders}  # type: ignore[misc]
            entries = [msg.KeyEntry(u, *self._keys[u]) for u in self.u1]
            self._table_body = msg.encode_key_table(entries, active=p.active)
            rows = self._table_body[4 : 4 + msg.KEY_ROW_BYTES * len(entries)]
            self.session_id = msg.session_id_from_rows(pre_session=self.pre_session_id, rows=rows)
            self._graph = build_graph(
                nodes=self.participants, k=p.k, seed=graph_seed(session_id=self.session_id)
            )
        elif stage == Stage.SHARE_KEYS:
            self._need("clients that shared keys (U2)", len(responders))
            self.u2 = responders
            answered: dict[int, tuple[bytes, list[tuple[int, bytes]]]] = self._answered  # type: ignore[assignment]
            self._commitments = {u: answered[u][0] for u in responders}
            self._blobs = {u: answered[u][1] for u in responders}
        elif stage == Stage.COLLECT_MASKED_INPUT:
            self._need("clients that sent masked input (U3)", len(responders))
            self.u3 = responders
            self._u3_set = frozenset(responders)
            self._dropped_set = frozenset(self.u2) - self._u3_set
            self._blobs = {}
            assert self._graph is not None
            if not p.active:
                self._check_recoverable(self.u3)
            # SecAgg+: never ask for shares when the dropouts exceed the designed bound or U3's
            # graph is split (a component's sum would be recoverable); the clients check it too
            check_survivor_graph(graph=self._graph, survivors=self._u3_set, max_dropouts=p.n_dropout)
        elif stage == Stage.CONSISTENCY_CHECK:
            self._need("clients that signed U3 (U4)", len(responders))
            self.u4 = responders
            self._u3_sigs = {u: self._answered[u] for u in responders}  # type: ignore[misc]
            self._check_recoverable(self.u4)
        else:
            self._need("clients that sent shares (U5)", len(responders))
            self.u5 = responders
            self._unmask({u: self._answered[u] for u in responders})  # type: ignore[misc]

    def _check_recoverable(self, present: tuple[int, ...]) -> None:
        """Abort before the unmasking round unless every needed secret has >= t share holders."""
        assert self._graph is not None
        t = self.params.t
        alive = set(present)
        for u in self.u3:
            have = len(self._graph.closed_neighbours(u) & alive)
            if have < t:
                raise ThresholdError(f"only {have} of client {u}'s share holders remain; t={t}; aborting")
        for v in sorted(set(self.u2) - set(self.u3)):
            have = len(self._graph.neighbours(v) & alive)
            if have < t:
                raise ThresholdError(
                    f"only {have} of dropped client {v}'s share holders remain; t={t}; aborting"
                )

    def _unmask(self, answers: dict[int, tuple[list[tuple[int, int]], list[tuple[int, int]]]]) -> None:
        p = self.params
        assert self._sum is not None and self.session_id is not None and self._graph is not None
        t0 = time.perf_counter()
        b_shares: dict[int, dict[int, int]] = {u: {} for u in self.u3}
        dropped = sorted(set(self.u2) - set(self.u3))
        s_shares: dict[int, dict[int, int]] = {v: {} for v in dropped}
        for holder, (b_rows, s_rows) in answers.items():
            x = holder + 1
            for owner, value in b_rows:
                b_shares[owner][x] = value
            for owner, value in s_rows:
                s_shares[owner][x] = value
        for u, shares in b_shares.items():
            if len(shares) < p.t:
                raise ThresholdError(f"only {len(shares)} shares of client {u}'s self-mask seed; t={p.t}")
        for v, shares in s_shares.items():
            if len(shares) < p.t:
                raise ThresholdError(f"only {len(shares)} shares of dropped client {v}'s key; t={p.t}")
        total = self._sum
        masks: list[tuple[bytes, int]] = []
        bad_x: set[int] = set()
        session_id = self.session_id
        for u in self.u3:
            commitment = self._commitments[u]

            def b_ok(value: int, u: int = u, commitment: bytes = commitment) -> bool:
                return (
                    value < 2**256
                    and msg.b_commitment(session_id=session_id, client_id=u, seed=int_to_secret(value))
                    == commitment
                )

            value, bad = reconstruct_verified(shares=b_shares[u], t=p.t, accept=b_ok)
            bad_x.update(bad)
            seed = int_to_secret(value)
            key = derive_mask_key(
                seed=seed, session_id=self.session_id, purpose="self-mask", ids=pack_ids([u])
            )
            masks.append((key, -1))
        survivors = set(self.u3)
        for v in dropped:
            s_pk = self._keys[v][1]

            def s_ok(value: int, s_pk: bytes = s_pk) -> bool:
                return value < 2**256 and derive_x25519_public(private_bytes=int_to_secret(value)) == s_pk

            try:
                value, bad = reconstruct_verified(shares=s_shares[v], t=p.t, accept=s_ok)
            except ReconstructionError as exc:
                raise ReconstructionError(
                    f"no reconstruction of client {v}'s s_sk derives its advertised s_pk: {exc}"
                ) from exc
            bad_x.update(bad)
            sk = X25519PrivateKey.from_private_bytes(int_to_secret(value))
            for w in sorted(self._graph.neighbours(v) & survivors):
                seed = agree(private=sk, public=self._keys[w][1], checked=True)
                key = derive_mask_key(
                    seed=seed,
                    session_id=self.session_id,
                    purpose="pair-mask",
                    ids=pack_ids([min(v, w), max(v, w)]),
                )
                # survivor w added sign(w - v) * PRG(s_wv); remove it
                masks.append((key, -1 if w > v else 1))
        MaskExpander(length=self.vector_length, bits=p.bits).add_masks(acc=total, masks=masks)
        if p.bits < total.dtype.itemsize * 8:
            total &= total.dtype.type((1 << p.bits) - 1)
        unmask_s = time.perf_counter() - t0
        self.timings["unmask_s"] = unmask_s
        survivors_sorted = list(self.u3)
        n_resp = max(len(survivors_sorted), 1)
        metrics: dict[str, float | int | str] = {
            "mode": p.mode,
            "n": p.n,
            "k": p.k,
            "t": p.t,
            "bits": p.bits,
            "active": int(p.active),
            "u1": len(self.u1),
            "u2": len(self.u2),
            "u3": len(self.u3),
            "u5": len(self.u5),
            "survivors": len(survivors_sorted),
            "bytes_sent_per_client": sum(self.bytes_in[u] for u in survivors_sorted) / n_resp,
            "bytes_received_per_client": sum(self.bytes_out[u] for u in survivors_sorted) / n_resp,
            "unmask_s": unmask_s,
            "bad_share_holders": len(bad_x),
        }
        self._result = SecAggResult(
            total=total.astype(np.uint64),
            survivors=survivors_sorted,
            dropped=sorted(set(self.participants) - survivors),
            params=p,
            metrics=metrics,
            bad_share_holders=sorted(x - 1 for x in bad_x),
        )
        self._sum = None

    def result(self) -> SecAggResult:
        """Return the unmasked sum.

        Returns:
            The result.

        Raises:
            SessionAbortedError: If the session aborted.
            StageError: If the protocol has not finished.
        """
        if self.state == ServerState.ABORTED:
            raise SessionAbortedError("server session aborted; no result")
        if self._result is None:
            raise StageError("the protocol has not finished")
        return self._result
