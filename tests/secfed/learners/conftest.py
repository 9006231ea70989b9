"""Shared fixture of the learner tests (helpers live in ``learner_blobs.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_single_thread() -> Iterator[None]:
    """Seed torch and use one intra-op thread for these tiny models.

    With two threads on a busy two-core machine, OpenMP spin-waiting made the same tests
    20x slower; one thread is also the fastest setting for models this small. Restored after.
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
