"""Pixel-shift augmentation of records and of the tasks a source draws.

:func:`shift_records` is the per-record circular shift that ``privacy.augmult`` applies inside
the DP engines (:func:`secfed.dp.engines.augment_episode`, De et al. 2022) and that public
pretraining applies to the public episodes (``model.pretrain_shift``, :mod:`secfed.pretrain`).
It lives here, next to the tasks it transforms, so neither user depends on the other.
"""

from __future__ import annotations

import numpy as np
import torch

from secfed.errors import ConfigError
from secfed.tasks.base import Task, TaskSource

__all__ = ["ShiftedTaskSource", "shift_records", "shift_task"]


def shift_records(*, x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each record circularly shifted by its own random offset in ``[-max_shift, max_shift]^2``.

    Args:
        x: Records, shape ``(n, C, H, W)``.
        max_shift: Largest shift in pixels along each axis (0 = identity).
        generator: Source of the offsets (augmentation randomness; the DP guarantee holds for
            every fixed choice of offsets, so it need not be secret).

    Returns:
        The shifted records (a record's output depends on that record alone).

    Raises:
        ConfigError: If ``x`` is not 4-D or ``max_shift`` is negative.
    """
    if x.dim() != 4:
        raise ConfigError(f"shift augmentation needs (n, C, H, W) records, got shape {tuple(x.shape)}")
    if max_shift < 0:
        raise ConfigError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0 or x.shape[0] == 0:
        return x
    shifts = torch.randint(-max_shift, max_shift + 1, (x.shape[0], 2), generator=generator)
    return torch.stack(
        [torch.roll(x[i], shifts=(int(s[0]), int(s[1])), dims=(1, 2)) for i, s in enumerate(shifts)]
    )


def shift_task(*, task: Task, max_shift: int, generator: torch.Generator) -> Task:
    """The task with every support and query record shifted by :func:`shift_records`.

    Args:
        task: The task (raw ``(C, H, W)`` records).
        max_shift: See :func:`shift_records`.
        generator: Source of the offsets (support records first, then query records).

    Returns:
        A new task with the same labels and layout.

    Raises:
        ConfigError: As :func:`shift_records`.
    """
    return Task(
        support_x=shift_records(x=task.support_x, max_shift=max_shift, generator=generator),
        support_y=task.support_y,
        query_x=shift_records(x=task.query_x, max_shift=max_shift, generator=generator),
        query_y=task.query_y,
        n_way=task.n_way,
    )


class ShiftedTaskSource:
    """A :class:`~secfed.tasks.base.TaskSource` whose tasks' records are randomly shifted.

    Every support and query record of every drawn task is shifted by :func:`shift_records`
    with offsets from ``generator`` (labels and task layout unchanged).

    Args:
        source: The source of the unshifted tasks (raw ``(C, H, W)`` records).
        max_shift: Largest shift in pixels along each axis (>= 0; 0 returns the tasks as drawn).
        generator: Source of the offsets (seed it for reproducibility).

    Raises:
        ConfigError: If ``max_shift`` is negative.
    """

    def __init__(self, *, source: TaskSource, max_shift: int, generator: torch.Generator) -> None:
        if max_shift < 0:
            raise ConfigError(f"max_shift must be >= 0, got {max_shift}")
        self.source = source
        self.max_shift = int(max_shift)
        self.generator = generator

    def sample(self, *, rng: np.random.Generator) -> Task:
        """Draw one task from the wrapped source, then shift each of its records.

        Args:
            rng: The generator the wrapped source draws the task with.

        Returns:
            The shifted task.
        """
        task = self.source.sample(rng=rng)
        return shift_task(task=task, max_shift=self.max_shift, generator=self.generator)
