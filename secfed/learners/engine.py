"""How a learner's local step turns its units into a parameter update: the gradient-engine hook.

Every learner's local loop is written once, here in :mod:`secfed.learners`, and forms each step's
update through an *engine*: the learner chooses the step's units (episodes for ProtoNet, MAML and
FOMAML; a batch of records for FedAvg's local steps and Reptile's inner steps), gives the engine
its own loss of one unit, and the engine turns the units' losses into one optimiser step.

* The plain engines (:class:`MeanEpisodeEngine`, :class:`MeanRecordEngine`) are the learners'
  ordinary behaviour: back-propagate the mean of the units' losses and step the optimiser
  (Adam or SGD, fresh state per engine).
* Record-level differential privacy (:mod:`secfed.dp.engines`) supplies DP engines with the same
  interface: per-unit gradients, each clipped to ``C``, summed, Gaussian noise added, divided by a
  public normaliser (Abadi et al. 2016, "Deep Learning with Differential Privacy"; per-episode
  clipping for episodic losses, :mod:`privacy.episodic`), together with private unit
  sources (Poisson sampling). DP therefore never re-implements a learner's loop: the loop that
  trains without privacy is the loop that trains with it, and only the engine and the unit
  source differ.

Units:

* episode units are :class:`~secfed.tasks.base.Task` objects and the learner's loss of one unit
  is an :data:`EpisodeLossFn` (``torch.func``-compatible, so a DP engine can take per-episode
  gradients of it);
* record units are the rows of a :class:`RecordBatch`; the learner's loss is a
  :data:`RecordLossFn` that returns one loss per record (a sum of per-record losses is what makes
  per-record clipping valid).

FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar & Smith, "Federated Optimization in Heterogeneous
Networks", MLSys 2020) is the one hook that is not an engine: :func:`proximal_term` adds the
gradient ``mu (w - w_global)`` of the proximal term ``mu / 2 ||w - w_global||^2`` to every local
optimiser step on the model's parameters, whatever engine formed the rest of the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from secfed.errors import ConfigError, DataError
from secfed.learners.common import head_logits, make_optimizer
from secfed.tasks.base import Task, TaskSource

__all__ = [
    "EpisodeEngine",
    "EpisodeEngineFactory",
    "EpisodeLossFn",
    "EpisodeSource",
    "MeanEpisodeEngine",
    "MeanRecordEngine",
    "RecordBatch",
    "RecordEngine",
    "RecordEngineFactory",
    "RecordLossFn",
    "StepStats",
    "TaskSourceEpisodes",
    "cross_entropy_records",
    "proximal_term",
    "run_record_steps",
]

#: ``loss_fn(params, buffers, task) -> (loss, query_logits)``: one episode's meta-loss, differentiable
#: w.r.t. ``params`` with ``backward()`` and with ``torch.func.grad``.
EpisodeLossFn = Callable[
    [dict[str, torch.Tensor], dict[str, torch.Tensor], Task], tuple[torch.Tensor, torch.Tensor]
]
#: ``loss_fn(outputs, targets, n_way) -> (per-record losses (B,), logits (B, classes))``.
RecordLossFn = Callable[[torch.Tensor, torch.Tensor, "int | None"], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class StepStats:
    """Diagnostics of one or more engine steps (computed from the training data: private under DP).

    Attributes:
        loss_sum: Sum over units (episodes, or batches of records) of their mean loss.
        units: Number of units summed in ``loss_sum``.
        correct: Correct predictions counted (0 when the engine does not measure them).
        predictions: Predictions counted.
        steps: Optimiser steps taken.
    """

    loss_sum: float = 0.0
    units: int = 0
    correct: int = 0
    predictions: int = 0
    steps: int = 0

    def add(self, other: StepStats) -> None:
        """Accumulate ``other`` into this object."""
        self.loss_sum += other.loss_sum
        self.units += other.units
        self.correct += other.correct
        self.predictions += other.predictions
        self.steps += other.steps


@dataclass(frozen=True)
class RecordBatch:
    """One step's records.

    Attributes:
        x: Inputs ``(B, *input_shape)`` (``B`` may be 0 for a Poisson-sampled DP step).
        y: int64 labels ``(B,)``.
        n_way: Number of task classes (first ``n_way`` outputs are the logits), or ``None`` for
            global labels over the whole head.
    """

    x: torch.Tensor
    y: torch.Tensor
    n_way: int | None


class _RoundEngine(Protocol):
    """What every engine does at the end of a round."""

    def finish(self) -> None:
        """Release any per-round state (hooks, per-sample gradients)."""
        ...


_EngineT_co = TypeVar("_EngineT_co", covariant=True)


class _EngineFactory(Protocol[_EngineT_co]):
    """Builds the engine of one local round (optimiser state is fresh every round)."""

    def __call__(
        self, *, model: nn.Module, params: Mapping[str, nn.Parameter], optimizer: str, lr: float
    ) -> _EngineT_co:
        """Build the engine.

        Args:
            model: The model being trained.
            params: Its trainable parameters by name.
            optimizer: ``"adam"`` or ``"sgd"`` (the learner's ``local_optimizer``).
            lr: Learning rate (the learner's ``local_lr``).

        Returns:
            The engine.
        """
        ...


class EpisodeEngine(_RoundEngine, Protocol):
    """Forms and applies one step's update from its episodes."""

    def step(
        self,
        *,
        tasks: Sequence[Task],
        loss_fn: EpisodeLossFn,
        params: Mapping[str, nn.Parameter],
        buffers: Mapping[str, torch.Tensor],
    ) -> StepStats:
        """Take one optimiser step from the episodes' losses.

        Args:
            tasks: The step's episodes (possibly none for a DP step: noise only).
            loss_fn: The learner's loss of one episode.
            params: The trained parameters (the engine's optimiser updates them in place).
            buffers: The model's buffers.

        Returns:
            The step's diagnostics.
        """
        ...


class EpisodeEngineFactory(_EngineFactory[EpisodeEngine], Protocol):
    """Builds the engine of one local round (optimiser state is fresh every round)."""


class RecordEngine(_RoundEngine, Protocol):
    """Forms and applies one step's update from a batch of records."""

    def step(self, *, batches: Sequence[RecordBatch], loss_fn: RecordLossFn) -> StepStats:
        """Take one optimiser step.

        Args:
            batches: The step's record batches (DP engines accept exactly one).
            loss_fn: The learner's per-record loss.

        Returns:
            The step's diagnostics.
        """
        ...


class RecordEngineFactory(_EngineFactory[RecordEngine], Protocol):
    """Builds a record engine around ``model`` (fresh optimiser state); see :class:`EpisodeEngineFactory`."""


class EpisodeSource(Protocol):
    """Where an episodic learner's steps get their episodes."""

    def step_tasks(self, *, rng: np.random.Generator) -> list[Task]:
        """The next step's episodes.

        Args:
            rng: The learner's generator (public randomness; a private source may ignore it).

        Returns:
            The episodes.
        """
        ...


@dataclass(frozen=True)
class TaskSourceEpisodes:
    """The default episode source: ``meta_batch`` tasks drawn from a :class:`TaskSource`.

    Attributes:
        tasks: The site's task source.
        meta_batch: Tasks per step.
    """

    tasks: TaskSource
    meta_batch: int

    def step_tasks(self, *, rng: np.random.Generator) -> list[Task]:
        """``meta_batch`` tasks, drawn in order with ``rng``."""
        return [self.tasks.sample(rng=rng) for _ in range(self.meta_batch)]


def _count_correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits.detach().argmax(dim=-1) == y).sum().item())


