"""Shared fixtures of the data tests: paths to the shared real data and PNG encoding.

Small synthetic datasets come from the ``make_dataset`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
OMNIGLOT_ROOT = SHARED_DATA / "omniglot"
PNEUMONIA_NPZ = SHARED_DATA / "medmnist" / "pneumoniamnist.npz"


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    if not (OMNIGLOT_ROOT / "images_background_small1.zip").is_file():
        pytest.skip(f"Omniglot small archives not found in {OMNIGLOT_ROOT} (shared data missing)")
    return OMNIGLOT_ROOT


@pytest.fixture(scope="session")
def pneumonia_npz() -> Path:
    if not PNEUMONIA_NPZ.is_file():
        pytest.skip(f"PneumoniaMNIST not found at {PNEUMONIA_NPZ} (shared data missing)")
    return PNEUMONIA_NPZ


@pytest.fixture(scope="session")
def omniglot_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache directory for the whole session, so each archive is decoded once."""
    return tmp_path_factory.mktemp("secfed-cache")


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def png_bytes() -> Callable[[np.ndarray], bytes]:
    """Encode a 2-D uint8 array as a greyscale PNG."""
    return _png_bytes
