"""Seed derivation shared by every part of a run (server, sites, tasks, DP, pretraining).

A seed is derived from named parts (``derive_seed(base_seed, "site", 3)``) by SHA-256, so that it
is the same in every process and on every platform, and two different tuples of parts give
independent-looking seeds. It seeds non-secret randomness (task sampling, initialisation,
partitioning); the noise of a DP release comes from :mod:`privacy.noise`'s cryptographic source.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed derived from the parts (stable across processes and platforms).

    Args:
        *parts: Anything with a stable ``str``.

    Returns:
        A non-negative integer seed.
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
