"""Secure aggregation: SecAgg (Bonawitz et al., CCS 2017) and SecAgg+ (Bell et al., CCS 2020).

Layering: this package imports nothing else of the project. Pure primitives live in
:mod:`protocols.crypto`, :mod:`protocols.shamir`, :mod:`protocols.prg`,
:mod:`protocols.quantization`, :mod:`protocols.graph` and :mod:`protocols.params`; the wire format
in :mod:`protocols.wire` and :mod:`protocols.messages`; the stateful state machines in
:mod:`protocols.client` and :mod:`protocols.server`; :mod:`protocols.simulate` runs a whole round
in one process. Every error is a :class:`protocols.errors.ProtocolError`.
"""

from protocols import errors as _errors
from protocols.client import SecAggClientSession
from protocols.errors import *  # noqa: F403  (every error class; errors.__all__ is the one list)
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
    *_errors.__all__,
]
