"""Test helper (not a test module): a secure-aggregation round driven one stage at a time."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from protocols import (
    ProtocolError,
    SecAggClientSession,
    SecAggConfig,
    SecAggServerSession,
    Stage,
    make_identities,
)
from protocols.wire import pack_message, unpack_message


def reframe(message: bytes, *, body: bytes | None = None, **changes: object) -> bytes:
    """``message`` with its header fields ``changes`` replaced (and its body, if given)."""
    header, old_body = unpack_message(message)
    header = header._replace(**changes)
    return pack_message(header=header, body=bytes(old_body) if body is None else body)


def body_of(message: bytes) -> bytes:
    return bytes(unpack_message(message)[1])


class Harness:
    """A server and its clients driven one stage at a time, with hooks to drop or tamper."""

    def __init__(
        self,
        *,
        config: SecAggConfig,
        ids: list[int],
        m: int = 16,
        round_idx: int = 0,
        seed: int = 0,
        inputs: dict[int, np.ndarray] | None = None,
    ) -> None:
        assert config.bits is not None
        rng = np.random.default_rng(seed)
        self.config = config
        self.ids = sorted(ids)
        self.m = m
        self.bits = config.bits
        self.inputs = inputs or {
            u: rng.integers(0, 2**config.bits, size=m, dtype=np.uint64) for u in self.ids
        }
        self.signing_keys, self.pki = make_identities(ids=self.ids) if config.active else (None, None)
        self.server = SecAggServerSession(
            config=config, round_idx=round_idx, participants=self.ids, vector_length=m, pki=self.pki
        )
        self.clients = {
            u: SecAggClientSession(
                client_id=u,
                config=config,
                round_idx=round_idx,
                vector_length=m,
                signing_key=self.signing_keys[u] if self.signing_keys else None,
                pki=self.pki,
            )
            for u in self.ids
        }
        self.history: list[tuple[Stage, dict[int, bytes], dict[int, bytes]]] = []
        self.client_errors: dict[int, tuple[Stage, ProtocolError]] = {}

    def answer(self, u: int, request: bytes) -> bytes:
        stage = self.server.stage
        value = self.inputs[u] if stage == Stage.COLLECT_MASKED_INPUT else None
        return self.clients[u].handle(request, value=value)

    def step(
        self,
        *,
        drop: set[int] | frozenset[int] = frozenset(),
        tamper_request: Callable[[int, bytes], bytes] | None = None,
        tolerate_client_errors: bool = False,
    ) -> tuple[Stage, dict[int, bytes], dict[int, bytes]]:
        stage = self.server.stage
        requests = self.server.requests()
        responses = {}
        for u, req in requests.items():
            if u in drop:
                continue
            if tamper_request is not None:
                req = tamper_request(u, req)
            try:
                responses[u] = self.answer(u, req)
            except ProtocolError as exc:
                if not tolerate_client_errors:
                    raise
                self.client_errors[u] = (stage, exc)  # an aborting client looks dropped
        self.history.append((stage, requests, responses))
        self.server.receive(responses=responses)
        return stage, requests, responses

    def run(
        self, *, drops: dict[Stage, set[int]] | None = None, tolerate_client_errors: bool = False
    ) -> None:
        drops = drops or {}
        gone: set[int] = set()
        while not self.server.done:
            gone |= drops.get(self.server.stage, set())
            self.step(drop=gone | set(self.client_errors), tolerate_client_errors=tolerate_client_errors)

    def expected_sum(self, survivors: list[int]) -> np.ndarray:
        total = np.zeros(self.m, dtype=np.uint64)
        for u in survivors:
            total += self.inputs[u]
        return total & np.uint64((1 << self.bits) - 1) if self.bits < 64 else total
