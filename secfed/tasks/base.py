"""The task abstraction shared by every learner: a support set and a query set.

A :class:`Task` is what a meta-learner adapts on (support) and is scored on (query).
Labels inside a task are always relabelled to ``0 .. n_way-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

__all__ = ["Task", "TaskSource"]


@dataclass(frozen=True)
class Task:
    """One few-shot task.

    Attributes:
        support_x: Support inputs, shape ``(S, *input_shape)``, float32.
        support_y: Support labels, shape ``(S,)``, int64 in ``[0, n_way)``.
        query_x: Query inputs, shape ``(Q, *input_shape)``, float32.
        query_y: Query labels, shape ``(Q,)``, int64 in ``[0, n_way)``.
        n_way: Number of classes in the task.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    n_way: int

    @property
    def num_examples(self) -> int:
        """Total number of records (support + query) in the task."""
        return int(self.support_y.shape[0] + self.query_y.shape[0])


class TaskSource(Protocol):
    """Anything that draws tasks from a site's own data."""

    def sample(self, *, rng: np.random.Generator) -> Task:
        """Draw one task using ``rng`` as the only source of randomness.

        Args:
            rng: The generator to draw from (determinism comes from seeding it).

        Returns:
            A freshly sampled task.
        """
        ...
