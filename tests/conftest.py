"""Suite-wide test settings and fixtures."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from secfed.data import ImageDataset

# Test folders have no __init__.py: make the helpers shared between them (tests/helpers_shared.py)
# importable whatever pytest's import mode.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

# CI has 2 cores and runs 2 pytest workers: one torch thread each avoids oversubscription,
# which slows torch's CPU kernels down by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def make_dataset() -> Callable[..., ImageDataset]:
    """``make_dataset(counts, name=..., shape=...)``: ``counts[c]`` records of class ``c``;
    every pixel of record ``i`` equals ``i / N`` so records can be told apart."""
    # Imported here, not at the top: secfed.data pulls in scikit-learn, which most tests never need.
    from helpers_shared import make_image_dataset

    return make_image_dataset


@pytest.fixture(scope="session", autouse=True)
def _ledger_keys_outside_the_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Privacy-ledger keys go to a temporary key directory, never to ``~/.config/secfed/keys``
    (session scope, so that module-scoped fixtures that run experiments see it too)."""
    old = os.environ.get("SECFED_KEY_DIR")
    os.environ["SECFED_KEY_DIR"] = str(tmp_path_factory.mktemp("secfed-keys"))
    yield
    if old is None:
        os.environ.pop("SECFED_KEY_DIR", None)
    else:
        os.environ["SECFED_KEY_DIR"] = old
