"""Runtime integration of secure aggregation (secfed.federation.secure) over a fake in-memory channel."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator

import numpy as np
import pytest

import secfed.federation.secure as secure_mod
from protocols import AbortError, IntegerEncoder, Stage, ThresholdError, make_identities
from protocols import messages as msg
from protocols.quantization import to_signed
from protocols.wire import unpack_message
from secfed.config import SecAggOptions
from secfed.errors import ConfigError
from secfed.federation.secure import SecureClientAggregator, SecureServerAggregator, secagg_options

#: The keywords of ``_setup`` that are protocol options (the rest go to the aggregators).
_OPTION_FIELDS = {f.name for f in dataclasses.fields(SecAggOptions)}


class FakeChannel:
    """Routes request bytes to in-process client aggregators; injects dropouts by stage.

    ``drop_at[u] = i`` makes client u silent from the i-th exchange (0-based) on. Every message is
    recorded so tests can check what crossed the wire.
    """

    def __init__(
        self,
        *,
        clients: dict[int, SecureClientAggregator],
        updates: dict[int, np.ndarray],
        weights: dict[int, float],
        round_idx: int,
        drop_at: dict[int, int] | None = None,
        tamper: dict[tuple[int, int], object] | None = None,
        on_exchange: object = None,
    ) -> None:
        self.clients = clients
        self.updates = updates
        self.weights = weights
        self.round_idx = round_idx
        self.drop_at = drop_at or {}
        self.tamper = tamper or {}
        self.on_exchange = on_exchange
        self.calls = 0
        self.stages: list[str] = []
        self.wire: list[bytes] = []

    def exchange(self, *, stage: str, requests: dict[int, bytes]) -> dict[int, bytes]:
        idx = self.calls
        self.calls += 1
        self.stages.append(stage)
        out = {}
        for u, req in requests.items():
            self.wire.append(req)
            if u in self.drop_at and self.drop_at[u] <= idx:
                continue
            fn = self.tamper.get((u, idx))
            if callable(fn):
                req = fn(req)
            out[u] = self.clients[u].handle(
                stage=stage,
                request=req,
                update=self.updates[u],
                weight=self.weights[u],
                round_idx=self.round_idx,
            )
            self.wire.append(out[u])
        if callable(self.on_exchange):
            self.on_exchange()
        return out


def _setup(
    n: int,
    dim: int,
    *,
    mode: str = "secagg+",
    active: bool = False,
    seed: int = 0,
    uniform_weights: bool = False,
    on_abort: str = "raise",
    **opts: object,
) -> tuple[
    SecureServerAggregator, dict[int, SecureClientAggregator], dict[int, np.ndarray], dict[int, float]
]:
    rng = np.random.default_rng(seed)
    ids = [2 * i + 1 for i in range(n)]
    updates = {u: rng.uniform(-1.5, 1.5, dim).astype(np.float32) for u in ids}
    weights = {u: 1.0 if uniform_weights else float(rng.integers(1, 50)) for u in ids}
    fields = {"mode": mode, "clip": 1.0, "precision_bits": 20, "active": active, "dropout_rate": 0.2}
    fields.update({key: opts.pop(key) for key in list(opts) if key in _OPTION_FIELDS})
    options = secagg_options(**fields)  # type: ignore[arg-type]
    keys, pki = make_identities(ids=ids) if active else (None, None)
    server = SecureServerAggregator(options=options, **opts, pki=pki, on_abort=on_abort)  # type: ignore[arg-type]
    clients = {
        u: SecureClientAggregator(
            client_id=u, options=options, **opts, signing_key=keys[u] if keys else None, pki=pki
        )  # type: ignore[arg-type]
        for u in ids
    }
    return server, clients, updates, weights


def _expected(
    updates: dict[int, np.ndarray], weights: dict[int, float], survivors: list[int], clip: float = 1.0
):
    return sum(weights[u] * np.clip(updates[u].astype(np.float64), -clip, clip) for u in survivors)


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
@pytest.mark.parametrize("drop_stage", [None, 0, 1, 2, 3])
def test_weighted_sum_matches_plaintext_with_dropouts(mode: str, drop_stage: int | None) -> None:
    n, dim = 12, 257
    server, clients, updates, weights = _setup(n, dim, mode=mode)
    ids = sorted(clients)
    dropped = {ids[1], ids[6]}
    ch = FakeChannel(
        clients=clients,
        updates=updates,
        weights=weights,
        round_idx=3,
        drop_at={u: drop_stage for u in dropped} if drop_stage is not None else None,
    )
    res = server.aggregate(round_idx=3, participants=ids, weights=weights, dim=dim, channel=ch)
    if drop_stage is None or drop_stage == 3:  # unmask-stage dropouts still count (inputs were sent)
        assert res.survivors == ids
    else:
        assert res.survivors == [u for u in ids if u not in dropped]
        assert res.dropped == sorted(dropped)
    exp = _expected(updates, weights, res.survivors)
    # stochastic rounding: each client's encoding is within 1/s of w*x per coordinate
    assert np.max(np.abs(res.total - exp)) <= len(res.survivors) / 2**20 + 1e-9
    assert res.total.dtype == np.float64 and res.total.shape == (dim,)
    assert res.weight_sum == pytest.approx(sum(weights[u] for u in res.survivors))
    m = res.metrics
    for key in ("n", "k", "t", "survivors", "bytes_sent_per_client", "unmask_s"):
        assert key in m
    assert m["n"] == n and m["survivors"] == len(res.survivors) and m["aborted"] == 0
    assert ch.stages == list(server.stages)
    assert all(c.refusals == 0 for c in clients.values())


def test_active_variant_end_to_end_with_dropout_at_consistency_check() -> None:
    n, dim = 9, 64
    server, clients, updates, weights = _setup(n, dim, mode="secagg", active=True, dropout_rate=0.1)
    ids = sorted(clients)
    assert len(server.stages) == 5
    ch = FakeChannel(clients=clients, updates=updates, weights=weights, round_idx=1, drop_at={ids[0]: 3})
    res = server.aggregate(round_idx=1, participants=ids, weights=weights, dim=dim, channel=ch)
    assert res.survivors == ids  # sent its masked input before dropping
    assert np.max(np.abs(res.total - _expected(updates, weights, ids))) <= n / 2**20 + 1e-9


class RecordingQuantizer(secure_mod.StochasticQuantizer):
    """The client-side quantiser, recording what each client encoded (test only)."""

    encoded: list[np.ndarray] = []

    def encode(self, *, x: np.ndarray) -> np.ndarray:
        out = super().encode(x=x)
        RecordingQuantizer.encoded.append(out.copy())
        return out


def _walk(obj: object, seen: set[int] | None = None, depth: int = 0) -> Iterator[object]:
    """Every object reachable from ``obj`` through attributes, containers and slots."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 50:
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, (str, int, float, bool, type(None), types.ModuleType, types.FunctionType, type)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(k, seen, depth + 1)
            yield from _walk(v, seen, depth + 1)
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            yield from _walk(v, seen, depth + 1)
        return
    if isinstance(obj, (np.ndarray, bytes, bytearray, memoryview)):
        return
    if hasattr(obj, "__dict__"):
        yield from _walk(vars(obj), seen, depth + 1)
    for slot in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, slot):
            yield from _walk(getattr(obj, slot), seen, depth + 1)


