"""Typed errors of the evaluations package. Every error names what was wrong.

They derive from :class:`secfed.errors.SecfedError`, so the ``secfed`` command line reports them
as errors (exit status 2 for invalid input) instead of tracebacks.
"""

from __future__ import annotations

from secfed.errors import SecfedError

__all__ = ["EvaluationError", "ReportInputError", "SweepError", "BenchError"]


class EvaluationError(SecfedError):
    """Base class of all evaluations errors."""


class ReportInputError(EvaluationError, ValueError):
    """The folder given to the report is not a run or sweep directory, or one of its files is malformed."""


class SweepError(EvaluationError, ValueError):
    """A sweep's grid, configuration or output folder is invalid (names the value and what is allowed)."""


class BenchError(EvaluationError, ValueError):
    """Invalid benchmark-driver arguments (for example an unknown ``--only`` name)."""
