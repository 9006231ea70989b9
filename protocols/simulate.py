"""Run a whole round in one process (tests, benchmarks): a server and its clients, with dropouts.

Dropouts are given as ``{client id: stage}``: the client answers every stage before ``stage`` and
none from ``stage`` on (it is absent from the responses, exactly as a transport would report it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.client import SecAggClientSession
from protocols.crypto import ed25519_public_bytes
from protocols.errors import ProtocolConfigError
from protocols.params import SecAggConfig
from protocols.server import SecAggResult, SecAggServerSession
from protocols.stages import Stage

__all__ = ["LocalRound", "run_local_round", "make_identities"]


@dataclass
class LocalRound:
    """Everything a simulated round produced.

    Attributes:
        result: The server's result.
        server: The server session.
        clients: Client sessions by id.
        client_seconds: Total client compute time per stage name.
        server_seconds: Server compute time per stage name (requests + ingest + close).
        wall_seconds: Wall time of the whole round.
    """

    result: SecAggResult
    server: SecAggServerSession
    clients: dict[int, SecAggClientSession]
    client_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0


def make_identities(*, ids: list[int]) -> tuple[dict[int, Ed25519PrivateKey], dict[int, bytes]]:
    """Long-term Ed25519 identities for the active variant (a stand-in for a real PKI).

    Args:
        ids: Client ids.

    Returns:
        ``(signing keys by id, verification keys by id)``.
    """
    keys = {u: Ed25519PrivateKey.generate() for u in ids}
    return keys, {u: ed25519_public_bytes(k) for u, k in keys.items()}


def run_local_round(
    *,
    config: SecAggConfig,
    inputs: Mapping[int, np.ndarray],
    round_idx: int = 0,
    dropouts: Mapping[int, Stage] | None = None,
    context: bytes = b"",
    signing_keys: Mapping[int, Ed25519PrivateKey] | None = None,
    pki: Mapping[int, bytes] | None = None,
) -> LocalRound:
    """Run one round with every client in this process.

    Args:
        config: Configuration (``bits`` set; ``n`` None or ``len(inputs)``).
        inputs: Encoded input (uint64 in ``[0, 2**bits)``) of each participant.
        round_idx: Round number.
        dropouts: First stage each dropping client fails to answer.
        context: Application context bytes.
        signing_keys: Ed25519 keys (active variant; generated if missing).
        pki: Verification keys (active variant; generated if missing).

    Returns:
        The round record.

    Raises:
        ProtocolConfigError: On inconsistent inputs.
        ProtocolError: Whatever the protocol raises (e.g. :class:`ThresholdError`).
    """
    ids = sorted(inputs)
    lengths = {np.asarray(v).shape[0] for v in inputs.values()}
    if len(lengths) != 1:
        raise ProtocolConfigError("all inputs must have the same length")
    m = lengths.pop()
    if config.active and (signing_keys is None or pki is None):
        signing_keys, pki = make_identities(ids=ids)
    drop = dict(dropouts or {})
    start = time.perf_counter()
    server = SecAggServerSession(
        config=config, round_idx=round_idx, participants=ids, vector_length=m, context=context, pki=pki
    )
    clients = {
        u: SecAggClientSession(
            client_id=u,
            config=config,
            round_idx=round_idx,
            vector_length=m,
            context=context,
            signing_key=signing_keys[u] if signing_keys else None,
            pki=pki,
        )
        for u in ids
    }
    client_s: dict[str, float] = {}
    server_s: dict[str, float] = {}
    while not server.done:
        stage = server.stage
        t0 = time.perf_counter()
        requests = server.requests()
        t_srv = time.perf_counter() - t0
        responses = {}
        t0 = time.perf_counter()
        for u, req in requests.items():
            if u in drop and drop[u] <= stage:
                continue
            value = inputs[u] if stage == Stage.COLLECT_MASKED_INPUT else None
            responses[u] = clients[u].handle(req, value=value)
        client_s[stage.name.lower()] = time.perf_counter() - t0
        t0 = time.perf_counter()
        server.receive(responses=responses)
        server_s[stage.name.lower()] = t_srv + time.perf_counter() - t0
    wall = time.perf_counter() - start
    return LocalRound(server.result(), server, clients, client_s, server_s, wall)