_Unit = TypeVar("_Unit")


def _mean_loss_step(
    *,
    optimizer: torch.optim.Optimizer,
    units: Sequence[_Unit],
    loss_of: Callable[[_Unit], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> StepStats:
    """Back-propagate the mean over ``units`` of their losses, one unit's graph alive at a time, then
    take one optimiser step.

    Args:
        optimizer: The engine's optimiser (its gradients are zeroed first).
        units: The step's episodes or record batches.
        loss_of: ``unit -> (mean loss, logits, targets)``.

    Returns:
        The step's diagnostics (loss, correct predictions, one step).
    """
    stats = StepStats()
    optimizer.zero_grad(set_to_none=True)
    for unit in units:
        loss, logits, targets = loss_of(unit)
        (loss / len(units)).backward()
        stats.loss_sum += float(loss.detach().item())
        stats.units += 1
        stats.correct += _count_correct(logits, targets)
        stats.predictions += int(targets.shape[0])
    optimizer.step()
    stats.steps = 1
    return stats


class MeanEpisodeEngine:
    """The plain episodic step: back-propagate the mean of the episodes' meta-losses.

    One backward pass per episode (only one episode's graph is alive at a time), then one step of
    the optimiser. A step without episodes takes no optimiser step.

    Args:
        model: The model (unused; part of the factory signature).
        params: Trainable parameters.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: Learning rate.
    """

    def __init__(
        self, *, model: nn.Module, params: Mapping[str, nn.Parameter], optimizer: str, lr: float
    ) -> None:
        del model
        self._optimizer = make_optimizer(name=optimizer, params=params.values(), lr=lr)

    def step(
        self,
        *,
        tasks: Sequence[Task],
        loss_fn: EpisodeLossFn,
        params: Mapping[str, nn.Parameter],
        buffers: Mapping[str, torch.Tensor],
    ) -> StepStats:
        """See :meth:`EpisodeEngine.step`."""
        if not tasks:
            return StepStats()

        def task_loss(task: Task) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            loss, logits = loss_fn(dict(params), dict(buffers), task)
            return loss, logits, task.query_y

        return _mean_loss_step(optimizer=self._optimizer, units=tasks, loss_of=task_loss)

    def finish(self) -> None:
        """Nothing to release."""


def cross_entropy_records(
    outputs: torch.Tensor, targets: torch.Tensor, n_way: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-record cross-entropy over the first ``n_way`` outputs (all outputs when ``None``).

    Args:
        outputs: Model outputs ``(B, num_outputs)``.
        targets: int64 labels ``(B,)``.
        n_way: Task classes, or ``None`` for global labels.

    Returns:
        ``(losses (B,), logits)``.
    """
    logits = outputs if n_way is None else head_logits(outputs=outputs, n_way=n_way)
    return F.cross_entropy(logits, targets, reduction="none"), logits


class MeanRecordEngine:
    """The plain record step: back-propagate the mean over batches of each batch's mean loss.

    Args:
        model: The model whose forward pass computes the outputs.
        params: Trainable parameters.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: Learning rate.
    """

    def __init__(
        self, *, model: nn.Module, params: Mapping[str, nn.Parameter], optimizer: str, lr: float
    ) -> None:
        self._model = model
        self._optimizer = make_optimizer(name=optimizer, params=params.values(), lr=lr)

    def step(self, *, batches: Sequence[RecordBatch], loss_fn: RecordLossFn) -> StepStats:
        """See :meth:`RecordEngine.step`.

        Raises:
            DataError: If a batch has no records.
        """

        def batch_loss(batch: RecordBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if batch.y.shape[0] == 0:
                raise DataError("a training batch has no records")
            losses, logits = loss_fn(self._model(batch.x), batch.y, batch.n_way)
            return losses.mean(), logits, batch.y

        return _mean_loss_step(optimizer=self._optimizer, units=batches, loss_of=batch_loss)

    def finish(self) -> None:
        """Nothing to release."""


def run_record_steps(
    *, engine: RecordEngine, draw: Callable[[int], RecordBatch], steps: int, loss_fn: RecordLossFn
) -> StepStats:
    """The record-level training loop: ``steps`` engine steps, one drawn batch each.

    Reptile's inner loop (:func:`secfed.learners.reptile.fine_tune`, with or without DP) runs
    through here.

    Args:
        engine: The engine.
        draw: ``draw(step) -> batch``.
        steps: Number of steps.
        loss_fn: Per-record loss.

    Returns:
        The accumulated diagnostics.
    """
    total = StepStats()
    for step in range(steps):
        total.add(engine.step(batches=[draw(step)], loss_fn=loss_fn))
    return total


@contextmanager
def proximal_term(*, params: Mapping[str, nn.Parameter], mu: float) -> Iterator[None]:
    """FedProx: add ``mu (w - w_global)`` to the gradient of every optimiser step on ``params``.

    FedProx (Li et al., MLSys 2020, Algorithm 2) minimises ``h(w) = F(w) + mu/2 ||w - w_global||^2``
    locally, where ``F`` is the learner's own local objective and ``w_global`` the parameters
    received from the server. Inside this block, each step of any torch optimiser that updates one
    of ``params`` first adds ``mu (w - w_global)`` (``w_global`` = the values of ``params`` on
    entry) to their ``.grad``, so the step is the optimiser's step on ``h``: exact FedProx for SGD
    and Adam alike, and for every engine (the learners' plain engines and the record-level DP
    engines of :mod:`secfed.dp.engines`) without any engine knowing about it.

    Implemented with a torch global optimizer step pre-hook, removed on exit, that acts only on
    the parameter objects in ``params`` (a copy of the model, e.g. Reptile's inner-loop copy or
    another site's model in the same process, is untouched) and skips optimizer wrappers that
    delegate to an inner optimiser (Opacus' ``DPOptimizer``: its inner optimiser's step is hooked).

    Under record-level DP the hook runs after clip-and-noise (the wrapper writes the noisy,
    normalised gradient into ``.grad`` and then steps its inner optimiser), and
    ``mu (w - w_global)`` is a function of the current parameters and the global model alone, both
    already released or public: adding it is post-processing and costs no privacy.

    With ``mu = 0`` nothing is registered: the update is bit-for-bit the plain learner's.

    Args:
        params: The trained parameters by name (the model's, loaded with the global values).
        mu: The proximal coefficient (>= 0, finite).

    Yields:
        Nothing; the hook is active inside the block.

    Raises:
        ConfigError: If ``mu`` is negative or not finite.
    """
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu) or mu < 0:
        raise ConfigError(f"proximal_mu must be a finite number >= 0, got {mu!r}")
    if mu == 0:
        yield
        return
    tracked = {id(p): (p, p.detach().clone()) for p in params.values()}
    coeff = float(mu)

    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        del args, kwargs
        if hasattr(optimizer, "original_optimizer"):
            return  # a DP wrapper: its inner optimiser's step runs this hook after the noise
        for group in optimizer.param_groups:
            for p in group["params"]:
                entry = tracked.get(id(p))
                if entry is None or entry[0] is not p:
                    continue
                prox = coeff * (p.detach() - entry[1])
                p.grad = prox if p.grad is None else p.grad + prox

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
