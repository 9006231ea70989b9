"""What every privacy accountant shares: the versioned JSON state, and RDP composition.

An accountant's state is plain JSON tagged with :data:`ACCOUNTANT_STATE_FORMAT`, a version and the
accountant kind (:func:`state_header` checks it, :func:`loads_state` parses it; malformed state
raises :class:`~privacy.errors.AccountantStateError`). RDP accountants compose a grouped history
additively (:func:`composed_rdp`) and convert to (ε, δ) (:func:`rdp_privacy_spent`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from privacy.analysis._checks import check_delta
from privacy.analysis.conversion import rdp_to_epsilon
from privacy.errors import AccountantStateError

__all__ = [
    "ACCOUNTANT_STATE_FORMAT",
    "ACCOUNTANT_STATE_VERSION",
    "composed_rdp",
    "loads_state",
    "rdp_privacy_spent",
    "state_header",
]

ACCOUNTANT_STATE_FORMAT = "secfed.privacy.accountant"
ACCOUNTANT_STATE_VERSION = 1

_K = TypeVar("_K")


def state_header(state: Any, kind: str) -> Mapping[str, Any]:
    """Check the tags of an accountant state.

    Args:
        state: the parsed state.
        kind: the accountant kind it must be for.

    Returns:
        ``state``.

    Raises:
        AccountantStateError: not an object, another format, version or kind, or no params/history.
    """
    if not isinstance(state, Mapping):
        raise AccountantStateError(f"accountant state must be a JSON object, got {type(state).__name__}")
    if state.get("format") != ACCOUNTANT_STATE_FORMAT:
        raise AccountantStateError(f"not an accountant state (format={state.get('format')!r})")
    if state.get("version") != ACCOUNTANT_STATE_VERSION:
        raise AccountantStateError(
            f"unsupported accountant state version {state.get('version')!r} "
            f"(expected {ACCOUNTANT_STATE_VERSION})"
        )
    if state.get("kind") != kind:
        raise AccountantStateError(f"state is for a {state.get('kind')!r} accountant, not {kind!r}")
    for key in ("params", "history"):
        if key not in state:
            raise AccountantStateError(f"accountant state misses {key!r}")
    return state


def loads_state(text: str) -> Any:
    """Parse an accountant's JSON state.

    Args:
        text: the JSON text.

    Returns:
        The parsed value (checked by :func:`state_header` afterwards).

    Raises:
        AccountantStateError: not a str, or not valid JSON.
    """
    if not isinstance(text, str):
        raise AccountantStateError(f"accountant JSON must be a str, got {type(text).__name__}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AccountantStateError(f"accountant state is not valid JSON: {exc}") from exc


def composed_rdp(
    orders: np.ndarray, groups: Mapping[_K, int], curve: Callable[[_K], np.ndarray]
) -> np.ndarray:
    """Total RDP of a grouped history: ``Σ n · curve(key)`` (RDP composes additively)."""
    total = np.zeros(orders.shape)
    for key, n in groups.items():
        total = total + n * curve(key)
    return total


def rdp_privacy_spent(
    orders: np.ndarray, total_rdp: Callable[[], np.ndarray], *, recorded: bool, delta: float
) -> tuple[float, float]:
    """``(ε, best order)`` at δ of an RDP accountant; ``(0.0, nan)`` if nothing was recorded."""
    delta = check_delta(delta)
    if not recorded:
        return 0.0, math.nan
    return rdp_to_epsilon(orders=orders, rdp=total_rdp(), delta=delta)
