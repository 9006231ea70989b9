"""The randomised Hadamard rotation of distributed DP: ``R = H D / √d`` with shared-seed signs.

Every client and the server of a round derive the same random signs ``D`` from a shared seed
(SHAKE-256, public by design: the server must undo the rotation); ``H`` is the Walsh–Hadamard
transform, applied in O(d log d) by :func:`fwht`. Used by :class:`privacy.distributed.DistributedDPEncoder`
(and importable from :mod:`privacy.distributed`).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from privacy.analysis._checks import check_int
from privacy.errors import InvalidInputError, InvalidPrivacyConfigError

__all__ = ["RandomizedHadamard", "fwht", "next_power_of_two"]

_ROTATION_DOMAIN = b"secfed.privacy.distributed.rotation.v1"


def next_power_of_two(*, n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    n = check_int("n", n, minimum=1)
    return 1 << (n - 1).bit_length()


def fwht(*, x: np.ndarray) -> np.ndarray:
    """Unnormalised fast Walsh–Hadamard transform along the last axis, O(d log d).

    ``fwht(x=fwht(x=v)) == d · v``; ``fwht(x=v) / √d`` is orthogonal and symmetric (Sylvester ordering).

    Args:
        x: real array whose last dimension is a power of two.

    Returns:
        A new float64 array of the same shape.

    Raises:
        InvalidInputError: the last dimension is not a power of two.
    """
    arr = np.array(x, dtype=np.float64, copy=True)
    n = arr.shape[-1] if arr.ndim else 0
    if n < 1 or n & (n - 1):
        raise InvalidInputError(f"fwht needs a last dimension that is a power of two, got {n}")
    lead = arr.shape[:-1]
    h = 1
    while h < n:
        blocks = arr.reshape(*lead, n // (2 * h), 2, h)
        a = blocks[..., 0, :]
        b = blocks[..., 1, :]
        arr = np.stack((a + b, a - b), axis=-2).reshape(*lead, n)
        h *= 2
    return arr


def _rotation_signs(seed: bytes, dim: int) -> np.ndarray:
    digest = hashlib.shake_256(
        _ROTATION_DOMAIN + len(seed).to_bytes(4, "big") + seed + dim.to_bytes(8, "big")
    ).digest((dim + 7) // 8)
    bits = np.unpackbits(np.frombuffer(digest, dtype=np.uint8), bitorder="little")[:dim]
    return 1.0 - 2.0 * bits.astype(np.float64)


class RandomizedHadamard:
    """The orthogonal rotation ``R = H D / √d`` with shared-seed random signs ``D``.

    Args:
        seed: shared seed (>= 16 bytes), identical for all clients and the server of a round.
        dim: d, a power of two.

    Raises:
        InvalidPrivacyConfigError: short seed or ``dim`` not a power of two.
    """

    def __init__(self, *, seed: bytes, dim: int) -> None:
        if not isinstance(seed, (bytes, bytearray)) or len(seed) < 16:
            raise InvalidPrivacyConfigError("rotation seed must be at least 16 bytes")
        d = check_int("dim", dim, minimum=1)
        if d & (d - 1):
            raise InvalidPrivacyConfigError(f"rotation dimension must be a power of two, got {d}")
        self.dim = d
        self._signs = _rotation_signs(bytes(seed), d)
        self._scale = 1.0 / math.sqrt(d)

    def _check(self, v: np.ndarray) -> np.ndarray:
        arr = np.asarray(v, dtype=np.float64)
        if arr.shape[-1:] != (self.dim,):
            raise InvalidInputError(f"expected last dimension {self.dim}, got shape {arr.shape}")
        return arr

    def forward(self, *, x: np.ndarray) -> np.ndarray:
        """``R x`` (along the last axis)."""
        return fwht(x=self._check(x) * self._signs) * self._scale

    def inverse(self, *, y: np.ndarray) -> np.ndarray:
        """``Rᵀ y = D H y / √d`` (along the last axis)."""
        return fwht(x=self._check(y)) * self._scale * self._signs