def _leaks(obj: object, secrets: list[np.ndarray]) -> list[str]:
    """Descriptions of reachable values equal to or containing any of ``secrets``."""
    found = []
    secret_bytes = [s.tobytes() for s in secrets]
    for item in _walk(obj):
        if isinstance(item, np.ndarray):
            flat = item.ravel()
            for s in secrets:
                if flat.shape == s.shape and np.allclose(flat.astype(np.float64), s.astype(np.float64)):
                    found.append(f"array equal to a secret: {type(item)}")
            raw = item.tobytes()
            if any(sb[:64] in raw for sb in secret_bytes):
                found.append("array containing a secret's bytes")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            raw = bytes(item)
            if any(sb[:64] in raw for sb in secret_bytes):
                found.append("bytes containing a secret's bytes")
    return found


class RecordingServerSession(secure_mod.SecAggServerSession):
    """The protocol's server session, remembering its instances so the test can inspect them."""

    instances: list[secure_mod.SecAggServerSession] = []

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        RecordingServerSession.instances.append(self)


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
def test_server_never_holds_a_client_plaintext(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secure_mod, "StochasticQuantizer", RecordingQuantizer)
    monkeypatch.setattr(secure_mod, "SecAggServerSession", RecordingServerSession)
    RecordingQuantizer.encoded = []
    RecordingServerSession.instances = []
    n, dim = 6, 96
    server, clients, updates, weights = _setup(n, dim, mode=mode, uniform_weights=False)
    ids = sorted(clients)
    plain: list[np.ndarray] = []
    for u in ids:
        plain.append(updates[u])
        plain.append(weights[u] * updates[u].astype(np.float64))
        plain.append(weights[u] * np.clip(updates[u].astype(np.float64), -1, 1))
    snapshots: list[list[str]] = []
    ch = FakeChannel(
        clients=clients,
        updates=updates,
        weights=weights,
        round_idx=2,
        drop_at={ids[2]: 2},
        # the aggregator and the protocol session it drives (its received messages, running sum
        # and unmasking state), after every stage's answers have reached the server
        on_exchange=lambda: snapshots.append(
            _leaks([server, RecordingServerSession.instances], plain + RecordingQuantizer.encoded)
        ),
    )
    res = server.aggregate(round_idx=2, participants=ids, weights=weights, dim=dim, channel=ch)
    encoded = list(RecordingQuantizer.encoded)
    assert len(encoded) == n - 1  # the client dropped before masking never encoded
    (session,) = RecordingServerSession.instances
    assert session.done and len(snapshots) == 4  # four stages, each inspected
    secrets = plain + encoded
    # the inspection finds a plaintext wherever one is planted (float update or its encoding)
    assert _leaks({"held": [updates[ids[0]]]}, secrets)
    assert _leaks(types.SimpleNamespace(x=encoded[0]), secrets)
    # nothing reachable from the server side (during every exchange and after) is a plaintext
    assert all(not s for s in snapshots), snapshots
    assert not _leaks([server, session], secrets)
    assert not _leaks(res, secrets)
    # nor did any plaintext (float, weighted, or its integer encoding) cross the wire; the uint32
    # words the encodings are sent as are checked too
    wire = b"".join(ch.wire)
    for s in secrets:
        assert s.tobytes()[:64] not in wire
    for e in encoded:
        assert e.astype("<u4").tobytes()[:64] not in wire
    # the masked vectors on the wire are not the encodings
    for data in ch.wire:
        header, body = unpack_message(data)
        if header.stage == Stage.COLLECT_MASKED_INPUT and header.kind == 2:
            y = msg.decode_masked(bytes(body), bits=res.metrics["bits"], length=dim)
            assert not any(np.array_equal(y.astype(np.uint64), e) for e in encoded)
    # sanity: the aggregate itself is right
    assert np.max(np.abs(res.total - _expected(updates, weights, res.survivors))) <= n / 2**20 + 1e-9


