"""Argument validation shared by the pure-math modules (raises typed errors before any work)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from privacy.errors import InvalidPrivacyConfigError


def check_finite_nonneg(name: str, value: float) -> float:
    """Return ``value`` as float if finite and >= 0, else raise :class:`InvalidPrivacyConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidPrivacyConfigError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise InvalidPrivacyConfigError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as float if finite and > 0, else raise :class:`InvalidPrivacyConfigError`."""
    v = check_finite_nonneg(name, value)
    if v <= 0:
        raise InvalidPrivacyConfigError(f"{name} must be > 0, got {value!r}")
    return v


def check_rate(name: str, value: float) -> float:
    """Return a probability in [0, 1] as float, else raise :class:`InvalidPrivacyConfigError`."""
    v = check_finite_nonneg(name, value)
    if v > 1:
        raise InvalidPrivacyConfigError(f"{name} must be in [0, 1], got {value!r}")
    return v


def check_delta(delta: float) -> float:
    """Return ``delta`` if it lies in the open interval (0, 1), else raise."""
    v = check_finite_nonneg("delta", delta)
    if not 0 < v < 1:
        raise InvalidPrivacyConfigError(f"delta must be in (0, 1), got {delta!r}")
    return v


def check_int(name: str, value: int, *, minimum: int) -> int:
    """Return ``value`` if it is an integer >= ``minimum`` (bools rejected), else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidPrivacyConfigError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise InvalidPrivacyConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_orders(orders: Sequence[float] | np.ndarray) -> np.ndarray:
    """Return RDP orders as a 1-D float array; every order must be finite and > 1."""
    arr = np.asarray(orders, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidPrivacyConfigError("orders must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 1):
        raise InvalidPrivacyConfigError("every RDP order must be finite and > 1")
    return arr


def check_rdp_curve(name: str, rdp: Sequence[float] | np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Return an RDP curve as a float array: one value per order, each >= 0 (``inf`` allowed)."""
    arr = np.asarray(rdp, dtype=np.float64)
    if arr.shape != orders.shape:
        raise InvalidPrivacyConfigError(
            f"{name} must have one value per order, got {arr.shape} for {orders.shape} orders"
        )
    if np.any(np.isnan(arr)) or np.any(arr < 0):
        raise InvalidPrivacyConfigError(f"{name} values must be >= 0 (inf allowed)")
    return arr
