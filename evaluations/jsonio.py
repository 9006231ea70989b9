"""Small, dependency-free helpers to read and write the JSON files of run and sweep directories.

Run directories may hold non-finite numbers written in either of two spellings: Python's
``Infinity`` / ``NaN`` tokens (``json.dumps`` default) or the string ``"inf"`` (the privacy
ledger's strict-JSON spelling). :func:`as_float` accepts both; :func:`strict` turns values back into
strict JSON (non-finite floats become ``"inf"``, ``"-inf"`` or ``null``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evaluations.errors import ReportInputError
from privacy.atomic import atomic_write_text  # the one helper (re-exported here for the reports)

__all__ = ["read_json", "read_jsonl", "as_float", "strict", "dumps_strict", "atomic_write_text"]

_INF_WORDS = {
    "inf": math.inf,
    "+inf": math.inf,
    "infinity": math.inf,
    "-inf": -math.inf,
    "-infinity": -math.inf,
}


def read_json(*, path: Path) -> Any:
    """Parse one JSON file.

    Args:
        path: The file.

    Returns:
        The parsed value.

    Raises:
        ReportInputError: If the file cannot be read or is not valid JSON (names the file).
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportInputError(f"{path}: cannot read JSON: {exc}") from exc


def read_jsonl(*, path: Path) -> list[Any]:
    """Parse a JSON-lines file, keeping complete lines only (a torn last line is ignored).

    Args:
        path: The file.

    Returns:
        One value per complete line.

    Raises:
        ReportInputError: If the file cannot be read, or a line other than the last is malformed.
    """
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{path}: cannot read: {exc}") from exc
    out: list[Any] = []
    for i, line in enumerate(lines, start=1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines):
                break  # torn last line from a crash
            raise ReportInputError(f"{path}: line {i} is not valid JSON: {exc}") from exc
    return out


def as_float(*, value: Any) -> float | None:
    """A number from a JSON value: numbers, numeric strings and ``"inf"`` spellings.

    Args:
        value: Any JSON value.

    Returns:
        The float, or ``None`` for anything that is not a number (booleans included).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _INF_WORDS:
            return _INF_WORDS[word]
        try:
            return float(word)
        except ValueError:
            return None
    return None


def strict(*, value: Any) -> Any:
    """A copy of ``value`` that is strict JSON (no ``Infinity``/``NaN``, paths as strings).

    Args:
        value: Nested dicts, lists, tuples, numbers, strings, paths.

    Returns:
        The converted value: ``inf`` becomes ``"inf"``, ``-inf`` ``"-inf"``, NaN ``None``.
    """
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, Mapping):
        return {str(k): strict(value=v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(value=v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return strict(value=value.item())
    return value


def dumps_strict(*, value: Any) -> str:
    """Strict-JSON text of ``value`` (see :func:`strict`), indented, ending with a newline."""
    return json.dumps(strict(value=value), indent=1, allow_nan=False) + "\n"
