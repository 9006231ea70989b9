"""Record-level DP as hooks into the learners' own loops: DP engines, private unit sources, accounting.

A learner's local loop is written once (:mod:`secfed.learners`) and forms each step's update
through a gradient engine (:mod:`secfed.learners.engine`). This module supplies, for record-level
DP (privacy unit: one record; adjacency: add/remove one record):

* **DP gradient engines** — per-unit gradients, each clipped to ``C``, summed, Gaussian noise
  added, divided by a **public** normaliser (never a data-dependent count: Opacus #571, #819):

  - :class:`EpisodeDPEngineFactory` for ProtoNet, MAML and FOMAML: a unit is one episode, its
    gradient is the full meta-gradient of the learner's own episode loss (``torch.func``, second
    order for MAML), the noise is ``N(0, (2zC)^2 I)`` (sensitivity ``2C``: removing a record changes
    only its own episode; :mod:`privacy.episodic`) and the normaliser is the public
    number of slots per step, ``privacy.episodes_per_step`` (:func:`step_normaliser`) — so a step's
    update is the mean clipped episode gradient when every slot is used, as in the non-private
    learner's mean over its ``meta_batch`` tasks. (It used to be ``privacy.expected_batch``, 8×
    too small a step with the defaults 32 and 4.) Engine: :class:`privacy.episodic.EpisodicDPSGD`.
  - :class:`RecordDPEngineFactory` for FedAvg's local steps and Reptile's inner steps: a unit is one
    record (the loss is a sum of per-record losses), noise ``N(0, (zC)^2 I)``, normaliser
    ``privacy.expected_batch`` (Abadi et al. 2016). Engine: :class:`privacy.dpsgd.PerSampleDPSGD`.

* **Private unit sources** — the records a step sees are Poisson-sampled with keyed
  cryptographic coins per stable record id: :class:`PrivateEpisodes`
  (:class:`privacy.sampling.RecordEpisodeSampler`: public slots, per-record keyed slot and role),
  :class:`PoissonRecordBatches` (FedAvg), and :class:`PoissonClassTrainer` (Reptile: tasks are
  public class sets, :class:`PlannedClassTasks`, and each inner step Poisson-samples the site's
  records of those classes).

* **Class-aware accounting** (:class:`ClassStepCounts`), below.

* :func:`release_step` — the normalised noisy sum of one DP step from per-unit gradients, through
  the engines' own DP optimiser; the attack replays (:mod:`attacks.secfed_observe`) use it.

Class-aware accounting
----------------------
A step of the episodic learners has a public slot plan (``episodes_per_step`` slots of ``n_way``
classes, :func:`privacy.sampling.draw_slots`, from a public seed and the public class list), and a
Reptile inner step a public task class set (``n_way`` classes drawn from the public class list with
the runtime's public generator). A record of class ``c`` can join a step only if ``c`` is in that
step's plan: otherwise it is in no episode (the sampler gives it no slot) or filtered out of the
batch, and the step's output distribution does not depend on it at all. Because the plans are
public and fixed independently of the data, the steps containing ``c`` are fixed in advance, and
for a record of class ``c`` the training is the adaptive composition of the Poisson-subsampled
Gaussian mechanism ``(z, q)`` over the ``N_c`` steps whose plan contains ``c``, and of mechanisms that
do not read it (ε = 0) over the others. Every step has the same ``(z, q)``, so the site's ε is that
of ``max_c N_c`` steps, the maximum over its public classes. The site reports, per round, the
increase of that maximum (so the server's sum over rounds equals the maximum), composes the same
increase into its own accountant and writes it to its ledger. After a restart the per-class counts
are gone; the site then takes every class's count to be the replayed total (an upper bound on each
``N_c``), which keeps the bound sound. This is sound only because the plans do not depend on the
data: a class list read from the shard, or a plan chosen after looking at the records, would void
it. Example: 190 classes, 5-way, 4 slots, ``T = 1000``, ``q = 0.05``, ``z = 1``, ``δ = 1e-5`` (RDP):
``max_c N_c ≈ 125`` and ε ≈ 4.4 against 11.98 when every step is counted. FedAvg reads every
record in every step: no class-aware saving.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from privacy.clipping import CryptoNoiseDPOptimizer
from privacy.dpsgd import PerSampleDPSGD, SecurePoissonSampler, StepAccountant
from privacy.episodic import EpisodicDPSGD
from privacy.noise import NoiseSource
from privacy.sampling import EpisodeIndices, RecordEpisodeSampler
from secfed.config import ExperimentConfig
from secfed.errors import ConfigError, SecfedError
from secfed.learners import episodic_learner_names
from secfed.learners.common import trainable_params
from secfed.learners.engine import (
    EpisodeLossFn,
    RecordBatch,
    RecordLossFn,
    StepStats,
    cross_entropy_records,
    run_record_steps,
)
from secfed.tasks.augment import shift_records, shift_task  # shift_records: still importable here
from secfed.tasks.base import Task

__all__ = [
    "EPISODIC_LEARNERS",
    "AugmentedEpisode",
    "AugmultEpisodeDPEngineFactory",
    "ClassStepCounts",
    "ClassTask",
    "DPEngineError",
    "EpisodeDPEngineFactory",
    "PlannedClassTasks",
    "PoissonClassTrainer",
    "PoissonRecordBatches",
    "PrivateEpisodes",
    "RecordDPEngineFactory",
    "StepCounter",
    "draw_class_tasks",
    "augment_episode",
    "augmult_loss",
    "episode_task",
    "release_step",
    "shift_records",
    "step_noise_multiplier",
    "step_normaliser",
]

#: Learners trained with per-episode clipping (those whose class declares ``episodic``).
EPISODIC_LEARNERS = episodic_learner_names()


# --------------------------------------------------------------------------------------------------
# Public constants of a DP step
# --------------------------------------------------------------------------------------------------
def step_normaliser(*, config: ExperimentConfig) -> int:
    """The public constant a record-level DP step divides its noisy sum by.

    Args:
        config: The experiment configuration.

    Returns:
        ``privacy.episodes_per_step`` (the slots of a step) for ProtoNet, MAML and FOMAML;
        ``privacy.expected_batch`` for Reptile and FedAvg.
    """
    p = config.privacy
    return int(p.episodes_per_step if config.learner.name in EPISODIC_LEARNERS else p.expected_batch)


def step_noise_multiplier(*, config: ExperimentConfig) -> float:
    """Noise std of a step's clipped sum divided by ``C``: ``2z`` (per episode) or ``z`` (per record).

    Args:
        config: The experiment configuration.

    Returns:
        The multiplier.
    """
    z = float(config.privacy.noise_multiplier)
    return 2.0 * z if config.learner.name in EPISODIC_LEARNERS else z


class DPEngineError(SecfedError, RuntimeError):
    """A DP engine or unit source was used in a way that would void the accounting."""


# --------------------------------------------------------------------------------------------------
# Accounting helpers
# --------------------------------------------------------------------------------------------------
class StepCounter:
    """The accountant handed to the DP engines: counts their steps (the site composes them itself).

    Args:
        noise_multiplier: The configured ``z``.
        sample_rate: The configured ``q``.

    Raises:
        DPEngineError: (on :meth:`step`) if an engine reports another ``(z, q)``.
    """

    def __init__(self, *, noise_multiplier: float, sample_rate: float) -> None:
        self._z = float(noise_multiplier)
        self._q = float(sample_rate)
        self.steps = 0

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        """Count one step with ``(z, q)``."""
        if float(noise_multiplier) != self._z or float(sample_rate) != self._q:
            raise DPEngineError(
                f"an engine stepped with (z, q) = ({noise_multiplier}, {sample_rate}), "
                f"configured ({self._z}, {self._q})"
            )
        self.steps += 1


@dataclass
class ClassStepCounts:
    """Per public class, the DP steps whose public plan contained it (see the module docstring).

    Attributes:
        classes: The site's public class list.
        base: Steps every class is assumed to have taken already (after a restart: the replayed
            total, an upper bound on each class's count).
        counts: Steps counted since, per class.
    """

    classes: tuple[int, ...]
    base: int = 0
    counts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError("the public class list must be non-empty and distinct")
        if self.base < 0:
            raise ConfigError(f"base must be >= 0, got {self.base}")
        for c in self.classes:
            self.counts.setdefault(int(c), 0)

    @property
    def worst(self) -> int:
        """``max_c N_c``: the step count the site's ε is composed over."""
        return self.base + max(self.counts.values())

    def _after(self, plans: Iterable[Iterable[int]]) -> dict[int, int]:
        counts = dict(self.counts)
        for plan in plans:
            for c in {int(c) for c in plan}:
                if c not in counts:
                    raise DPEngineError(f"a step plan contains class {c}, not a public class of the site")
                counts[c] += 1
        return counts

    def increment(self, plans: Iterable[Iterable[int]]) -> int:
        """How much :attr:`worst` would grow if the steps with these class plans were taken.

        Args:
            plans: One iterable of class ids per step.

        Returns:
            The increase of the worst class's count (0 if no step touches a worst class).
        """
        return self.base + max(self._after(plans).values()) - self.worst

    def record(self, plans: Iterable[Iterable[int]]) -> int:
        """Count the steps with these class plans.

        Args:
            plans: One iterable of class ids per step.

        Returns:
            The increase of :attr:`worst`.
        """
        before = self.worst
        self.counts = self._after(plans)
        return self.worst - before


# --------------------------------------------------------------------------------------------------
# Episodic learners: episodes, the private source, the engine
# --------------------------------------------------------------------------------------------------
def episode_task(*, x: torch.Tensor, episode: EpisodeIndices) -> Task | None:
    """Materialise one sampled episode as a :class:`~secfed.tasks.base.Task` (or ``None``).

    Queries whose class has no support record are dropped, and the classes that have support
    records are relabelled ``0..k-1`` in slot order, so the task is valid for every learner
    (each class has a prototype / an adapted output). Both rules are functions of the episode's
    own content, so the per-episode sensitivity argument of :mod:`privacy.episodic` holds.

    Args:
        x: The site's inputs, shape ``(n, *input_shape)``.
        episode: One episode of a :class:`privacy.sampling.StepAssignment`.

    Returns:
        The task, or ``None`` when the episode has no support or no (usable) query record; such an
        episode contributes a zero gradient.
    """
    kept = episode.drop_queries_without_support()
    if not kept.usable:
        return None
    present = np.unique(kept.support_label)
    remap = np.full(kept.n_way, -1, dtype=np.int64)
    remap[present] = np.arange(present.size, dtype=np.int64)
    s_idx = torch.from_numpy(kept.support_index.astype(np.int64))
    q_idx = torch.from_numpy(kept.query_index.astype(np.int64))
    return Task(
        support_x=x[s_idx],
        support_y=torch.from_numpy(remap[kept.support_label]),
        query_x=x[q_idx],
        query_y=torch.from_numpy(remap[kept.query_label]),
        n_way=int(present.size),
    )


class PrivateEpisodes:
    """The episode source of record-level DP: one :class:`RecordEpisodeSampler` step per learner step.

    Implements :class:`secfed.learners.engine.EpisodeSource`; the learner's generator is not used
    (the slots come from the sampler's public seed, the records' coins from its secret key).

    Args:
        sampler: The site's sampler (its step counter persists across rounds).
        x: The site's inputs.
    """

    def __init__(self, *, sampler: RecordEpisodeSampler, x: torch.Tensor) -> None:
        self._sampler = sampler
        self._x = x
        #: Public class plan of every step drawn (for class-aware accounting).
        self.plans: list[frozenset[int]] = []

    def step_tasks(self, *, rng: np.random.Generator) -> list[Task]:
        """The next step's usable episodes as tasks (possibly none)."""
        del rng
        assignment = self._sampler.sample()
        self.plans.append(frozenset(int(c) for c in np.asarray(assignment.slots).ravel()))
        return [t for t in (episode_task(x=self._x, episode=e) for e in assignment.episodes) if t is not None]


@dataclass(frozen=True)
class EpisodeDPEngineFactory:
    """Builds :class:`privacy.episodic.EpisodicDPSGD` engines (per-episode clipping, notes §1).

    Attributes:
        noise_multiplier: ``z`` (noise std ``2zC`` on the sum of clipped episode gradients).
        max_grad_norm: ``C``.
        sample_rate: ``q`` (what the accountant is told per step).
        normaliser: Public divisor of the noisy sum (the site uses ``privacy.episodes_per_step``).
        accountant: Receives one ``step(z, q)`` per DP step.
        grad_mode: ``"loop"`` (episodes are tasks of different sizes) or ``"auto"``.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    normaliser: int
    accountant: StepAccountant
    grad_mode: str = "loop"

    def __call__(
        self, *, model: nn.Module, params: Mapping[str, nn.Parameter], optimizer: str, lr: float
    ) -> _EpisodeDPEngine:
        """Build the engine of one round; see :class:`secfed.learners.engine.EpisodeEngineFactory`."""
        engine = EpisodicDPSGD(
            model=model,
            noise_multiplier=float(self.noise_multiplier),
            max_grad_norm=float(self.max_grad_norm),
            sample_rate=float(self.sample_rate),
            expected_episodes=int(self.normaliser),
            lr=float(lr),
            accountant=self.accountant,
            params=dict(params),
            optimizer="adam" if optimizer == "adam" else "sgd",
            grad_mode="loop" if self.grad_mode == "loop" else "auto",
        )
        return _EpisodeDPEngine(engine=engine, params=dict(params))


def _drop_grad_samples(params: Iterable[nn.Parameter]) -> None:
    for p in params:
        for attr in ("grad_sample", "summed_grad"):
            if hasattr(p, attr):
                delattr(p, attr)


class _EpisodeDPEngine:
    """One round's per-episode DP engine (see :class:`EpisodeDPEngineFactory`); with ``augment``, each
    step's units are the augmented episodes (:class:`AugmultEpisodeDPEngineFactory`)."""

    def __init__(
        self,
        *,
        engine: EpisodicDPSGD,
        params: dict[str, nn.Parameter],
        augment: Callable[[Task], AugmentedEpisode] | None = None,
    ) -> None:
        self._engine = engine
        self._params = params
        self._augment = augment

    def augmented(self, augment: Callable[[Task], AugmentedEpisode]) -> _EpisodeDPEngine:
        """This engine with units ``augment(task)`` and their copies' mean loss (:func:`augmult_loss`)."""
        return _EpisodeDPEngine(engine=self._engine, params=self._params, augment=augment)

    def step(
        self,
        *,
        tasks: Sequence[Task],
        loss_fn: EpisodeLossFn,
        params: Mapping[str, nn.Parameter],
        buffers: Mapping[str, torch.Tensor],
    ) -> StepStats:
        """Clip every episode's meta-gradient, sum, add noise, divide, step (noise also without episodes)."""
        units: list[Any] = list(tasks)
        unit_loss: Any = loss_fn
        if self._augment is not None:
            units = [self._augment(t) for t in tasks]
            unit_loss = augmult_loss(loss_fn)

        def loss(prm: dict[str, torch.Tensor], buf: dict[str, torch.Tensor], task: Any) -> torch.Tensor:
            return unit_loss(prm, buf, task)[0]

        info = self._engine.step(episodes=units, loss_fn=loss, params=params, buffers=buffers)
        num = len(units)
        return StepStats(
            loss_sum=info["private/mean_loss"] * num if num else 0.0, units=num, predictions=0, steps=1
        )

    def finish(self) -> None:
        """Remove the per-episode gradients left on the parameters."""
        _drop_grad_samples(self._params.values())


# --------------------------------------------------------------------------------------------------
# Per-record learners: batches, the engine
# --------------------------------------------------------------------------------------------------
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
            optimizer="adam" if optimizer == "adam" else "sgd",
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

    def sample_batch(self, *, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One Poisson batch (possibly empty)."""
        del rng, batch_size
        index = torch.as_tensor(self._sampler.sample_indices(), dtype=torch.long)
        return self._x[index], self._y[index]


# --------------------------------------------------------------------------------------------------
# Reptile: public class tasks, Poisson inner steps
# --------------------------------------------------------------------------------------------------
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

    Each inner step Poisson-samples the site's records (keyed coins, rate ``q``), keeps those of the
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
        self._x, self._y = x, y
        self._sampler = SecurePoissonSampler(
            num_samples=int(x.shape[0]), sample_rate=float(sample_rate), record_ids=record_ids
        )
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
        class_t = torch.as_tensor(task.classes, dtype=self._y.dtype)

        def draw(step: int) -> RecordBatch:
            index = torch.as_tensor(self._sampler.sample_indices(), dtype=torch.long)
            xb, yb = self._x[index], self._y[index]
            match = yb.reshape(-1, 1) == class_t.reshape(1, -1)
            keep = match.any(dim=1)
            return RecordBatch(x=xb[keep], y=match[keep].to(torch.long).argmax(dim=1), n_way=task.n_way)

        engine = self._engine(model=model, params=trainable_params(model), optimizer=optimizer, lr=lr)
        try:
            stats = run_record_steps(engine=engine, draw=draw, steps=steps, loss_fn=cross_entropy_records)
        finally:
            engine.finish()
        return stats, 0


# --------------------------------------------------------------------------------------------------
# The release of one step from per-unit gradients (attack replays)
# --------------------------------------------------------------------------------------------------
def release_step(
    *,
    unit_grads: Sequence[Mapping[str, torch.Tensor]],
    max_grad_norm: float,
    noise_multiplier: float,
    normaliser: int,
    source: NoiseSource | None = None,
) -> dict[str, torch.Tensor]:
    """What one DP step applies, from its units' gradients: the engines' own DP optimiser.

    Runs :class:`privacy.clipping.CryptoNoiseDPOptimizer` — the optimiser inside
    :class:`privacy.episodic.EpisodicDPSGD` and (with a layout-aware clipping of the same
    arithmetic) :class:`privacy.dpsgd.PerSampleDPSGD` — on zero parameters with SGD at learning
    rate 1: each unit's gradient clipped to ``C``, summed, noise of std ``noise_multiplier * C``
    added, divided by ``normaliser``.

    Args:
        unit_grads: One gradient per unit (episode or record), tensors by parameter name.
        max_grad_norm: ``C``.
        noise_multiplier: Noise std divided by ``C`` (:func:`step_noise_multiplier`).
        normaliser: Public divisor (:func:`step_normaliser`).
        source: Noise source (default: a fresh :func:`privacy.noise.noise_source`).

    Returns:
        The normalised noisy sum, by parameter name.

    Raises:
        ConfigError: If there is no unit or the constants are invalid.
    """
    if not unit_grads:
        raise ConfigError("release_step needs at least one unit gradient")
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise ConfigError(f"max_grad_norm must be finite and > 0, got {max_grad_norm}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ConfigError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if isinstance(normaliser, bool) or not isinstance(normaliser, int) or normaliser < 1:
        raise ConfigError(f"normaliser must be a positive int, got {normaliser!r}")
    names = list(unit_grads[0])
    params = {k: nn.Parameter(torch.zeros_like(unit_grads[0][k].detach())) for k in names}
    optimizer = CryptoNoiseDPOptimizer(
        torch.optim.SGD(list(params.values()), lr=1.0),
        noise_multiplier=float(noise_multiplier),
        max_grad_norm=float(max_grad_norm),
        expected_batch_size=int(normaliser),
        loss_reduction="mean",
        noise_source=source,
    )
    for k, p in params.items():
        p.grad_sample = torch.stack([u[k].detach().to(p.dtype) for u in unit_grads])  # type: ignore[attr-defined]
    optimizer.step()
    out = {k: -p.detach() for k, p in params.items()}
    _drop_grad_samples(params.values())
    return out


# --------------------------------------------------------------------------------------------------
# Augmentation multiplicity for episodic units (De et al. 2022)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentedEpisode:
    """``K`` augmented copies of one privacy unit (an episode); one unit for clipping.

    Attributes:
        copies: The augmented copies, each a :class:`~secfed.tasks.base.Task` with the episode's
            records (same labels, independently augmented inputs).
    """

    copies: tuple[Task, ...]


def augment_episode(
    *, task: Task, multiplicity: int, max_shift: int, generator: torch.Generator
) -> AugmentedEpisode:
    """``multiplicity`` copies of one episode, every record of every copy independently augmented.

    Args:
        task: The episode.
        multiplicity: ``K >= 1``.
        max_shift: See :func:`shift_records`.
        generator: Augmentation randomness.

    Returns:
        The augmented unit.

    Raises:
        ConfigError: If ``multiplicity < 1``.
    """
    if multiplicity < 1:
        raise ConfigError(f"augmentation multiplicity must be >= 1, got {multiplicity}")
    return AugmentedEpisode(
        copies=tuple(
            shift_task(task=task, max_shift=max_shift, generator=generator) for _ in range(multiplicity)
        )
    )


def augmult_loss(loss_fn: EpisodeLossFn) -> Any:
    """The per-unit loss of an :class:`AugmentedEpisode`: the mean of ``loss_fn`` over its copies.

    The gradient of the mean is the mean of the copies' gradients, so the DP engine clips the
    average of the ``K`` augmented gradients of ONE unit (De et al. 2022, "Unlocking
    High-Accuracy Differentially Private Image Classification through Scale", § augmentation
    multiplicity). All copies are functions of the unit's own records: adding or removing a record
    still changes only its own unit, whose clipped gradient has norm ``<= C`` before and after, so
    the per-unit sensitivity (``2C`` for an episode under add/remove) is unchanged.

    Args:
        loss_fn: The learner's per-episode loss ``(params, buffers, task) -> (loss, logits)``.

    Returns:
        ``(params, buffers, unit) -> (mean loss, logits of the first copy)``.
    """

    def loss(
        params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], unit: AugmentedEpisode
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [loss_fn(params, buffers, t) for t in unit.copies]
        return torch.stack([o[0] for o in outs]).mean(), outs[0][1]

    return loss


@dataclass(frozen=True)
class AugmultEpisodeDPEngineFactory:
    """Per-episode DP-SGD with augmentation multiplicity: wraps an :class:`EpisodeDPEngineFactory`.

    Each step's episodes become :class:`AugmentedEpisode` units (``privacy.augmult`` copies with
    random shifts of up to ``max_shift`` pixels); the wrapped engine clips each unit's averaged
    gradient once, so its noise, normaliser and accounting are unchanged.

    Attributes:
        base: The per-episode DP engine factory.
        multiplicity: ``K``.
        max_shift: Largest random shift in pixels.
        seed: Seed of the augmentation randomness (tests); ``None`` draws one from ``os.urandom``
            per round. The guarantee holds for every fixed choice of augmentations: they are drawn
            independently of the data.
    """

    base: EpisodeDPEngineFactory
    multiplicity: int
    max_shift: int = 2
    seed: int | None = None

    def __call__(
        self, *, model: nn.Module, params: Mapping[str, nn.Parameter], optimizer: str, lr: float
    ) -> _EpisodeDPEngine:
        """Build the engine of one round; see :class:`secfed.learners.engine.EpisodeEngineFactory`."""
        generator = torch.Generator()
        seed = self.seed if self.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        generator.manual_seed(int(seed))
        k, shift = int(self.multiplicity), int(self.max_shift)
        base = self.base(model=model, params=params, optimizer=optimizer, lr=lr)
        return base.augmented(
            lambda t: augment_episode(task=t, multiplicity=k, max_shift=shift, generator=generator)
        )
