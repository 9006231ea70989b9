"""Shared fixtures of the attack tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread() -> Iterator[None]:
    """Run each test on one intra-op thread (restored afterwards).

    Double backpropagation through small convolutions is dominated by thread synchronisation; on a
    shared 2-core machine two threads were measured 8x slower than one.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
