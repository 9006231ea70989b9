"""The single error hierarchy of :mod:`protocols`.

Every error raised by this package is a :class:`ProtocolError`. The subclasses say *what* went
wrong so that callers (the runtime, tests) can react to the kind of failure without parsing text.
Their names are this package's own: the runtime's :class:`secfed.errors.ConfigError` and
:class:`secfed.errors.MessageError` are other classes (this package imports nothing of ours), so
a name never stands for two unrelated classes (``tests/test_error_roots.py`` checks it):

* :class:`ProtocolConfigError` -- invalid or insecure parameters, detected before any work is done.
* :class:`ProtocolMessageError` -- a wire message is malformed, truncated, of an unknown version, for
  another session, for another stage, duplicated or replayed.
* :class:`SecurityError` -- a cryptographic or consistency check failed (bad ciphertext or
  signature, invalid public key, inconsistent survivor/dropped lists, wrong reconstruction).
* :class:`AbortError` -- the protocol cannot finish safely (too few survivors); no share is
  released after it is raised.
"""

from __future__ import annotations

__all__ = [
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
    "DuplicateRunError",
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
]


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocols`."""


# --------------------------------------------------------------------------- configuration
class ProtocolConfigError(ProtocolError, ValueError):
    """A parameter is invalid or does not meet the security/correctness targets."""


class OverflowRiskError(ProtocolConfigError):
    """The chosen bit width could let the (masked) integer sum wrap around."""


# --------------------------------------------------------------------------- wire messages
class ProtocolMessageError(ProtocolError, ValueError):
    """A wire message cannot be accepted."""


class MalformedMessageError(ProtocolMessageError):
    """A message has a bad magic, bad field value, wrong length or trailing bytes."""


class TruncatedMessageError(MalformedMessageError):
    """A message ended before all of its declared fields were read."""


class VersionError(ProtocolMessageError):
    """A message carries a wire-format version this implementation does not speak."""


class SessionMismatchError(ProtocolMessageError):
    """A message belongs to another session (other round, parameters or key set)."""


class StageError(ProtocolMessageError):
    """A message is for a stage other than the one the state machine is in (out of order, late)."""


class ReplayError(ProtocolMessageError):
    """A message for a stage that was already handled arrived again (duplicate or replay)."""


class DuplicateRunError(ReplayError):
    """A second protocol run was requested for a round whose update is already bound to a run.

    Running the protocol twice on one update and leaving a client's masked input out of the
    second run would reveal that input as the difference of the two sums.
    """


class DuplicateEntryError(ProtocolMessageError):
    """A list inside a message repeats a client id, a public key or another unique entry."""


# --------------------------------------------------------------------------- security checks
class SecurityError(ProtocolError):
    """A cryptographic or protocol-consistency check failed."""


class AuthenticationError(SecurityError):
    """An AEAD ciphertext or a signature did not verify (tampering, wrong AAD, other session)."""


class InvalidKeyError(SecurityError):
    """A public key is malformed, of low order, or repeated."""


class InconsistentViewError(SecurityError):
    """The server's lists (survivors, dropped, U3) contradict each other or what a client saw."""


class ReconstructionError(SecurityError):
    """A reconstructed secret is inconsistent (for example s_sk does not derive the advertised s_pk)."""


# --------------------------------------------------------------------------- aborts
class AbortError(ProtocolError, RuntimeError):
    """The protocol must stop; nothing further (in particular no share) is released."""


class ThresholdError(AbortError):
    """Fewer than ``t`` clients (or neighbours) remain at some stage."""


class SessionAbortedError(AbortError):
    """The session already failed earlier and refuses any further message."""


class DropoutBoundError(AbortError):
    """More clients dropped than the parameters were designed for, or the survivors' graph split.

    In a SecAgg+ graph either would let the server rebuild the sum of a proper subset of the
    survivors (one component), so no share is released.
    """
