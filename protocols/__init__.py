"""Secure aggregation: SecAgg (Bonawitz et al., CCS 2017) and SecAgg+ (Bell et al., CCS 2020).

Layering: this package imports nothing else of the project. Pure primitives live in
:mod:`protocols.crypto`, :mod:`protocols.shamir`, :mod:`protocols.prg`,
:mod:`protocols.quantization`, :mod:`protocols.graph` and :mod:`protocols.params`; the wire format
in :mod:`protocols.wire` and :mod:`protocols.messages`; the stateful state machines in
:mod:`protocols.client` and :mod:`protocols.server`; :mod:`protocols.simulate` runs a whole round
in one process. Every error is a :class:`protocols.errors.ProtocolError`.
"""

from protocols.client import SecAggClientSession
from protocols.errors import (
    AbortError,
    AuthenticationError,
    DropoutBoundError,
    DuplicateEntryError,
    DuplicateRunError,
    InconsistentViewError,
    InvalidKeyError,
    MalformedMessageError,
    OverflowRiskError,
    ProtocolConfigError,
    ProtocolError,
    ProtocolMessageError,
    ReconstructionError,
    ReplayError,
    SecurityError,
    SessionAbortedError,
    SessionMismatchError,
    StageError,
    ThresholdError,
    TruncatedMessageError,
    VersionError,
)
from protocols.params import SecAggConfig, SecAggParams, resolve_params
from protocols.quantization import IntegerEncoder, StochasticQuantizer, required_bits, to_signed
from protocols.server import SecAggResult, SecAggServerSession
from protocols.simulate import LocalRound, make_identities, run_local_round
from protocols.stages import ClientState, ServerState, Stage, stage_sequence

__all__ = [
    "SecAggConfig",
    "SecAggParams",
    "resolve_params",
    "SecAggClientSession",
    "SecAggServerSession",
    "SecAggResult",
    "Stage",
    "ClientState",
    "ServerState",
    "stage_sequence",
    "IntegerEncoder",
    "StochasticQuantizer",
    "required_bits",
    "to_signed",
    "LocalRound",
    "run_local_round",
    "make_identities",
    "ProtocolError",
    "ProtocolConfigError",
    "OverflowRiskError",
    "ProtocolMessageError",
    "MalformedMessageError",
    "TruncatedMessageError",
    "VersionError",
    "SessionMismatchError",
    "StageError",
    "ReplayError",
    "DuplicateEntryError",
    "SecurityError",
    "AuthenticationError",
    "InvalidKeyError",
    "InconsistentViewError",
    "ReconstructionError",
    "AbortError",
    "ThresholdError",
    "SessionAbortedError",
    "DropoutBoundError",
    "DuplicateRunError",
]
