"""Typed data errors. All subclass :class:`secfed.errors.DataError`, so callers may catch either.

Every message names the dataset or path involved and the requirement that was not met.
"""

from __future__ import annotations

from secfed.errors import DataError

__all__ = ["DatasetNotFoundError", "DatasetFormatError", "InsufficientDataError", "PartitionError"]


class DatasetNotFoundError(DataError):
    """A data file or folder does not exist (the message names the path that was looked for)."""


class DatasetFormatError(DataError):
    """A data file or folder exists but has the wrong layout, keys, shapes or values."""


class InsufficientDataError(DataError):
    """The data is valid but too small for the request (too few classes, shots or records)."""


class PartitionError(DataError):
    """A federated partition cannot be built as requested (bad scheme, alpha, site count...)."""
