"""Secure aggregation for the runtime: SecAgg (Bonawitz et al. 2017) / SecAgg+ (Bell et al. 2020).

:class:`SecureServerAggregator` drives the stages of :mod:`protocols` over a
:class:`~secfed.federation.aggregation.Channel` (a client absent from a stage's answers has
dropped there) and only ever handles masked vectors and the unmasked *sum*; it decodes the sum to
float64. :class:`SecureClientAggregator` lives in the client: it encodes ``weight * update`` into
Z_{2^bits} (the default :class:`~protocols.StochasticQuantizer`, or any encoder with the
``encode``/``decode``/``bits`` shape, e.g. a distributed-DP encoder) and answers each stage with
its :class:`~protocols.SecAggClientSession`.

Both aggregators hold the run's :class:`~secfed.config.SecAggOptions` (``options``) as they are
handed down (:func:`make_server_aggregator` / :func:`make_client_aggregator` pass
:func:`protocol_options` of the configuration; :func:`secagg_options` builds one by hand), and turn
it with a round's facts (its ``n``; the server's modulus bits) into the protocol's configuration
through :meth:`SecAggOptions.round_config <secfed.config.SecAggOptions.round_config>` only.

Weights are public. With the default quantiser a client clips each coordinate of its update to
``[-clip, clip]`` and encodes ``w * clipped``; the server sizes the modulus from
``clip * sum(w)`` so the sum cannot wrap, and announces the bit width, clip, precision and
largest weight in the session context, which every client checks against its own options.

A client whose session refuses a request (tampering, inconsistent lists, too few survivors)
answers with an empty message and is treated as dropped; no share is released by it.

One update, one protocol run: a :class:`SecureClientAggregator` takes part in at most one
protocol run per round, and in none for a round before the latest one it took part in. A second
ADVERTISE_KEYS setup for such a round is refused (:class:`protocols.DuplicateRunError`), so a
server cannot run the protocol twice on one update, leave a client's masked input out of the
second run and subtract. The guard lives in the aggregator, not only in the runtime that feeds
it; it is kept in memory, so a restarted client process starts a fresh guard (a restarted site
also retrains, and under DP draws fresh noise).

SecAgg+ dropout bound: ``dropout_rate`` here is the per-site *rate*. For ``secagg+`` each round's
protocol bound is sized from the binomial tail at that rate (:func:`round_protocol_config`,
:func:`protocols.params.dropout_bound`, 2^-20), so the clients' refusal to unmask beyond the
bound (a split survivor graph would leak a partial sum) aborts a round with probability at most
2^-20; when no SecAgg+ graph meets the targets at that bound, the complete graph is used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privacy.atomic import atomic_write_text
from protocols import (
    DuplicateRunError,
    IntegerEncoder,
    ProtocolError,
    SecAggClientSession,
    SecAggServerSession,
    Stage,
    StochasticQuantizer,
    stage_sequence,
)
from protocols.crypto import ed25519_public_bytes, hkdf_sha256
from protocols.messages import decode_setup
from protocols.params import check_limits, round_protocol_config
from protocols.wire import unpack_message
from secfed.config import SecAggOptions, check_protocol_options, protocol_options
from secfed.errors import ConfigError, MessageError
from secfed.federation.aggregation import AggregateResult, Channel, ClientAggregator, ServerAggregator

if TYPE_CHECKING:
    from secfed.config import ExperimentConfig

__all__ = [
    "secagg_options",
    "SecureServerAggregator",
    "SecureClientAggregator",
    "make_server_aggregator",
    "make_client_aggregator",
    "simulated_identity",
    "simulated_pki",
    "protocol_options",
    "check_protocol_options",
    "round_protocol_config",
]

Mode = Literal["secagg", "secagg+"]
EncoderFactory = Callable[[int], IntegerEncoder]
_CONTEXT_VERSION = "secfed-secure-aggregation/1"


def secagg_options(
    *,
    mode: Mode = "secagg+",
    k: int | None = None,
    t: int | None = None,
    clip: float = 1.0,
    precision_bits: int = 16,
    active: bool = False,
    corrupt_fraction: float = 0.05,
    dropout_rate: float = 0.1,
) -> SecAggOptions:
    """Options for aggregators built by hand (tests, scripts), with the aggregators' defaults.

    A run takes its options from its configuration instead (:func:`protocol_options`).

    Args:
        mode: ``"secagg"`` (complete graph) or ``"secagg+"`` (Harary graph).
        k: SecAgg+ neighbours per client (``None`` derives it from n, corruption and dropout).
        t: Shamir threshold (``None`` derives it).
        clip: Per-coordinate clip range of the default quantiser.
        precision_bits: Fractional bits of the default quantiser (scale ``2**precision_bits``).
        active: Active-adversary variant (signed keys, consistency check).
        corrupt_fraction: Assumed fraction of corrupt clients.
        dropout_rate: Assumed fraction of clients dropping during aggregation.

    Returns:
        The options value (checked when an aggregator is built from it).
    """
    return SecAggOptions(
        mode=mode,
        k=k,
        t=t,
        clip=float(clip),
        precision_bits=int(precision_bits),
        active=bool(active),
        corrupt_fraction=float(corrupt_fraction),
        dropout_rate=float(dropout_rate),
    )


def _check_options(options: SecAggOptions) -> None:
    if options.mode not in ("secagg", "secagg+"):
        raise ConfigError(f"mode must be 'secagg' or 'secagg+', got {options.mode!r}")
    if not (math.isfinite(options.clip) and options.clip > 0):
        raise ConfigError(f"clip must be finite and > 0, got {options.clip}")
    if not 0 <= options.precision_bits <= 52:
        raise ConfigError(f"precision_bits must be in [0, 52], got {options.precision_bits}")
    if not 0 <= options.corrupt_fraction < 1 or not 0 <= options.dropout_rate < 1:
        raise ConfigError(
            "corrupt_fraction and dropout_rate must be in [0, 1), got "
            f"{options.corrupt_fraction}, {options.dropout_rate}"
        )


def _context(payload: dict[str, object]) -> bytes:
    return json.dumps({"v": _CONTEXT_VERSION, **payload}, sort_keys=True, separators=(",", ":")).encode()


class _SecureAggregator:
    """What both sides hold: the run's options, the encoder choice and the verification keys.

    Args:
        options: The protocol's settings (:func:`protocol_options` of a run's configuration, or
            :func:`secagg_options`); server and clients must hold equal ones.
        encoder: An encoder (``bits``, ``encode``/``decode``; optional ``encoded_dim``) used for
            every round instead of the quantiser; both sides must use the matching one.
        encoder_factory: ``round_idx -> encoder`` for encoders that change per round.
        pki: Ed25519 verification key of every client id (active variant).

    Raises:
        ConfigError: On invalid options, or both ``encoder`` and ``encoder_factory``.
    """

    def __init__(
        self,
        *,
        options: SecAggOptions,
        encoder: IntegerEncoder | None,
        encoder_factory: EncoderFactory | None,
        pki: Mapping[int, bytes] | None,
    ) -> None:
        _check_options(options)
        if encoder is not None and encoder_factory is not None:
            raise ConfigError("give encoder or encoder_factory, not both")
        self.options = options
        self.name: str = options.mode
        self._encoder = encoder
        self._encoder_factory = encoder_factory
        self._pki = dict(pki) if pki is not None else None

    @property
    def mode(self) -> Mode:
        """``"secagg"`` or ``"secagg+"`` (:attr:`options`' mode)."""
        return self.options.mode

    def _encoder_for(self, round_idx: int) -> IntegerEncoder | None:
        """The round's encoder, or ``None`` for the default quantiser."""
        if self._encoder_factory is not None:
            return self._encoder_factory(round_idx)
        return self._encoder


class SecureServerAggregator(_SecureAggregator, ServerAggregator):
    """Server side: runs SecAgg / SecAgg+ and returns the decoded weighted sum.

    Args:
        options: The protocol's settings (see :class:`~secfed.config.SecAggOptions`); the
            default is :func:`secagg_options` with its defaults.
        encoder: An encoder (``bits``, ``decode``; optional ``encoded_dim``) used for every round
            instead of the quantiser; the clients must use the matching one.
        encoder_factory: ``round_idx -> encoder`` for encoders that change per round.
        pki: Ed25519 verification key of every client id (active variant).
        on_abort: ``"raise"`` the protocol error when a round cannot finish safely, or ``"skip"``:
            return an empty aggregate (no survivors) with ``metrics["aborted"] = 1``.

    Raises:
        ConfigError: On invalid options.
    """

    def __init__(
        self,
        *,
        options: SecAggOptions | None = None,
        encoder: IntegerEncoder | None = None,
        encoder_factory: EncoderFactory | None = None,
        pki: Mapping[int, bytes] | None = None,
        on_abort: Literal["raise", "skip"] = "raise",
    ) -> None:
        options = options if options is not None else secagg_options()
        super().__init__(options=options, encoder=encoder, encoder_factory=encoder_factory, pki=pki)
        if on_abort not in ("raise", "skip"):
            raise ConfigError(f"on_abort must be 'raise' or 'skip', got {on_abort!r}")
        if options.active and pki is None:
            raise ConfigError("the active variant needs the clients' verification keys (pki)")
        self.on_abort = on_abort
        self.stages = tuple(s.wire_name for s in stage_sequence(active=options.active))

    def _decoder(
        self, *, round_idx: int, n: int, weights: list[float], dim: int
    ) -> tuple[IntegerEncoder, int, bytes]:
        encoder = self._encoder_for(round_idx)
        if encoder is not None:
            length = int(getattr(encoder, "encoded_dim", dim))
            ctx = _context(
                {"encoder": "custom", "bits": int(encoder.bits), "dim": dim, "encoded_dim": length}
            )
            return encoder, length, ctx
        w_max = max(weights)
        clip, precision_bits = self.options.clip, self.options.precision_bits
        quantiser = StochasticQuantizer(
            clip=clip * w_max,
            precision_bits=precision_bits,
            n_clients=n,
            total_bound=clip * math.fsum(weights),
        )
        ctx = _context(
            {
                "encoder": "stochastic-quantizer",
                "bits": quantiser.bits,
                "clip": clip,
                "precision_bits": precision_bits,
                "w_max": w_max,
                "dim": dim,
            }
        )
        return quantiser, dim, ctx

    def aggregate(
        self,
        *,
        round_idx: int,
        participants: list[int],
        weights: dict[int, float],
        dim: int,
        channel: Channel,
    ) -> AggregateResult:
        """Run one secure aggregation over ``channel``.

        Args:
            round_idx: The round number (bound into the session id).
            participants: Client ids that hold an update this round.
            weights: Public weight of each participant (finite, > 0).
            dim: Length of the flat update vector.
            channel: Transport to the clients.

        Returns:
            ``total`` = decoded ``sum_i w_i x_i`` over the survivors (float64), their weight sum,
            and metrics (n, k, t, bits, survivors, bytes_sent_per_client, unmask_s, ...).

        Raises:
            ConfigError: On invalid participants, weights or dimension.
            ProtocolError: When the round must abort and ``on_abort == "raise"``.
        """
        ids = sorted(participants)
        if len(set(ids)) != len(ids) or not ids:
            raise ConfigError(f"participants must be distinct and non-empty, got {participants}")
        missing = [u for u in ids if u not in weights]
        if missing:
            raise ConfigError(f"no weight for participants {missing}")
        w = [float(weights[u]) for u in ids]
        if not all(math.isfinite(x) and x > 0 for x in w):
            raise ConfigError(f"weights must be finite and > 0, got {dict(zip(ids, w, strict=True))}")
        if dim < 1:
            raise ConfigError(f"dim must be >= 1, got {dim}")
        try:
            return self._run(round_idx=round_idx, ids=ids, weights=weights, w=w, dim=dim, channel=channel)
        except ProtocolError as exc:
            if self.on_abort == "raise":
                raise
            metrics: dict[str, float | int | str] = {"protocol": self.mode, "n": len(ids)}
            metrics.update(self._graph_params(n=len(ids)))
            metrics.update(aborted=1, abort_reason=f"{type(exc).__name__}: {exc}", survivors=0)
            return AggregateResult(
                total=np.zeros(dim, dtype=np.float64),
                weight_sum=0.0,
                survivors=[],
                dropped=ids,
                metrics=metrics,
            )

    def _graph_params(self, *, n: int) -> dict[str, int]:
        """``k`` and ``t`` of a round of ``n`` clients, or nothing when no valid pair exists."""
        try:
            params = self.options.round_config(n=n).resolve()
        except ProtocolError:
            return {}
        return {"k": params.k, "t": params.t}

    def _run(
        self,
        *,
        round_idx: int,
        ids: list[int],
        weights: dict[int, float],
        w: list[float],
        dim: int,
        channel: Channel,
    ) -> AggregateResult:
        decoder, length, context = self._decoder(round_idx=round_idx, n=len(ids), weights=w, dim=dim)
        cfg = self.options.round_config(n=len(ids), bits=int(decoder.bits))
        session = SecAggServerSession(
            config=cfg,
            round_idx=round_idx,
            participants=ids,
            vector_length=length,
            context=context,
            pki=self._pki,
        )
        rejected = 0
        while not session.done:
            stage = session.stage
            requests = session.requests()
            answers = channel.exchange(stage=stage.wire_name, requests=requests)
            answers = {u: data for u, data in answers.items() if u in requests}
            before = len(answers)
            session.receive(responses=answers, drop_invalid=True)
            accepted = {
                Stage.ADVERTISE_KEYS: session.u1,
                Stage.SHARE_KEYS: session.u2,
                Stage.COLLECT_MASKED_INPUT: session.u3,
                Stage.CONSISTENCY_CHECK: session.u4,
                Stage.UNMASK: session.u5,
            }[stage]
            rejected += before - len(accepted)
        result = session.result()
        survivors = list(result.survivors)
        total = np.asarray(decoder.decode(total=result.total, n_summed=len(survivors)), dtype=np.float64)
        if total.shape != (dim,):
            raise MessageError(f"decoded aggregate has shape {total.shape}, expected ({dim},)")
        metrics: dict[str, float | int | str] = {
            "protocol": self.mode,
            "n": result.params.n,
            "k": result.params.k,
            "t": result.params.t,
            "bits": result.params.bits,
            "survivors": len(survivors),
            "bytes_sent_per_client": float(result.metrics["bytes_sent_per_client"]),
            "bytes_received_per_client": float(result.metrics["bytes_received_per_client"]),
            "unmask_s": float(result.metrics["unmask_s"]),
            "rejected_responses": rejected,
            "aborted": 0,
        }
        return AggregateResult(
            total=total,
            weight_sum=math.fsum(weights[u] for u in survivors),
            survivors=survivors,
            dropped=sorted(set(ids) - set(survivors)),
            metrics=metrics,
        )


class SecureClientAggregator(_SecureAggregator, ClientAggregator):
    """Client side: encodes ``weight * update`` and answers each stage with masked data only.

    Args:
        client_id: This client's id (its site id).
        options: The protocol's settings; must equal the server's (``k`` / ``t`` ``None``
            accept the server's if they meet the targets). Default: :func:`secagg_options`.
        encoder: Encoder used instead of the quantiser (same for every round).
        encoder_factory: ``round_idx -> encoder`` for per-round encoders.
        signing_key: This client's long-term Ed25519 key (active variant).
        pki: Ed25519 verification key of every client id (active variant).

    Raises:
        ConfigError: On invalid options.
    """

    def __init__(
        self,
        *,
        client_id: int,
        options: SecAggOptions | None = None,
        encoder: IntegerEncoder | None = None,
        encoder_factory: EncoderFactory | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        pki: Mapping[int, bytes] | None = None,
    ) -> None:
        options = options if options is not None else secagg_options()
        super().__init__(options=options, encoder=encoder, encoder_factory=encoder_factory, pki=pki)
        if options.active and (signing_key is None or pki is None):
            raise ConfigError("the active variant needs signing_key and pki")
        self.client_id = int(client_id)
        self._signing_key = signing_key
        # rounding coin flips (not security critical; unbiased); one OS-seeded generator per client
        self._rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))
        self._session: SecAggClientSession | None = None
        self._round: int | None = None
        #: The latest round for which this client started a protocol run (answered a setup).
        self.bound_round: int | None = None
        self._bound_path: Path | None = None
        self.refusals = 0
        self.last_error: str | None = None
        #: The exception behind the latest refusal (typed; ``None`` before any refusal).
        self.last_exception: Exception | None = None

    def persist_bound_round(self, *, path: str | Path) -> None:
        """Keep :attr:`bound_round` in ``path``, so that a restarted client still refuses a second run.

        One update takes part in one protocol run: a server that restarts a client (or resumes a
        run) and replays a round's setup could otherwise run the protocol again on the same
        (deterministically retrained) update and subtract the two sums. The file is read now and
        rewritten durably (write, fsync, rename) before the keys of every new run leave.

        Args:
            path: The state file (its folder must exist), e.g. in the site's state directory.

        Raises:
            ConfigError: If the file exists but does not hold a valid round number (the client
                refuses to start rather than forget what it bound).
        """
        state = Path(path)
        if state.exists():
            try:
                value = json.loads(state.read_text(encoding="utf-8"))["bound_round"]
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"bound_round must be a non-negative integer, got {value!r}")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{state}: unreadable secure-aggregation state ({exc}); refusing to start"
                ) from exc
            self.bound_round = value if self.bound_round is None else max(value, self.bound_round)
        self._bound_path = state

    def handle(
        self, *, stage: str, request: bytes, update: np.ndarray, weight: float, round_idx: int
    ) -> bytes:
        """Answer one stage; an empty answer means "refused" (the server counts it as a dropout).

        Args:
            stage: Stage name (a :attr:`protocols.Stage.wire_name`).
            request: The server's request bytes.
            update: This client's flat float32 update.
            weight: Its public weight.
            round_idx: The round number.

        A setup (ADVERTISE_KEYS) for a round at or before :attr:`bound_round` is refused with
        :class:`protocols.DuplicateRunError` before it is parsed: one update takes part in one
        protocol run.

        Returns:
            Response bytes (masked data, encrypted shares, or shares for unmasking), or ``b""``
            for a refusal (:attr:`last_exception` says why).

        Raises:
            MessageError: If ``stage`` is not a secure-aggregation stage.
        """
        try:
            st = Stage.from_wire_name(stage)
        except KeyError as exc:
            raise MessageError(f"unknown secure-aggregation stage {stage!r}") from exc
        try:
            if st == Stage.ADVERTISE_KEYS:
                if self.bound_round is not None and round_idx <= self.bound_round:
                    # the refusal leaves the running session (if any) untouched
                    raise DuplicateRunError(
                        f"client {self.client_id}: a protocol run for round {self.bound_round} "
                        f"already started; refusing a new setup for round {round_idx}"
                    )
                session = self._new_session(
                    request=request, update=update, weight=weight, round_idx=round_idx
                )
                reply = session.handle(request)
                # answered with keys: this round's update is now bound to this run, durably
                # before the keys leave when the client keeps state (a restart must not forget it)
                if self._bound_path is not None:
                    atomic_write_text(path=self._bound_path, text=json.dumps({"bound_round": int(round_idx)}))
                self._session, self._round, self.bound_round = session, round_idx, round_idx
                return reply
            current = self._session
            if current is None or self._round != round_idx:
                raise MessageError(
                    f"client {self.client_id}: no secure-aggregation session for round {round_idx}"
                )
            value = None
            if st == Stage.COLLECT_MASKED_INPUT:
                value = self._encode(update=update, weight=weight, round_idx=round_idx, session=current)
            return current.handle(request, value=value)
        except (ProtocolError, ConfigError, MessageError) as exc:
            self.refusals += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.last_exception = exc
            return b""

    def _new_session(
        self, *, request: bytes, update: np.ndarray, weight: float, round_idx: int
    ) -> SecAggClientSession:
        """Check the server's context against this client's options, then open a session."""
        _, body = unpack_message(request)
        setup = decode_setup(body)
        check_limits(setup.config)  # the server chose n and k: caps first, in constant time
        try:
            ctx = json.loads(setup.context.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MessageError("secure-aggregation context is not JSON") from exc
        if not isinstance(ctx, dict) or ctx.get("v") != _CONTEXT_VERSION:
            raise MessageError(f"unsupported secure-aggregation context {ctx!r}")
        dim = int(np.asarray(update).shape[0])
        encoder = self._encoder_for(round_idx)
        if ctx.get("dim") != dim:
            raise ConfigError(f"server aggregates vectors of length {ctx.get('dim')}, this update has {dim}")
        if encoder is not None:
            length = int(getattr(encoder, "encoded_dim", dim))
            if (
                ctx.get("encoder") != "custom"
                or ctx.get("bits") != encoder.bits
                or ctx.get("encoded_dim") != length
            ):
                raise ConfigError(f"server's encoder settings {ctx} do not match this client's encoder")
        else:
            length = dim
            if ctx.get("encoder") != "stochastic-quantizer":
                raise ConfigError(f"server uses encoder {ctx.get('encoder')!r}, this client the quantiser")
            clip, precision_bits = self.options.clip, self.options.precision_bits
            if ctx.get("clip") != clip or ctx.get("precision_bits") != precision_bits:
                raise ConfigError(f"server's quantiser {ctx} differs from clip={clip}, f={precision_bits}")
            w_max = float(ctx.get("w_max", 0.0))
            if not (math.isfinite(weight) and 0 < weight <= w_max * (1 + 1e-12)):
                raise ConfigError(
                    f"weight {weight} exceeds the largest weight {w_max} the modulus was sized for"
                )
        if setup.config.bits != ctx.get("bits"):
            raise ConfigError("context bit width differs from the protocol's")
        n = setup.config.n
        assert n is not None
        return SecAggClientSession(
            client_id=self.client_id,
            config=self.options.round_config(n=n),
            round_idx=round_idx,
            vector_length=length,
            context=setup.context,
            signing_key=self._signing_key,
            pki=self._pki,
        )

    def _encode(
        self, *, update: np.ndarray, weight: float, round_idx: int, session: SecAggClientSession
    ) -> np.ndarray:
        assert session.params is not None
        x = weight * np.asarray(update, dtype=np.float64).ravel()
        encoder = self._encoder_for(round_idx)
        if encoder is None:
            encoder = StochasticQuantizer(
                clip=self.options.clip * weight,
                precision_bits=self.options.precision_bits,
                n_clients=1,
                bits=session.params.bits,
                rng=self._rng,
            )
        return encoder.encode(x=x)


# --------------------------------------------------------------------------- runtime factories
def simulated_identity(*, seed: int, client_id: int) -> Ed25519PrivateKey:
    """Ed25519 key of a client in the *simulated* PKI (derived from the experiment seed).

    Anyone who knows the seed can forge these signatures: this exercises the active variant's
    code path inside one simulation and is not a security boundary. A deployment must provision
    keys out of band and pass ``signing_key`` / ``pki`` to the aggregators.

    Args:
        seed: Experiment seed.
        client_id: Client id.

    Returns:
        The signing key.
    """
    ikm = hashlib.sha256(f"secfed-simulated-pki/{seed}".encode()).digest()
    raw = hkdf_sha256(ikm=ikm, salt=b"secfed-simulated-pki", info=str(client_id).encode(), length=32)
    return Ed25519PrivateKey.from_private_bytes(raw)


def simulated_pki(config: ExperimentConfig) -> dict[int, bytes]:
    """Ed25519 public keys of every site for the active-adversary mode, derived from the seed.

    A simulation convenience, not a security boundary (anyone knowing the seed can sign as any
    site); it warns every time. A deployment passes the sites' real public keys instead.

    Args:
        config: Experiment configuration.

    Returns:
        Site id -> raw Ed25519 public key.
    """
    warnings.warn(
        "secagg.active uses a simulated PKI derived from the experiment seed (not a security boundary)",
        stacklevel=3,
    )
    seed = config.experiment.seed
    return {
        u: ed25519_public_bytes(simulated_identity(seed=seed, client_id=u))
        for u in range(config.partition.num_sites)
    }


def _needs_encoder(*, config: ExperimentConfig, encoder_factory: EncoderFactory | None) -> None:
    if config.privacy.mode == "distributed" and encoder_factory is None:
        raise ConfigError(
            "privacy.mode='distributed' needs the privacy package's encoder: pass its "
            "encoder_factory (secfed.components.build_server_aggregator / build_client_aggregator do)"
        )


def make_server_aggregator(
    *, config: ExperimentConfig, encoder_factory: EncoderFactory | None = None
) -> SecureServerAggregator:
    """Server aggregator for ``federation.aggregation`` in ``{"secagg", "secagg+"}``.

    It holds :func:`protocol_options` of ``config``. The assumed dropout rate is
    ``federation.dropout_rate + federation.straggler_rate``; a round that cannot finish safely is
    skipped (``on_abort="skip"``) rather than ending the run.

    Args:
        config: Experiment configuration.
        encoder_factory: The per-round encoder of a distributed-DP or noise-sharing run
            (``None``: the default quantiser).

    Returns:
        The aggregator.

    Raises:
        ConfigError: If the configuration asks for distributed DP without ``encoder_factory``,
            or on invalid options.
    """
    _needs_encoder(config=config, encoder_factory=encoder_factory)
    pki = simulated_pki(config) if config.secagg.active else None
    return SecureServerAggregator(
        options=protocol_options(config), encoder_factory=encoder_factory, pki=pki, on_abort="skip"
    )


def make_client_aggregator(
    *, config: ExperimentConfig, site_id: int, encoder_factory: EncoderFactory | None = None
) -> SecureClientAggregator:
    """Client aggregator matching :func:`make_server_aggregator`.

    Args:
        config: Experiment configuration.
        site_id: This site's id.
        encoder_factory: As :func:`make_server_aggregator` (the client's side of the encoder).

    Returns:
        The aggregator.

    Raises:
        ConfigError: As :func:`make_server_aggregator`.
    """
    _needs_encoder(config=config, encoder_factory=encoder_factory)
    signing_key = pki = None
    if config.secagg.active:
        pki = simulated_pki(config)
        signing_key = simulated_identity(seed=config.experiment.seed, client_id=site_id)
    return SecureClientAggregator(
        client_id=site_id,
        options=protocol_options(config),
        encoder_factory=encoder_factory,
        signing_key=signing_key,
        pki=pki,
    )
