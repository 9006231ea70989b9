"""The task abstraction shared by every learner: a support set and a query set.

A :class:`Task` is what a meta-learner adapts on (support) and is scored on (query).
Labels inside a task are always relabelled to ``0 .. n_way-1``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from secfed.errors import DataError

__all__ = ["Task", "TaskSource", "task_from_indices", "IndexedTaskSource"]


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


def task_from_indices(
    *, images: np.ndarray, support: np.ndarray, query: np.ndarray, n_way: int, k_shot: int, q_query: int
) -> Task:
    """The task whose records are ``images[support]`` and ``images[query]``, taken class by class.

    Args:
        images: The source's records ``(N, C, H, W)`` (float32).
        support: ``n_way * k_shot`` record indices, ``k_shot`` of class 0 first, then class 1, ...
        query: ``n_way * q_query`` record indices in the same class order.
        n_way: Classes of the task.
        k_shot: Support records per class.
        q_query: Query records per class.

    Returns:
        The task, labels ``0 .. n_way-1`` in that order.
    """
    return Task(
        support_x=torch.from_numpy(images[support]),
        support_y=torch.arange(n_way, dtype=torch.int64).repeat_interleave(k_shot),
        query_x=torch.from_numpy(images[query]),
        query_y=torch.arange(n_way, dtype=torch.int64).repeat_interleave(q_query),
        n_way=n_way,
    )


def _positive(value: Any, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise DataError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class IndexedTaskSource:
    """The part shared by the task sources that draw record indices and then gather them.

    A subclass calls :meth:`_set_shape` in its constructor, sets ``_images`` (the records it
    draws from) and builds each task with :meth:`_gather`.

    Attributes:
        n_way: Classes per task.
        k_shot: Support records per class.
        q_query: Query records per class.
    """

    n_way: int
    k_shot: int
    q_query: int
    _images: np.ndarray

    def _set_shape(self, *, n_way: Any, k_shot: Any, q_query: Any) -> None:
        """Check and set the task shape.

        Args:
            n_way: Classes per task.
            k_shot: Support records per class.
            q_query: Query records per class.

        Raises:
            secfed.errors.DataError: If one is not an integer >= 1 (the message names it).
        """
        self.n_way = _positive(n_way, name="n_way")
        self.k_shot = _positive(k_shot, name="k_shot")
        self.q_query = _positive(q_query, name="q_query")

    def _gather(self, *, support: np.ndarray, query: np.ndarray) -> Task:
        """The task of these record indices (:func:`task_from_indices` with this source's shape).

        Args:
            support: ``n_way * k_shot`` record indices, label-major.
            query: ``n_way * q_query`` record indices, label-major.

        Returns:
            The task.
        """
        return task_from_indices(
            images=self._images,
            support=support,
            query=query,
            n_way=self.n_way,
            k_shot=self.k_shot,
            q_query=self.q_query,
        )


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
