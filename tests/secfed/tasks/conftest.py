"""Shared fixtures of the task tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from secfed.data import ImageDataset


def _make_dataset(
    counts: list[int], *, name: str = "synthetic", shape: tuple[int, int, int] = (1, 4, 4)
) -> ImageDataset:
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    n = labels.size
    images = np.broadcast_to(
        (np.arange(n, dtype=np.float32) / max(n, 1))[:, None, None, None], (n, *shape)
    ).copy()
    return ImageDataset(
        images=images,
        labels=labels,
        class_names=tuple(f"c{c}" for c in range(len(counts))),
        class_groups=tuple(f"g{c % 2}" for c in range(len(counts))),
        name=name,
        source="memory",
    )


@pytest.fixture(scope="session")
def make_dataset() -> Callable[..., ImageDataset]:
    """``make_dataset(counts, name=..., shape=...)``: ``counts[c]`` records of class ``c``;
    every pixel of record ``i`` equals ``i / N`` so records can be told apart."""
    return _make_dataset