class IntEncoder:
    """A minimal custom encoder with the protocols duck type (rounds to 1/256; 30 bits)."""

    bits = 30
    encoded_dim = 40  # padded, like the distributed-DP encoder

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode(self, *, x: np.ndarray) -> np.ndarray:
        padded = np.zeros(self.encoded_dim)
        padded[: self.dim] = np.round(np.asarray(x, dtype=np.float64) * 256)
        return padded.astype(np.int64).view(np.uint64) & np.uint64(2**30 - 1)

    def decode(self, *, total: np.ndarray, n_summed: int) -> np.ndarray:
        return to_signed(total=total, bits=30)[: self.dim].astype(np.float64) / 256


def test_custom_encoder_object_is_used_on_both_sides() -> None:
    dim = 33
    enc = IntEncoder(dim)
    assert isinstance(enc, IntegerEncoder)
    server, clients, updates, weights = _setup(7, dim, mode="secagg", encoder=enc)
    ids = sorted(clients)
    ch = FakeChannel(clients=clients, updates=updates, weights=weights, round_idx=5, drop_at={ids[0]: 2})
    res = server.aggregate(round_idx=5, participants=ids, weights=weights, dim=dim, channel=ch)
    exp = sum(np.round(weights[u] * updates[u].astype(np.float64) * 256) / 256 for u in res.survivors)
    assert np.allclose(res.total, exp)
    assert res.metrics["bits"] == 30


def test_encoder_factory_per_round_and_mismatch_is_refused() -> None:
    dim = 33
    server, clients, updates, weights = _setup(
        5, dim, mode="secagg", encoder_factory=lambda r: IntEncoder(dim)
    )
    ids = sorted(clients)
    ch = FakeChannel(clients=clients, updates=updates, weights=weights, round_idx=1)
    res = server.aggregate(round_idx=1, participants=ids, weights=weights, dim=dim, channel=ch)
    assert res.survivors == ids
    # clients using the quantiser refuse a server that announces a custom encoder
    server2, _, _, _ = _setup(5, dim, mode="secagg", encoder=IntEncoder(dim))
    _, plain_clients, _, _ = _setup(5, dim, mode="secagg")
    ch2 = FakeChannel(clients=plain_clients, updates=updates, weights=weights, round_idx=1)
    with pytest.raises(ThresholdError):
        server2.aggregate(round_idx=1, participants=ids, weights=weights, dim=dim, channel=ch2)
    assert all(c.refusals == 1 and "encoder" in (c.last_error or "") for c in plain_clients.values())


