"""Typed errors of the secfed runtime. Every error names what was wrong."""

from __future__ import annotations

__all__ = [
    "SecfedError",
    "ConfigError",
    "MissingDependencyError",
    "DataError",
    "MessageError",
    "CheckpointError",
    "RunDirectoryError",
    "IntegrityError",
    "BackendError",
]


class SecfedError(Exception):
    """Base class of all secfed runtime errors."""


class ConfigError(SecfedError, ValueError):
    """A configuration key or value is invalid (the message names the key and allowed values)."""


class MissingDependencyError(ConfigError):
    """The configuration selects a feature whose optional package is not installed.

    The message names the setting, the missing package and the ``pip install`` command.
    """


class DataError(SecfedError, ValueError):
    """Data is missing, malformed, or insufficient for the requested tasks (names the path)."""


class MessageError(SecfedError, ValueError):
    """A serialised message is malformed, truncated, or of an unexpected kind."""


class CheckpointError(SecfedError, RuntimeError):
    """A checkpoint or run directory is missing, inconsistent, or corrupted."""


class RunDirectoryError(CheckpointError, ValueError):
    """A path given as a run directory is not one (no ``config.toml``): invalid input.

    The ``secfed`` command exits with status 2 on it, like any other invalid input.
    """


class IntegrityError(CheckpointError):
    """A run record (the privacy ledger) failed its integrity check or cannot be verified.

    The ``secfed`` command exits with status 1 on it (``secfed report`` after writing the report).
    """


class BackendError(SecfedError, RuntimeError):
    """A federation backend failed (for example a client process died unexpectedly)."""
