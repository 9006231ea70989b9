"""Record-level DP for the per-record learners (FedAvg, Reptile): a unit is one record.

* :class:`RecordDPEngineFactory`: per-record DP-SGD (Abadi et al. 2016,
  :class:`privacy.dpsgd.PerSampleDPSGD`): every record's gradient clipped to ``C``, summed, noise
  ``N(0, (zC)^2 I)`` added, divided by the public ``privacy.expected_batch``; FedAvg's local steps
  and Reptile's inner steps.
* Private record sources: every record joins a step's batch independently with rate ``q`` (keyed
  cryptographic coins per stable record id): :class:`PoissonRecordBatches` (FedAvg) and
  :class:`PoissonClassTrainer` (Reptile: tasks are public class sets, :class:`ClassTask` drawn by
  :func:`draw_class_tasks` and handed out by :class:`PlannedClassTasks`, and each inner step
  Poisson-samples the site's records of those classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from privacy.dpsgd import PerSampleDPSGD, SecurePoissonSampler, StepAccountant
from secfed.dp.engines.steps import DPEngineError, dp_optimizer
from secfed.errors import ConfigError
from secfed.learners.common import trainable_params
from secfed.learners.engine import (
    RecordBatch,
    RecordLossFn,
    StepStats,
    cross_entropy_records,
    run_record_steps,
)

__all__ = [
    "ClassTask",
    "PlannedClassTasks",
    "PoissonClassTrainer",
    "PoissonRecordBatches",
    "RecordDPEngineFactory",
    "draw_class_tasks",
]


@dataclass(frozen=True)
class RecordDPEngineFactory:
    """Builds :class:`privacy.dpsgd.PerSampleDPSGD` engines (per-record clipping, Abadi et al. 2016).

    Attributes:
        x: The site's inputs (the engine's own checks; batches come from the learner's loop).
        y: The site's labels.
        noise_multiplier: ``z`` (noise std ``zC``).
        max_grad_norm: ``C``.
        sample_rate: ``q`` of the batch source (what the accountant is told per step).
        normaliser: Public divisor of the noisy sum (``privacy.expected_batch``).
        accountant: Receives one ``step(z, q)`` per DP step.
        record_ids: Stable record ids.
    """

    x: torch.Tensor
    y: torch.Tensor
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    normaliser: int
    accountant: StepAccountant
    record_ids: np.ndarray

    def __call__(
        self, *, model: nn.Module, params: Mapping[str, nn.Parameter], optimizer: str, lr: float
    ) -> _RecordDPEngine:
        """Attach per-record gradients to ``model``; see :class:`secfed.learners.engine.RecordEngineFactory`.

        Raises:
            ConfigError: If ``params`` are not all of the model's trainable parameters.
        """
        if set(params) != set(trainable_params(model)):
            raise ConfigError("per-record DP-SGD trains all of the model's trainable parameters")
        engine = PerSampleDPSGD(
            model=model,
            x=self.x,
            y=self.y,
            noise_multiplier=float(self.noise_multiplier),
            max_grad_norm=float(self.max_grad_norm),
            sample_rate=float(self.sample_rate),
            expected_batch_size=int(self.normaliser),
            lr=float(lr),
            accountant=self.accountant,
            optimizer=dp_optimizer(optimizer),
            record_ids=self.record_ids,
        )
        return _RecordDPEngine(engine=engine)


class _RecordDPEngine:
    """One per-record DP-SGD engine (see :class:`RecordDPEngineFactory`)."""

    def __init__(self, *, engine: PerSampleDPSGD) -> None:
        self._engine = engine

    def step(self, *, batches: Sequence[RecordBatch], loss_fn: RecordLossFn) -> StepStats:
        """Per-record gradients of the batch, clipped, summed, noised, divided; one step.

        Raises:
            DPEngineError: If the step has more than one batch (one Poisson batch per DP step).
        """
        if len(batches) != 1:
            raise DPEngineError(f"a per-record DP step takes exactly one Poisson batch, got {len(batches)}")
        batch = batches[0]

        def per_example(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return loss_fn(outputs, targets, batch.n_way)[0]

        info = self._engine.step_batch(x=batch.x, y=batch.y, per_example_loss=per_example)
        size = info["private/batch_size"]
        return StepStats(
            loss_sum=info["private/loss_sum"] / size if size else 0.0, units=1 if size else 0, steps=1
        )

    def finish(self) -> None:
        """Remove the per-record gradient machinery from the model."""
        self._engine.finish()


class PoissonRecordBatches:
    """FedAvg's private batch source: every record joins each batch independently with rate ``q``.

    Implements :class:`secfed.learners.fedavg.SupervisedBatchSource`; the learner's generator and
    ``batch_size`` are not used (the coins are :class:`privacy.dpsgd.SecurePoissonSampler`'s keyed
    AES PRF of the stable record ids, under a fresh key per object, i.e. per round).

    Args:
        x: The site's inputs.
        y: The site's global labels.
        sample_rate: ``q``.
        record_ids: Stable record ids.
    """

    def __init__(
        self, *, x: torch.Tensor, y: torch.Tensor, sample_rate: float, record_ids: np.ndarray
    ) -> None:
        self._x, self._y = x, y
        self._sampler = SecurePoissonSampler(
            num_samples=int(x.shape[0]), sample_rate=float(sample_rate), record_ids=record_ids
        )

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One Poisson batch (possibly empty): the inputs and labels of the records whose coin came up."""
        index = torch.as_tensor(self._sampler.sample_indices(), dtype=torch.long)
        return self._x[index], self._y[index]

    def sample_batch(self, *, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One Poisson batch (possibly empty); see :meth:`draw`."""
        del rng, batch_size
        return self.draw()


@dataclass(frozen=True)
class ClassTask:
    """A Reptile task under record-level DP: a public set of classes (no records yet).

    Attributes:
        classes: The task's class ids; a record of ``classes[k]`` gets task label ``k``.
    """

    classes: tuple[int, ...]

    @property
    def n_way(self) -> int:
        """Number of classes."""
        return len(self.classes)


def draw_class_tasks(
    *, classes: Sequence[int], n_way: int, count: int, rng: np.random.Generator
) -> list[ClassTask]:
    """Draw ``count`` tasks of ``n_way`` distinct public classes with the runtime's public generator.

    Args:
        classes: The site's public class list.
        n_way: Classes per task.
        count: Number of tasks.
        rng: Public generator.

    Returns:
        The tasks, in order.
    """
    arr = np.asarray(classes, dtype=np.int64)
    return [
        ClassTask(classes=tuple(int(c) for c in rng.choice(arr, size=n_way, replace=False)))
        for _ in range(count)
    ]


class PlannedClassTasks:
    """A task source that hands out a pre-drawn (public) plan of class tasks, in order.

    Args:
        plan: The tasks.
    """

    def __init__(self, *, plan: Sequence[ClassTask]) -> None:
        self._plan = list(plan)
        self._next = 0

    def sample(self, *, rng: np.random.Generator) -> ClassTask:
        """The next planned task (``rng`` is not used: the plan was drawn from it).

        Raises:
            DPEngineError: If the plan is exhausted (the accounting covered only the planned tasks).
        """
        del rng
        if self._next >= len(self._plan):
            raise DPEngineError(f"the round's {len(self._plan)} planned tasks are exhausted")
        task = self._plan[self._next]
        self._next += 1
        return task

    @property
    def drawn(self) -> list[ClassTask]:
        """The tasks handed out so far, in order."""
        return self._plan[: self._next]


class PoissonClassTrainer:
    """Reptile's inner trainer under record-level DP (a :class:`secfed.learners.reptile.InnerTrainer`).

    Each inner step Poisson-samples the site's records (keyed coins, rate ``q``,
    :class:`PoissonRecordBatches`), keeps those of the
    task's classes (relabelled to their position in the task) and takes a per-record DP-SGD step
    (:class:`RecordDPEngineFactory`) through the shared record loop
    (:func:`secfed.learners.engine.run_record_steps`). Each record's inclusion probability is ``q``
    or 0, independent of the other records.

    Args:
        x: The site's inputs.
        y: The site's labels.
        sample_rate: ``q``.
        record_ids: Stable record ids.
        engine: The per-record DP engine factory.
    """

    def __init__(
        self,
        *,
        x: torch.Tensor,
        y: torch.Tensor,
        sample_rate: float,
        record_ids: np.ndarray,
        engine: RecordDPEngineFactory,
    ) -> None:
        self._labels_dtype = y.dtype
        self._records = PoissonRecordBatches(x=x, y=y, sample_rate=sample_rate, record_ids=record_ids)
        self._engine = engine

    def __call__(
        self, *, model: nn.Module, task: Any, steps: int, lr: float, optimizer: str, rng: np.random.Generator
    ) -> tuple[StepStats, int]:
        """Train ``model`` for ``steps`` DP-SGD steps on the task's classes.

        Raises:
            DPEngineError: If ``task`` is not a :class:`ClassTask`.
        """
        del rng
        if not isinstance(task, ClassTask):
            raise DPEngineError(f"DP Reptile trains on ClassTask tasks, got {type(task).__name__}")
        class_t = torch.as_tensor(task.classes, dtype=self._labels_dtype)

        def draw(step: int) -> RecordBatch:
            xb, yb = self._records.draw()
            match = yb.reshape(-1, 1) == class_t.reshape(1, -1)
            keep = match.any(dim=1)
            return RecordBatch(x=xb[keep], y=match[keep].to(torch.long).argmax(dim=1), n_way=task.n_way)

        engine = self._engine(model=model, params=trainable_params(model), optimizer=optimizer, lr=lr)
        try:
            stats = run_record_steps(engine=engine, draw=draw, steps=steps, loss_fn=cross_entropy_records)
        finally:
            engine.finish()
        return stats, 0