def test_client_refusing_a_tampered_request_counts_as_dropped() -> None:
    n, dim = 8, 16
    server, clients, updates, weights = _setup(n, dim, mode="secagg")
    ids = sorted(clients)

    def flip_share(req: bytes) -> bytes:
        header, body = unpack_message(req)
        rows = msg.decode_blobs(bytes(body), limit=n)
        peer, blob = rows[0]
        rows[0] = (peer, blob[:-1] + bytes([blob[-1] ^ 1]))
        from protocols.wire import pack_message

        return pack_message(header=header, body=msg.encode_blobs(rows))

    victim = ids[3]
    ch = FakeChannel(
        clients=clients, updates=updates, weights=weights, round_idx=1, tamper={(victim, 2): flip_share}
    )
    res = server.aggregate(round_idx=1, participants=ids, weights=weights, dim=dim, channel=ch)
    assert victim not in res.survivors and clients[victim].refusals == 1
    assert "AuthenticationError" in (clients[victim].last_error or "")
    assert res.metrics["rejected_responses"] == 1
    assert np.max(np.abs(res.total - _expected(updates, weights, res.survivors))) <= n / 2**20 + 1e-9


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_too_many_dropouts_abort_without_releasing_shares(policy: str) -> None:
    n, dim = 8, 16
    server, clients, updates, weights = _setup(n, dim, mode="secagg", on_abort=policy)
    ids = sorted(clients)
    t_needed = n // 2 + 1
    ch = FakeChannel(
        clients=clients,
        updates=updates,
        weights=weights,
        round_idx=1,
        drop_at={u: 2 for u in ids[: n - t_needed + 1]},
    )
    if policy == "raise":
        with pytest.raises(AbortError):
            server.aggregate(round_idx=1, participants=ids, weights=weights, dim=dim, channel=ch)
    else:
        res = server.aggregate(round_idx=1, participants=ids, weights=weights, dim=dim, channel=ch)
        assert res.survivors == [] and res.weight_sum == 0.0 and res.metrics["aborted"] == 1
        assert "ThresholdError" in str(res.metrics["abort_reason"])
        # the aborted round's parameters are still reported (complete graph: k = n - 1)
        assert (res.metrics["n"], res.metrics["k"], res.metrics["t"]) == (n, n - 1, t_needed)
    assert Stage.UNMASK.wire_name not in ch.stages  # nobody was asked for a share


def test_weight_above_the_announced_maximum_is_refused() -> None:
    n, dim = 5, 8
    server, clients, updates, weights = _setup(n, dim, mode="secagg")
    ids = sorted(clients)
    lying = dict(weights)
    lying[ids[0]] = max(weights.values()) * 3  # the client's true weight exceeds what the server sized
    ch = FakeChannel(clients=clients, updates=updates, weights=lying, round_idx=1)
    res = server.aggregate(round_idx=1, participants=ids, weights=weights, dim=dim, channel=ch)
    assert ids[0] not in res.survivors and clients[ids[0]].refusals == 1


