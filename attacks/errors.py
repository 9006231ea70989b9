"""Typed errors of the attack library. Every error names what was wrong.

They derive from :class:`secfed.errors.SecfedError` (as :mod:`evaluations.errors` does), so the
``secfed`` command line reports them as errors (exit status 2 for invalid input, 1 otherwise)
instead of tracebacks, and one ``except SecfedError`` covers the runtime and the attacks on it.
"""

from __future__ import annotations

from secfed.errors import SecfedError

__all__ = ["AttackError", "AttackConfigError", "AttackInputError", "ThreatModelError"]


class AttackError(SecfedError):
    """Base class of all errors raised by :mod:`attacks` (a :class:`secfed.errors.SecfedError`)."""


class AttackConfigError(AttackError, ValueError):
    """An attack configuration value is invalid (the message names the field and allowed values)."""


class AttackInputError(AttackError, ValueError):
    """Attack inputs are malformed: wrong shape, dtype, length, or inconsistent with each other."""


class ThreatModelError(AttackError, TypeError):
    """An attacker entry point received an object its threat model does not grant (e.g. ground truth)."""
