"""Benchmark scripts: ``python -m evaluations.benchmarks.NAME``; all: ``python -m evaluations.bench``.

Benchmarks that read data or reference code the repository does not ship (the Omniglot archives,
MedMNIST, Flower's SecAgg benchmark) find them in the folder named by the environment variable
``SECFED_SHARED`` (:func:`shared_dir`); unset, the folder ``shared`` beside the repository's root.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED_ENV", "shared_dir"]

#: Environment variable naming the folder of data and reference code outside the repository.
SHARED_ENV = "SECFED_SHARED"


def shared_dir() -> Path:
    """The folder of data and reference code that benchmarks read but the repository does not ship.

    Returns:
        ``$SECFED_SHARED`` if set, else ``shared`` beside the repository's root folder.
    """
    env = os.environ.get(SHARED_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"
