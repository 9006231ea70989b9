"""Typed errors of the attack library. Every error names what was wrong."""

from __future__ import annotations

__all__ = ["AttackError", "AttackConfigError", "AttackInputError", "ThreatModelError"]


class AttackError(Exception):
    """Base class of all errors raised by :mod:`attacks`."""


class AttackConfigError(AttackError, ValueError):
    """An attack configuration value is invalid (the message names the field and allowed values)."""


class AttackInputError(AttackError, ValueError):
    """Attack inputs are malformed: wrong shape, dtype, length, or inconsistent with each other."""


class ThreatModelError(AttackError, TypeError):
    """An attacker entry point received an object its threat model does not grant (e.g. ground truth)."""