def test_both_sides_take_each_round_s_config_from_the_options_they_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 20: the aggregators hold the :class:`SecAggOptions` value handed down and turn it into
    a round's protocol configuration through :meth:`SecAggOptions.round_config` only (they used to
    rebuild it field by field)."""
    calls: list[tuple[SecAggOptions, int, int | None]] = []
    original = SecAggOptions.round_config

    def spy(self: SecAggOptions, *, n: int, bits: int | None = None) -> object:
        calls.append((self, n, bits))
        return original(self, n=n, bits=bits)

    monkeypatch.setattr(SecAggOptions, "round_config", spy)
    n, dim = 5, 16
    server, clients, updates, weights = _setup(n, dim, mode="secagg+")
    assert all(c.options is server.options for c in clients.values())
    ch = FakeChannel(clients=clients, updates=updates, weights=weights, round_idx=1)
    res = server.aggregate(round_idx=1, participants=sorted(clients), weights=weights, dim=dim, channel=ch)
    assert sorted(res.survivors) == sorted(clients)
    assert all(options is server.options for options, _, _ in calls)
    assert [(m, bits) for _, m, bits in calls if bits is not None] == [(n, res.metrics["bits"])]
    assert [m for _, m, bits in calls if bits is None] == [n] * n  # each client's session


def test_argument_validation() -> None:
    with pytest.raises(ConfigError):
        SecureServerAggregator(options=secagg_options(mode="plain"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SecureServerAggregator(options=secagg_options(clip=0.0))
    with pytest.raises(ConfigError):
        SecureServerAggregator(options=secagg_options(active=True))
    with pytest.raises(ConfigError):
        SecureClientAggregator(client_id=1, options=secagg_options(active=True))
    with pytest.raises(ConfigError):
        SecureServerAggregator(on_abort="ignore")  # type: ignore[arg-type]
    server, clients, updates, weights = _setup(4, 8, mode="secagg")
    ch = FakeChannel(clients=clients, updates=updates, weights=weights, round_idx=1)
    ids = sorted(clients)
    with pytest.raises(ConfigError):
        server.aggregate(round_idx=1, participants=ids, weights={**weights, ids[0]: -1.0}, dim=8, channel=ch)
    with pytest.raises(ConfigError):
        server.aggregate(round_idx=1, participants=[*ids, ids[0]], weights=weights, dim=8, channel=ch)
    from secfed.errors import MessageError

    with pytest.raises(MessageError):
        clients[ids[0]].handle(stage="upload", request=b"", update=updates[ids[0]], weight=1.0, round_idx=1)


def test_factories_build_matching_aggregators_from_the_experiment_config() -> None:
    from secfed.config import ExperimentConfig

    base = ExperimentConfig()
    cfg = base.replace(
        federation=dataclasses.replace(base.federation, aggregation="secagg+", dropout_rate=0.1),
        secagg=dataclasses.replace(base.secagg, clip=0.5, precision_bits=18),
    )
    server = secure_mod.make_server_aggregator(config=cfg)
    assert (
        server.mode == "secagg+"
        and server.on_abort == "skip"
        and server.options.dropout_rate == pytest.approx(0.1)
    )
    n = 6
    clients = {u: secure_mod.make_client_aggregator(config=cfg, site_id=u) for u in range(n)}
    rng = np.random.default_rng(1)
    updates = {u: rng.uniform(-1, 1, 20).astype(np.float32) for u in range(n)}
    weights = {u: 1.0 for u in range(n)}
    ch = FakeChannel(clients=clients, updates=updates, weights=weights, round_idx=1)
    res = server.aggregate(round_idx=1, participants=list(range(n)), weights=weights, dim=20, channel=ch)
    assert (
        np.max(np.abs(res.total - _expected(updates, weights, res.survivors, clip=0.5))) <= n / 2**18 + 1e-9
    )


def test_the_factories_take_a_dp_encoder_and_refuse_distributed_dp_without_one() -> None:
    """``secfed.components`` builds distributed-DP and noise-sharing aggregators through these
    factories (it kept a near-copy of each), handing its encoder down."""
    from secfed.config import config_from_dict

    cfg = config_from_dict(
        {
            "partition": {"num_sites": 4},
            "model": {"norm": "group"},
            "federation": {"aggregation": "secagg"},
            "privacy": {"mode": "distributed", "mechanism": "skellam", "noise_multiplier": 1.0},
        }
    )
    with pytest.raises(ConfigError, match="encoder_factory"):
        secure_mod.make_server_aggregator(config=cfg)
    with pytest.raises(ConfigError, match="encoder_factory"):
        secure_mod.make_client_aggregator(config=cfg, site_id=0)
    dim = 12
    server = secure_mod.make_server_aggregator(config=cfg, encoder_factory=lambda r: IntEncoder(dim))
    clients = {
        u: secure_mod.make_client_aggregator(config=cfg, site_id=u, encoder_factory=lambda r: IntEncoder(dim))
        for u in range(4)
    }
    assert server.on_abort == "skip" and all(c.options == server.options for c in clients.values())
    rng = np.random.default_rng(3)
    updates = {u: rng.integers(-5, 6, dim).astype(np.float32) for u in clients}
    weights = {u: 1.0 for u in clients}
    ch = FakeChannel(clients=clients, updates=updates, weights=weights, round_idx=0)
    res = server.aggregate(round_idx=0, participants=sorted(clients), weights=weights, dim=dim, channel=ch)
    assert res.metrics["aborted"] == 0 and sorted(res.survivors) == sorted(clients)
    np.testing.assert_allclose(res.total, np.sum([updates[u] for u in clients], axis=0))  # via IntEncoder
