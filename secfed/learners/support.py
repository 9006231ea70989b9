"""What a learner adapts to: the support set of an episode, and its validation.

:class:`SupportSet` is the one typed value a learner's prediction hook receives
(:meth:`secfed.learners.base.Learner.predict` validates the support set and the queries once, with
:func:`check_support_query`, then hands the learner a ``SupportSet``). The checks are pure and
imported by :mod:`secfed.learners.common` as well, so that bad input fails with a typed error
before any work is done.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from secfed.errors import DataError
from secfed.tasks.base import Task

__all__ = ["SupportSet", "check_support_query", "check_task"]


@dataclass(frozen=True)
class SupportSet:
    """The labelled records a learner adapts to before classifying queries.

    Attributes:
        x: Support inputs ``(S, *input_shape)``, floating point.
        y: Support labels ``(S,)``, int64 in ``[0, n_way)``.
        n_way: Number of classes.
    """

    x: torch.Tensor
    y: torch.Tensor
    n_way: int

    @classmethod
    def of(cls, task: Task) -> SupportSet:
        """The support set of a task.

        Args:
            task: The episode.

        Returns:
            Its support inputs, labels and ``n_way`` (the same tensors, not copies).
        """
        return cls(x=task.support_x, y=task.support_y, n_way=task.n_way)


def _check_labels(*, name: str, labels: torch.Tensor, n_way: int) -> None:
    """Refuse an empty ``name`` set or labels outside ``[0, n_way)`` (``name``: support or query)."""
    if labels.numel() == 0:
        raise DataError(f"{name} set is empty")
    lo, hi = int(labels.min().item()), int(labels.max().item())
    if lo < 0 or hi >= n_way:
        raise DataError(f"{name}_y must lie in [0, {n_way}), got values in [{lo}, {hi}]")


def check_support_query(
    *,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    n_way: int,
    query_x: torch.Tensor,
    require_all_classes: bool = True,
) -> None:
    """Validate a support set and query inputs.

    Args:
        support_x: ``(S, *input_shape)`` floating inputs.
        support_y: ``(S,)`` int64 labels in ``[0, n_way)``, every class present at least once.
        n_way: Number of classes (>= 1).
        query_x: ``(Q, *input_shape)`` floating inputs.
        require_all_classes: Require a support record of every class (prototype learners);
            learners with a shared classification head accept support sets that miss classes
            (client-as-task with label skew).

    Raises:
        DataError: Naming the inconsistent field.
    """
    if isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 1:
        raise DataError(f"n_way must be an int >= 1, got {n_way!r}")
    if not support_x.is_floating_point() or not query_x.is_floating_point():
        raise DataError(f"support_x/query_x must be floating point, got {support_x.dtype}/{query_x.dtype}")
    if support_y.dtype != torch.int64 or support_y.ndim != 1:
        raise DataError(
            f"support_y must be a 1-D int64 tensor, got {support_y.dtype} of shape {tuple(support_y.shape)}"
        )
    if support_x.ndim < 2 or support_x.shape[0] != support_y.shape[0]:
        raise DataError(
            f"support_x must be (S, *input_shape) with S == len(support_y) = {support_y.shape[0]}, "
            f"got shape {tuple(support_x.shape)}"
        )
    if query_x.ndim != support_x.ndim or query_x.shape[1:] != support_x.shape[1:]:
        raise DataError(
            f"query_x records must have the support records' shape {tuple(support_x.shape[1:])}, "
            f"got {tuple(query_x.shape[1:])}"
        )
    _check_labels(name="support", labels=support_y, n_way=n_way)
    counts = torch.bincount(support_y, minlength=n_way)
    if require_all_classes and bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise DataError(f"every class needs at least one support record; classes {missing} have none")


def check_task(*, task: Task, require_all_classes: bool = True) -> None:
    """Validate one task (support set, query set, labels).

    Args:
        task: The task.
        require_all_classes: See :func:`check_support_query`.

    Raises:
        DataError: Naming the inconsistent field.
    """
    if not isinstance(task, Task):
        raise DataError(f"expected a Task, got {type(task).__name__}")
    check_support_query(
        support_x=task.support_x,
        support_y=task.support_y,
        n_way=task.n_way,
        query_x=task.query_x,
        require_all_classes=require_all_classes,
    )
    qy = task.query_y
    if qy.dtype != torch.int64 or qy.ndim != 1 or qy.shape[0] != task.query_x.shape[0]:
        raise DataError(
            f"query_y must be a 1-D int64 tensor of length {task.query_x.shape[0]}, "
            f"got {qy.dtype} of shape {tuple(qy.shape)}"
        )
    _check_labels(name="query", labels=qy, n_way=task.n_way)
