"""Typed errors of the ``privacy`` package.

Every error raised on purpose by this package derives from :class:`PrivacyError`, so callers can
catch the whole family at once. Errors about bad arguments also derive from :class:`ValueError`
(so generic validation code keeps working).
"""

from __future__ import annotations

__all__ = [
    "AccountantStateError",
    "BudgetExceededError",
    "CalibrationError",
    "EncodingError",
    "InvalidInputError",
    "InvalidPrivacyConfigError",
    "LedgerAuthenticationError",
    "LedgerCorruptedError",
    "LedgerError",
    "LedgerKeyError",
    "LedgerTruncatedError",
    "LedgerUnverifiableError",
    "PrivacyError",
]


class PrivacyError(Exception):
    """Base class of every error raised on purpose by the ``privacy`` package."""


class InvalidPrivacyConfigError(PrivacyError, ValueError):
    """A privacy parameter (noise multiplier, sample rate, delta, bits, clip norm...) is invalid."""


class InvalidInputError(PrivacyError, ValueError):
    """An input array or value handed to a mechanism has the wrong shape, type or contents."""


class BudgetExceededError(PrivacyError):
    """Continuing would exceed a configured privacy budget.

    Attributes:
        reasons: one human-readable reason per site (or the global budget) that would be exceeded.
    """

    def __init__(self, message: str, *, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reasons = reasons


class CalibrationError(PrivacyError):
    """No noise level in the searched range reaches the requested privacy target."""


class AccountantStateError(PrivacyError, ValueError):
    """A serialised accountant state is malformed, of another kind, or of an unknown version."""


class EncodingError(PrivacyError):
    """A distributed-DP encoder could not encode a vector (e.g. conditional rounding never succeeded)."""


class LedgerError(PrivacyError):
    """An operation on the privacy ledger is not allowed (wrong round, missing site, bad path...)."""


class LedgerCorruptedError(LedgerError):
    """The ledger file cannot be trusted: unparsable line, broken hash chain, or inconsistent entries.

    Attributes:
        line_number: 1-based line of the file where the problem was found (``None`` if not line-specific).
    """

    def __init__(self, message: str, *, line_number: int | None = None) -> None:
        super().__init__(message if line_number is None else f"line {line_number}: {message}")
        self.line_number = line_number


class LedgerAuthenticationError(LedgerCorruptedError):
    """A MAC (or the head next to the key) does not match: the ledger was rewritten or forged."""


class LedgerTruncatedError(LedgerCorruptedError):
    """The ledger ends before the last entry its head (kept with the key) says was written."""


class LedgerUnverifiableError(LedgerError):
    """The ledger's integrity cannot be checked (its key is missing, or it is an unkeyed v1 ledger)."""


class LedgerKeyError(LedgerError):
    """The key file is unusable: malformed, readable by others, or inside the ledger's directory."""
